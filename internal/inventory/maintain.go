package inventory

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

// verify checks the copy of w in the backup registry: its tag, with one HEAD, and with deep every manifest and
// blob at the recorded digest. It returns why the copy is lost, or "" when it is intact; an error when the
// registry could not be asked. A tag found at another digest was moved by a copy of a moving source tag (or
// by someone who pushed it): that copy is the one pods pull now, so it is recorded, and verified fully.
func (k *Keeper) verify(ctx context.Context, w *work, deep bool) (string, error) {
	log := ctrl.LoggerFrom(ctx)
	st := &w.ib.Status
	got, err := k.registry.Check(ctx, w.target)
	switch {
	case errors.Is(err, registry.ErrNotBackedUp):
		verifications.WithLabelValues("shallow", "lost").Inc()
		return "the backup registry no longer has " + w.ib.Spec.Backup, nil
	case err != nil:
		verifications.WithLabelValues("shallow", "error").Inc()
		w.condition(v1alpha1.ConditionVerified, metav1.ConditionUnknown, ReasonVerifyFailed, "Cannot check the backup registry: "+err.Error())
		return "", fmt.Errorf("checking %s: %w", w.ib.Spec.Backup, err)
	case got.String() != st.Digest:
		verifications.WithLabelValues("shallow", "moved").Inc()
		log.Info("Backup tag points to another digest; recording it", "backup", w.ib.Spec.Backup, "digest", got.String(), "previous", st.Digest)
		k.event(w.ib, corev1.EventTypeNormal, ReasonMoved, fmt.Sprintf("The backup tag now points to %s (was %s); pods pull that copy", got, st.Digest))
		w.setDigest(got.String())
		deep = true
	default:
		verifications.WithLabelValues("shallow", "intact").Inc()
	}
	if deep {
		details, err := k.registry.Verify(ctx, w.target, w.digest())
		switch {
		case errors.Is(err, registry.ErrNotBackedUp):
			verifications.WithLabelValues("deep", "lost").Inc()
			return "the copy in the backup registry is incomplete: " + err.Error(), nil
		case err != nil:
			verifications.WithLabelValues("deep", "error").Inc()
			w.condition(v1alpha1.ConditionVerified, metav1.ConditionUnknown, ReasonVerifyFailed, "Cannot verify the copy: "+err.Error())
			return "", fmt.Errorf("verifying %s: %w", w.ib.Spec.Backup, err)
		}
		verifications.WithLabelValues("deep", "intact").Inc()
		w.setDetails(details)
		st.LastDeepVerified = w.time()
	}
	st.LastVerified = w.time()
	how := "The backup registry holds the tag at the recorded digest"
	if deep {
		how = "Every manifest and blob of the copy is in the backup registry"
	}
	w.ready(ReasonIntact, how)
	log.V(1).Info("Verified backup", "backup", w.ib.Spec.Backup, "digest", st.Digest, "deep", deep)
	return "", nil
}

