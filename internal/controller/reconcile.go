package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// maxRetryAfter caps how long a workload waits when a registry asks for a longer pause (Retry-After), so that a
// registry's mistake cannot park a workload for days.
const maxRetryAfter = 10 * time.Minute

// Reconcile backs up one workload's images:
//  1. skip workloads that are ignored, being deleted, or serve the backup registry;
//  2. map every external image of containers and initContainers to its backup reference, and every copy the
//     workload already runs from back to its source;
//  3. copy the images with the workload's own pull credentials, each verified complete in the backup now, and
//     restore the copies the backup registry lost;
//  4. decide from the failures, by their class, whether to point the workload at its copies now and when to
//     try again;
//  5. provide the backup pull secret, if configured, in the workload's namespace;
//  6. patch all safely backed-up images (and that secret) in one patch (each image field guarded by a test).
//
// While any image fails transiently nothing is patched, so the workload rolls out once, not once per image.
// Images that cannot be copied as they stand are reported and do not hold the others back. Every failure is
// reported once: in a Warning Event and in the returned error (which controller-runtime logs), or, when a
// registry asked for a pause, in the Event and a log line with the requeue.
func (r *Reconciler[T]) Reconcile(ctx context.Context, obj T) (reconcile.Result, error) {
	log := ctrl.LoggerFrom(ctx).WithValues("workload", klog.KObj(obj), "kind", r.Kind.Name)
	ctx = ctrl.LoggerInto(ctx, log)

	if owner := metav1.GetControllerOf(obj); owner != nil && slices.Contains(r.Kind.CreatedFrom, owner.Kind) {
		log.V(1).Info("Skipping workload", "reason", "created from the template of "+owner.Kind+" "+owner.Name+", which is backed up")
		return reconcile.Result{}, nil
	}
	if reason, err := r.policy.SkipReason(ctx, obj, r.Kind.PodTemplate(obj)); err != nil || reason != "" {
		if reason != "" {
			log.V(1).Info("Skipping workload", "reason", reason)
		}
		return reconcile.Result{}, err
	}

	spec := &r.Kind.PodTemplate(obj).Spec
	results := r.mapImages(spec)
	if r.keptChecked(obj) {
		results = slices.DeleteFunc(results, func(res backupResult) bool { return res.Keep })
	}
	creds := r.sourceCredentials(obj)
	// Adding the backup pull secret hands the workload every copy it names; those it was not pointed at by
	// this reconcile must prove that the workload's own credentials can read their sources.
	r.backUp(ctx, results, creds.source, r.lacksBackupPullSecret(spec))

	plan := decide(results)
	if note := describeIncomplete(results); note != "" {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonBackupIncomplete, "BackUp", "%s", note)
	}
	if len(plan.failed) > 0 {
		// One Event for all the failed images: the events API folds Events of the same type, reason and action
		// on the same object into one series that keeps the first note only, so one Event per image would show
		// just one of them (whichever was sent first).
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonBackupFailed, "BackUp", "%s", describeFailures(plan.failed, creds.unused()))
	}
	switch {
	case plan.patch && r.Kind.ImmutableTemplate:
		if note := describeBackups(results); note != "" {
			r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, ReasonImagesBackedUp, "BackUp", "%s", eventNote(note+
				". A "+r.Kind.Name+"'s pod template cannot change, so this one runs from its original images; the next one is created on the copies"))
		}
	case plan.patch:
		if err := r.pointAtBackups(ctx, obj, spec, results); err != nil {
			return reconcile.Result{}, err
		}
	}
	if plan.result.RequeueAfter > 0 {
		log.Info("A registry asked for a pause; trying again then", "requeueAfter", plan.result.RequeueAfter.String())
	}
	return plan.result, plan.err
}

// backupResult is the outcome of backing up one image.
type backupResult struct {
	workload.Image
	digest v1.Hash
	// err is the copy's failure, a registry.Error whose class decides what happens next.
	err error
	// incomplete names the artifacts (signatures, attestations) a usable copy lacks (registry.Incomplete).
	incomplete error
}

