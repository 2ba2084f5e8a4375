package inventory

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

// Event reasons and condition reasons of the inventory.
const (
	ReasonCopying         = "Copying"
	ReasonCopied          = "Copied"
	ReasonFound           = "Found"
	ReasonCopyFailed      = "CopyFailed"
	ReasonIntact          = "Intact"
	ReasonVerifyFailed    = "VerificationFailed"
	ReasonBackupLost      = "BackupLost"
	ReasonRestoring       = "Restoring"
	ReasonRestored        = "Restored"
	ReasonRestoreFailed   = "RestoreFailed"
	ReasonUnrecoverable   = "Unrecoverable"
	ReasonMoved           = "TagMoved"
	ReasonRetentionDryRun = "RetentionDryRun"
	ReasonRetired         = "Retired"
	ReasonRetentionKept   = "RetentionKept"
	ReasonDeleteRefused   = "DeleteRefused"
)

// maxPreviousDigests bounds status.previousDigests.
const maxPreviousDigests = 10

// create makes the ImageBackup of a copy the copier reported first.
func (k *Keeper) create(ctx context.Context, key string, o registry.Observation) (*v1alpha1.ImageBackup, error) {
	ib := &v1alpha1.ImageBackup{
		ObjectMeta: metav1.ObjectMeta{Name: key},
		Spec:       v1alpha1.ImageBackupSpec{Source: o.Source.String(), Backup: o.Target.String()},
	}
	if err := k.client.Create(ctx, ib); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating the ImageBackup of %s: %w", o.Target, err)
		}
		// Created by an earlier reconcile that the cache has not caught up with.
		if err := k.api.Get(ctx, client.ObjectKeyFromObject(ib), ib); err != nil {
			return nil, fmt.Errorf("reading the ImageBackup of %s: %w", o.Target, err)
		}
		return ib, nil
	}
	ctrl.LoggerFrom(ctx).Info("Recording a backup", "image", ib.Spec.Source, "backup", ib.Spec.Backup)
	return ib, nil
}

// record brings the status in line with what the copier reported.
func (w *work) record(o registry.Observation) {
	st := &w.ib.Status
	digest := o.Digest.String()
	switch o.State {
	case registry.Copying:
		if st.Phase == "" || st.Phase == v1alpha1.PhaseFailed {
			st.Phase = v1alpha1.PhaseCopying
			w.setDigest(digest)
			w.condition(v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonCopying, "Copying "+w.ib.Spec.Source+" into the backup registry")
		}
	case registry.Copied:
		w.setDigest(digest)
		if o.Details != nil {
			w.setDetails(*o.Details)
			st.LastDeepVerified = w.time()
		}
		st.LastCopied, st.LastVerified = w.time(), w.time()
		w.ready(ReasonCopied, "Copied and verified complete at "+digest)
	case registry.Present:
		switch {
		case st.Digest != digest:
			w.setDigest(digest) // no details: the next verification is a full one, which reads them
			st.LastVerified = w.time()
			w.ready(ReasonFound, "The backup registry holds the copy at "+digest)
		case st.Phase != v1alpha1.PhaseReady:
			// The copy is back (restored by a Copy of the workload reconciler, or pushed by someone).
			st.LastVerified = w.time()
			w.ready(ReasonFound, "The backup registry holds the copy at "+digest)
		}
	case registry.Failed:
		if st.Phase == "" || st.Phase == v1alpha1.PhaseCopying || st.Phase == v1alpha1.PhaseFailed {
			st.Phase = v1alpha1.PhaseFailed
			msg := o.Err.Error()
			if explain := registry.Explain(o.Err); explain != "" {
				msg += ": " + explain
			}
			w.condition(v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonCopyFailed, msg)
		}
		// A copy that stands is not undone by a failed copy of what its source tag points to now.
	}
}