// restore copies a lost copy again from its source at the recorded digest. lost says why it is lost ("" when
// the phase already says so: a restore that failed, or one cut short by a restart).
func (k *Keeper) restore(ctx context.Context, w *work, lost string) (reconcile.Result, error) {
	log := ctrl.LoggerFrom(ctx).WithValues("image", w.ib.Spec.Source, "backup", w.ib.Spec.Backup, "digest", w.ib.Status.Digest)
	st := &w.ib.Status
	if st.Digest == "" {
		return reconcile.Result{}, nil // never copied: the workload reconciler makes the first copy
	}
	src, err := w.source()
	if err != nil {
		return reconcile.Result{}, reconcile.TerminalError(err)
	}
	if lost != "" {
		wasUnrecoverable := st.Phase == v1alpha1.PhaseUnrecoverable
		st.Phase = v1alpha1.PhaseRestoring
		msg := fmt.Sprintf("Copy lost (%s); restoring it from %s at %s", lost, w.ib.Spec.Source, st.Digest)
		w.condition(v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonRestoring, msg)
		w.condition(v1alpha1.ConditionVerified, metav1.ConditionFalse, ReasonBackupLost, lost)
		if !wasUnrecoverable {
			log.Info("Backup lost; restoring it", "reason", lost)
			k.event(w.ib, corev1.EventTypeWarning, ReasonBackupLost, msg)
			k.eventOnUsers(w, corev1.EventTypeWarning, ReasonBackupLost, fmt.Sprintf("The backup %s of %s was lost (%s); restoring it at %s",
				w.ib.Spec.Backup, w.ib.Spec.Source, lost, st.Digest))
		}
		// Restoring shows while the copy runs.
		if later, err := k.writeStatus(ctx, w); err != nil || later > 0 {
			return reconcile.Result{RequeueAfter: later}, err
		}
	}
	done, err := k.registry.Restore(ctx, registry.RestoreRequest{
		Source: src, Target: w.target, Digest: w.digest(), Credentials: k.restoreCredentials(w),
	})
	if err != nil && registry.ClassOf(err) != registry.Incomplete {
		if errors.Is(err, registry.ErrSourceLost) {
			restores.WithLabelValues("unrecoverable").Inc()
			k.unrecoverable(ctx, w, err)
			return reconcile.Result{RequeueAfter: k.opts.VerifyInterval}, nil
		}
		restores.WithLabelValues("failed").Inc()
		st.Phase = v1alpha1.PhaseLost
		w.condition(v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonRestoreFailed, "Cannot restore the copy yet: "+err.Error())
		return reconcile.Result{}, fmt.Errorf("restoring %s from %s at %s: %w", w.ib.Spec.Backup, w.ib.Spec.Source, st.Digest, err)
	}
	restores.WithLabelValues("restored").Inc()
	restoredBytes.Add(float64(done.Bytes))
	k.checked.Delete(w.ib.Name)
	w.setDetails(done.Details)
	st.LastCopied, st.LastVerified, st.LastDeepVerified = w.time(), w.time(), w.time()
	msg := fmt.Sprintf("Restored from %s at %s (%s uploaded)", w.ib.Spec.Source, st.Digest, displaySize(done.Bytes))
	w.ready(ReasonRestored, msg)
	log.Info("Restored backup", "bytes", done.Bytes)
	k.event(w.ib, corev1.EventTypeNormal, ReasonRestored, msg)
	k.eventOnUsers(w, corev1.EventTypeNormal, ReasonRestored, fmt.Sprintf("The backup %s was restored at %s", w.ib.Spec.Backup, st.Digest))
	return reconcile.Result{}, nil
}

// unrecoverable marks a copy that neither registry holds.
func (k *Keeper) unrecoverable(ctx context.Context, w *work, err error) {
	st := &w.ib.Status
	k.checked.Store(w.ib.Name, w.now)
	if st.Phase == v1alpha1.PhaseUnrecoverable {
		return
	}
	st.Phase = v1alpha1.PhaseUnrecoverable
	msg := fmt.Sprintf("Neither the backup registry nor %s has the image at %s: %v", w.ib.Spec.Source, st.Digest, err)
	w.condition(v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonUnrecoverable, msg)
	ctrl.LoggerFrom(ctx).Error(err, "Backup unrecoverable: its image exists nowhere", "image", w.ib.Spec.Source, "backup", w.ib.Spec.Backup, "digest", st.Digest)
	k.event(w.ib, corev1.EventTypeWarning, ReasonUnrecoverable, msg)
	k.eventOnUsers(w, corev1.EventTypeWarning, ReasonUnrecoverable, fmt.Sprintf(
		"Its image exists nowhere: new pods will not start. The backup %s and its source %s both lost %s; push that image to either to recover (checked every %s)",
		w.ib.Spec.Backup, w.ib.Spec.Source, st.Digest, k.opts.VerifyInterval))
}