// mapImages returns the distinct images of spec (see workload.Policy.Images), each to back up; one that has
// no backup name fails with its Invalid error.
func (r *Reconciler[T]) mapImages(spec *corev1.PodSpec) []backupResult {
	images := r.policy.Images(spec)
	results := make([]backupResult, len(images))
	for i, img := range images {
		results[i] = backupResult{Image: img, err: img.Err}
	}
	return results
}

// keptChecked reports, once, whether obj is at the generation this process's own patch gave it: the reconcile
// that patch triggers finds every image on a copy that was checked (or made) in the backup registry moments
// before, so it does not ask the registry again. Every later reconcile, and every restart, checks them.
func (r *Reconciler[T]) keptChecked(obj T) bool {
	generation, ok := r.ownPatches.Get(obj.GetUID())
	if !ok {
		return false
	}
	r.ownPatches.Remove(obj.GetUID())
	return generation == obj.GetGeneration()
}

// sourceCredentials returns the credentials that make the copier pull images as the workload's pods would. They
// are read when the copier first needs them, and at most once: a workload whose copies all exist costs no
// read of its ServiceAccount or Secrets.
func (r *Reconciler[T]) sourceCredentials(obj T) *lazyCredentials {
	if r.pullSecrets == nil {
		return &lazyCredentials{}
	}
	l := &lazyCredentials{}
	l.source = func(ctx context.Context) (*registry.Credentials, error) {
		l.once.Do(func() {
			l.creds, l.unusedSecrets, l.err = r.pullSecrets.Credentials(ctx, obj.GetNamespace(), &r.Kind.PodTemplate(obj).Spec)
		})
		return l.creds, l.err
	}
	return l
}

// lazyCredentials are a workload's pull credentials, read on first use.
type lazyCredentials struct {
	// source is nil when sources are pulled with the copier's own keychain.
	source registry.CredentialSource

	once          sync.Once
	creds         *registry.Credentials
	unusedSecrets []string
	err           error
}

// unused names the workload's pull secrets that could not be used, if they were read. Call it once the copies
// that may read them are done.
func (l *lazyCredentials) unused() []string { return l.unusedSecrets }

// backUp copies the images of results that mapped, at most MaxConcurrentImages at a time, and records each
// outcome in place.
func (r *Reconciler[T]) backUp(ctx context.Context, results []backupResult, creds registry.CredentialSource, proveKept bool) {
	limit := make(chan struct{}, max(1, r.Options.MaxConcurrentImages))
	var wg sync.WaitGroup
	for i := range results {
		if results[i].err != nil {
			continue
		}
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			m := results[i].Mapping
			keep := results[i].Keep
			results[i].digest, results[i].err = r.Copier.Copy(ctx, registry.CopyRequest{
				Source: m.Source, Target: m.Target, Credentials: creds, KeepExisting: keep, ProveAccess: keep && proveKept})
			if registry.ClassOf(results[i].err) == registry.Incomplete {
				// The copy is complete and usable; what it lacks is reported, not waited for.
				results[i].incomplete, results[i].err = results[i].err, nil
			}
		})
	}
	wg.Wait()
}

// plan is what a reconcile does after the copies: whether it points the workload at the copies that succeeded,
// and when it comes back.
type plan struct {
	failed []backupResult
	patch  bool
	result reconcile.Result
	err    error
}