// setDigest makes digest the copy's digest, remembering the one it replaces; details of another digest are
// dropped, and the next verification is a full one.
func (w *work) setDigest(digest string) {
	st := &w.ib.Status
	if digest == "" || digest == (registry.Observation{}).Digest.String() || st.Digest == digest {
		return
	}
	if st.Digest != "" {
		st.PreviousDigests = append([]string{st.Digest}, st.PreviousDigests...)
		if len(st.PreviousDigests) > maxPreviousDigests {
			st.PreviousDigests = st.PreviousDigests[:maxPreviousDigests]
		}
		st.MediaType, st.Platforms, st.Size, st.DisplaySize, st.LastDeepVerified = "", nil, 0, "", nil
	}
	st.Digest = digest
	st.ShortDigest = shortDigest(digest)
}

func (w *work) setDetails(d registry.Details) {
	st := &w.ib.Status
	st.MediaType = string(d.MediaType)
	st.Platforms = d.Platforms
	st.Size = d.Size
	st.DisplaySize = displaySize(d.Size)
}

// ready marks the copy Ready and verified.
func (w *work) ready(reason, msg string) {
	w.ib.Status.Phase = v1alpha1.PhaseReady
	w.condition(v1alpha1.ConditionReady, metav1.ConditionTrue, reason, msg)
	w.condition(v1alpha1.ConditionVerified, metav1.ConditionTrue, reason, msg)
}

func (w *work) condition(typ string, status metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&w.ib.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: w.ib.Generation,
	})
}

func (w *work) time() *metav1.Time { return &metav1.Time{Time: w.now} }

// conflictRetry is how soon a status write that lost to a newer version of the object is made again.
const conflictRetry = time.Second

// writeStatus writes the status if the reconcile changed it. It returns how long until it should be written
// instead when it is not written now: a change of status.usedBy alone waits until UsageWriteInterval has passed
// since the last write, and a write that conflicts (the cache had not caught up with the last one) is made
// again shortly.
func (k *Keeper) writeStatus(ctx context.Context, w *work) (time.Duration, error) {
	if equality.Semantic.DeepEqual(w.before, &w.ib.Status) {
		return 0, nil
	}
	if usageOnly(w.before, &w.ib.Status) {
		if last, ok := k.written.Load(w.ib.Name); ok {
			if wait := k.opts.UsageWriteInterval - time.Since(last.(time.Time)); wait > 0 {
				return wait, nil
			}
		}
	}
	if err := k.client.Status().Update(ctx, w.ib); err != nil {
		if apierrors.IsConflict(err) {
			ctrl.LoggerFrom(ctx).V(1).Info("The ImageBackup changed since it was read; writing its status again", "backup", w.ib.Spec.Backup)
			return conflictRetry, nil
		}
		return 0, fmt.Errorf("writing the status of ImageBackup %s: %w", w.ib.Name, err)
	}
	k.written.Store(w.ib.Name, time.Now())
	w.before = w.ib.Status.DeepCopy()
	return 0, nil
}

// usageOnly reports whether after differs from before in status.usedBy alone: the same things need the copy
// (or nothing does, since the same time), only how many or which.
func usageOnly(before, after *v1alpha1.ImageBackupStatus) bool {
	same := after.DeepCopy()
	same.UsedBy = before.UsedBy
	return equality.Semantic.DeepEqual(before, same)
}

// deleteObject deletes the ImageBackup of w, as the reconcile read it: if it changed since (the cache lagged
// behind a status this keeper wrote, or a new copy was recorded), the delete fails and the next reconcile
// decides again.
func (k *Keeper) deleteObject(ctx context.Context, w *work, why string) error {
	pre := client.Preconditions{UID: &w.ib.UID, ResourceVersion: &w.ib.ResourceVersion}
	if err := client.IgnoreNotFound(k.client.Delete(ctx, w.ib, pre)); err != nil {
		return fmt.Errorf("deleting ImageBackup %s: %w", w.ib.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Deleted the ImageBackup", "backup", w.ib.Spec.Backup, "reason", why)
	w.retired = true
	return nil
}

// shortDigest returns the first 12 hexadecimal digits of a digest.
func shortDigest(digest string) string {
	_, hex, ok := strings.Cut(digest, ":")
	if !ok || len(hex) < 12 {
		return digest
	}
	return hex[:12]
}

// displaySize renders n bytes in binary units with one decimal, e.g. "68.9MiB".
func displaySize(n int64) string {
	v, unit := registry.BinaryUnits(n)
	if unit == "B" {
		return strconv.FormatInt(n, 10) + "B"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + unit
}