// retire deletes the copy of w and its ImageBackup, nothing having needed it for Retention (retireDue). The
// cache said nothing needs it; the API server is asked before the copy is deleted, and again after, since a
// workload created meanwhile may have been pointed at the copy (by the webhook, or by the reconciler finding
// it present): such a copy is restored at once and kept. done is false when the copy stays and is to be kept
// as any other.
func (k *Keeper) retire(ctx context.Context, w *work) (_ reconcile.Result, done bool, _ error) {
	st := &w.ib.Status
	log := ctrl.LoggerFrom(ctx).WithValues("backup", w.ib.Spec.Backup, "digest", st.Digest, "unusedSince", st.UnusedSince.UTC().Format(time.RFC3339))
	if user, err := k.liveUser(ctx, w); err != nil || user != "" {
		if user != "" {
			// The cache lagged: the copy is needed after all.
			log.Info("Not retiring the backup: the API server has a user the cache had not seen", "user", user)
			st.UnusedSince = nil
		}
		return reconcile.Result{}, false, err
	}
	unused := w.now.Sub(st.UnusedSince.Time).Round(time.Second)
	if k.opts.RetentionDryRun {
		if _, reported := k.wouldRetire.LoadOrStore(w.ib.Name, true); !reported {
			retirements.WithLabelValues("dry-run").Inc()
			log.Info("Retention would delete the backup (dry run)")
			k.event(w.ib, corev1.EventTypeNormal, ReasonRetentionDryRun, fmt.Sprintf(
				"Nothing has needed the copy for %s (--retention %s); it would be deleted, but --retention-dry-run is set", unused, k.opts.Retention))
		}
		return reconcile.Result{}, false, nil
	}
	if err := k.deleteCopy(ctx, w); err != nil {
		if errors.Is(err, registry.ErrDeleteRefused) {
			if _, reported := k.refused.LoadOrStore(w.ib.Name, true); !reported {
				retirements.WithLabelValues("refused").Inc()
				log.Info("The backup registry refuses to delete the backup; keeping it", "error", err.Error())
				k.event(w.ib, corev1.EventTypeWarning, ReasonDeleteRefused, fmt.Sprintf(
					"Nothing has needed the copy for %s, but the backup registry refuses to delete it (%v); it is kept. Enable deletes in the registry (REGISTRY_STORAGE_DELETE_ENABLED=true for the distribution registry) or set --retention=0", unused, err))
			}
			return reconcile.Result{}, false, nil
		}
		return reconcile.Result{}, true, err
	}
	// A workload created while the copy was deleted keeps its image.
	if user, err := k.liveUser(ctx, w); err != nil || user != "" {
		if err != nil {
			user, err = "an object the API server could not be asked about", fmt.Errorf("checking for users after deleting %s, so restoring it: %w", w.ib.Spec.Backup, err)
		}
		log.Info("A user appeared while the backup was deleted; restoring it", "user", user)
		retirements.WithLabelValues("raced").Inc()
		st.UnusedSince = nil
		res, rerr := k.restore(ctx, w, "retention deleted it while "+user+" started to use it")
		return res, true, errors.Join(err, rerr)
	}
	retirements.WithLabelValues("deleted").Inc()
	log.Info("Retired the backup: nothing needed it", "unusedFor", unused.String())
	return reconcile.Result{}, true, k.deleteObject(ctx, w, fmt.Sprintf("nothing needed it for %s", unused))
}

// liveUser returns an object of the API server that needs the copy of w, or "".
func (k *Keeper) liveUser(ctx context.Context, w *work) (string, error) {
	found, err := liveUsers(ctx, k.api, k.policy, map[string]bool{w.ib.Spec.Backup: true})
	if err != nil {
		return "", err
	}
	return found[w.ib.Spec.Backup], nil
}

// deleteCopy deletes the copy's tag and, unless another ImageBackup's tag in the same repository points to the
// same digest, its manifest by digest (which would remove it for every tag). A registry that supports only one
// of the two is enough; one that supports neither refuses.
func (k *Keeper) deleteCopy(ctx context.Context, w *work) error {
	tagErr := k.registry.Delete(ctx, w.target)
	if tagErr != nil && !errors.Is(tagErr, registry.ErrDeleteRefused) {
		return tagErr
	}
	if w.ib.Status.Digest == "" {
		return tagErr
	}
	shared, err := k.sharesDigest(ctx, w)
	if err != nil || shared {
		return errors.Join(err, tagErr)
	}
	digestErr := k.registry.Delete(ctx, w.target.Context().Digest(w.ib.Status.Digest))
	if digestErr == nil || tagErr == nil && errors.Is(digestErr, registry.ErrDeleteRefused) {
		return nil
	}
	return digestErr
}

// sharesDigest reports whether another ImageBackup's copy is the same manifest in the same repository.
func (k *Keeper) sharesDigest(ctx context.Context, w *work) (bool, error) {
	var list v1alpha1.ImageBackupList
	if err := k.client.List(ctx, &list); err != nil {
		return false, fmt.Errorf("listing ImageBackups: %w", err)
	}
	for _, other := range list.Items {
		if other.Name == w.ib.Name || other.Status.Digest != w.ib.Status.Digest {
			continue
		}
		if t, err := nameTag(other.Spec.Backup); err == nil && t.Context().String() == w.target.Context().String() {
			return true, nil
		}
	}
	return false, nil
}