// decide turns the failures' classes into the plan; it is the one place that chooses retries:
//   - Transient: nothing is patched yet (one rollout, not one per image); the workload comes back after the
//     longest Retry-After a registry asked for, if one did, else with the work queue's backoff;
//   - Permanent, AccessDenied, TooLarge: the other images are patched, and the workload comes back with
//     backoff, since the image may be published, access granted or the limit raised later;
//   - Invalid: the other images are patched, and only a change of the workload brings it back.
func decide(results []backupResult) plan {
	var p plan
	byClass := map[registry.Class][]string{}
	var wait time.Duration
	for _, res := range results {
		if res.err == nil {
			continue
		}
		p.failed = append(p.failed, res)
		class := registry.ClassOf(res.err)
		byClass[class] = append(byClass[class], res.Name)
		if class == registry.Transient {
			wait = max(wait, registry.RetryAfterOf(res.err))
		}
	}
	switch {
	case wait > 0:
		// Nothing is patched before every transient failure is over, so the workload waits as long as the
		// registry asked, even if another image failed without asking: a retry sooner would only ask the
		// registry that said to wait.
		p.result.RequeueAfter = min(wait, maxRetryAfter)
	case len(byClass[registry.Transient]) > 0:
		p.err = fmt.Errorf("backing up %s: will retry", strings.Join(byClass[registry.Transient], ", "))
	case len(byClass[registry.Permanent])+len(byClass[registry.AccessDenied])+len(byClass[registry.TooLarge]) > 0:
		p.patch = true
		p.err = fmt.Errorf("cannot back up %s", strings.Join(slices.Concat(
			byClass[registry.Permanent], byClass[registry.AccessDenied], byClass[registry.TooLarge]), ", "))
	case len(byClass[registry.Invalid]) > 0:
		p.patch = true
		p.err = reconcile.TerminalError(fmt.Errorf("invalid image references: %s", strings.Join(byClass[registry.Invalid], ", ")))
	default:
		p.patch = true
	}
	return p
}

// pointAtBackups provides the backup pull secret where the workload needs it and patches the workload to the
// copies that succeeded. It is also how a workload that already runs from the backup gets the secret, or keeps
// its namespace's copy current.
func (r *Reconciler[T]) pointAtBackups(ctx context.Context, obj T, spec *corev1.PodSpec, results []backupResult) error {
	rewrites := map[string]string{}
	for _, res := range results {
		if res.err == nil && !res.Keep {
			rewrites[res.Name] = res.Mapping.PodImage()
		}
	}
	// A workload that names a copy its own credentials could not prove access to gets no pull secret for the
	// backup, and so nothing pointed at the backup either (its pods could not pull it); the Warning Event says
	// why.
	if r.lacksBackupPullSecret(spec) &&
		slices.ContainsFunc(results, func(res backupResult) bool { return res.Keep && res.err != nil }) {
		return nil
	}
	addSecret, err := r.provideBackupPullSecret(ctx, obj, spec, len(rewrites) > 0)
	if err != nil {
		return err
	}
	if len(rewrites) == 0 && !addSecret {
		return nil
	}
	patched, err := r.patch(ctx, obj, rewrites, addSecret)
	if err != nil {
		return err
	}
	if patched {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, ReasonImagesBackedUp, "PatchImages", "%s", eventNote(describeBackups(results)))
	}
	return nil
}

// provideBackupPullSecret makes the backup pull secret, if one is configured, exist and be current in the
// workload's namespace when the workload runs from the backup or is about to (pointing), and reports whether
// the pod template still has to list it. The namespace's copy is checked once per BackupPullSecretRefresh, not
// once per workload: workloads of a namespace are often reconciled together (a new namespace, a restart).
func (r *Reconciler[T]) provideBackupPullSecret(ctx context.Context, obj T, spec *corev1.PodSpec, pointing bool) (bool, error) {
	if r.backupSecret == nil || !pointing && !r.policy.UsesBackup(spec) {
		return false, nil
	}
	if err := r.backupSecret.refresh(ctx, obj.GetNamespace()); err != nil {
		// Pods could not pull their copies without the secret: point them nowhere yet.
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonBackupFailed, "PullSecret", "%s",
			eventNote("Cannot provide the backup pull secret in this namespace, so the workload is not pointed at (more of) its backups: "+err.Error()))
		return false, err
	}
	return r.lacksBackupPullSecret(spec), nil
}

// lacksBackupPullSecret reports whether a backup pull secret is configured and spec does not list it yet.
func (r *Reconciler[T]) lacksBackupPullSecret(spec *corev1.PodSpec) bool {
	return r.backupSecret != nil && !workload.ListsPullSecret(spec, r.backupSecret.name)
}
