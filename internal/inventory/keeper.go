package inventory

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// Registry is what the keeper asks of the backup registry; *registry.Copier is the one used outside tests.
type Registry interface {
	// Check returns what a backup tag resolves to, with one manifest HEAD; an error wrapping
	// registry.ErrNotBackedUp when the tag does not exist.
	Check(ctx context.Context, target name.Tag) (v1.Hash, error)
	// Verify checks every manifest and blob of the copy at digest; an error wrapping registry.ErrNotBackedUp
	// when content is missing.
	Verify(ctx context.Context, target name.Tag, digest v1.Hash) (registry.Details, error)
	// Restore copies the source at the recorded digest again; an error wrapping registry.ErrSourceLost when
	// the source does not have it.
	Restore(ctx context.Context, req registry.RestoreRequest) (registry.Restored, error)
	// Delete deletes a tag or a manifest by digest; an error wrapping registry.ErrDeleteRefused when the
	// registry does not allow it.
	Delete(ctx context.Context, ref name.Reference) error
}

// Options configure the keeper; they are built from command-line flags.
type Options struct {
	// Backup is the registry (and path prefix) that copies go to.
	Backup imageref.Backup
	// VerifyInterval is how often each copy is checked in the backup registry (default 1h); every copy's
	// schedule is shifted by up to a tenth of it, so that copies made together are not all checked together.
	VerifyInterval time.Duration
	// DeepVerifyEvery makes every so many checks a full verification of every manifest and blob (default 24).
	DeepVerifyEvery int
	// Retention deletes a copy, and its ImageBackup, once nothing has needed it for this long; 0 keeps copies
	// forever.
	Retention time.Duration
	// RetentionDryRun reports what retention would delete and deletes nothing.
	RetentionDryRun bool
	// WorkloadPullSecrets restores a copy with the pull secrets of a workload that uses it, as it was copied.
	WorkloadPullSecrets bool
	// MaxConcurrentReconciles bounds how many ImageBackups are worked on at once (default 4).
	MaxConcurrentReconciles int
	// UsageWriteInterval is the least time between two status writes of one ImageBackup that change nothing but
	// status.usedBy (default 30s): while many workloads that use one copy are created at once, its count is
	// written every so often, not once per workload. Whether anything needs the copy at all is written at once.
	UsageWriteInterval time.Duration
}

func (o *Options) defaults() {
	if o.VerifyInterval <= 0 {
		o.VerifyInterval = time.Hour
	}
	if o.DeepVerifyEvery <= 0 {
		o.DeepVerifyEvery = 24
	}
	if o.MaxConcurrentReconciles <= 0 {
		o.MaxConcurrentReconciles = 4
	}
	if o.UsageWriteInterval <= 0 {
		o.UsageWriteInterval = 30 * time.Second
	}
}

// Keeper owns the ImageBackups: it records the copies the copier reports, verifies them, restores the lost ones
// and retires those nothing needs.
type Keeper struct {
	client   client.Client
	api      client.Reader
	recorder recorder.EventRecorder
	registry Registry
	opts     Options
	policy   *workload.Policy
	secrets  *workload.PullSecrets

	// pending holds, by object name, the latest observation of the copier not yet recorded.
	mu      sync.Mutex
	pending map[string]registry.Observation
	// queue is the controller's work queue once it runs (on the leader).
	queue atomic.Pointer[workqueue.TypedRateLimitingInterface[reconcile.Request]]
	// checked remembers when each Unrecoverable copy was last looked for, so it is looked for once an interval.
	checked sync.Map
	// refused and wouldRetire remember the copies whose deletion the backup registry refused, and those the
	// dry run reported, so that each is reported once.
	refused, wouldRetire sync.Map
	// written remembers when this keeper last wrote each ImageBackup's status, which spaces out the writes that
	// only change its usage.
	written sync.Map
	phases  *phaseCounts
}

// New returns a Keeper; register it with SetupWithManager, and hand Observe to the copier
// (registry.Options.OnBackup) before anything copies.
func New(reg Registry, opts Options) *Keeper {
	opts.defaults()
	k := &Keeper{registry: reg, opts: opts, pending: map[string]registry.Observation{}, phases: newPhaseCounts()}
	exported.attach(k.phases)
	return k
}

// +kubebuilder:rbac:groups=image-clone-controller.io,resources=imagebackups,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=image-clone-controller.io,resources=imagebackups/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=apps,resources=replicasets;controllerrevisions,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// SetupWithManager indexes every kind that can need a copy by the copies it names and registers the keeper
// as controller "image-clone-inventory". The manager's scheme must hold the v1alpha1 types.
func (k *Keeper) SetupWithManager(mgr ctrl.Manager) error {
	k.client, k.api, k.recorder = mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder("image-clone-controller")
	k.policy = workload.NewPolicy(k.opts.Backup, nil, k.client)
	if k.opts.WorkloadPullSecrets {
		k.secrets = &workload.PullSecrets{Reader: k.api}
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("image-clone-inventory").
		// The keeper's own status writes do not change the generation, so they do not come back to it.
		// Another controller's ImageBackups (one with another backup registry in the same cluster) are its own.
		For(&v1alpha1.ImageBackup{}, builder.WithPredicates(predicate.GenerationChangedPredicate{},
			predicate.NewPredicateFuncs(func(o client.Object) bool { return k.owns(o.(*v1alpha1.ImageBackup)) }))).
		WatchesRawSource(source.Func(k.startQueue)).
		WithOptions(controller.Options{MaxConcurrentReconciles: k.opts.MaxConcurrentReconciles})
	for _, u := range users {
		if err := mgr.GetFieldIndexer().IndexField(context.Background(), u.newObj(), usageIndex, func(o client.Object) []string {
			return targets(k.policy, u.spec(o))
		}); err != nil {
			return fmt.Errorf("indexing %ss by the copies they use: %w", u.kind, err)
		}
		b = b.Watches(u.newObj(), handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return requests(targets(k.policy, u.spec(o)))
		}), builder.WithPredicates(k.imagesChanged(u)))
	}
	return b.Complete(k)
}

// owns reports whether ib records a copy in this keeper's backup registry.
func (k *Keeper) owns(ib *v1alpha1.ImageBackup) bool { return k.opts.Backup.Contains(ib.Spec.Backup) }

// imagesChanged lets through creations, deletions and the updates that change which copies an object of kind u
// names; the status updates of Pods and ReplicaSets, the bulk of their events, change none.
func (k *Keeper) imagesChanged(u user) predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		before, after := u.spec(e.ObjectOld), u.spec(e.ObjectNew)
		if slices.Equal(imageNames(before), imageNames(after)) {
			return false // the same images name the same copies: no need to map them
		}
		return !slices.Equal(targets(k.policy, before), targets(k.policy, after))
	}}
}

// nameTag parses a backup reference.
func nameTag(ref string) (name.Tag, error) { return name.NewTag(ref, name.WeakValidation) }

func requests(targets []string) []reconcile.Request {
	out := make([]reconcile.Request, len(targets))
	for i, t := range targets {
		out[i] = reconcile.Request{NamespacedName: types.NamespacedName{Name: ObjectName(t)}}
	}
	return out
}

// Observe records what the copier found or did for a copy; it never blocks. Until the keeper runs (on the
// leader) observations wait, the latest per copy.
func (k *Keeper) Observe(o registry.Observation) {
	key := ObjectName(o.Target.String())
	k.mu.Lock()
	if prev, ok := k.pending[key]; !ok || supersedes(o, prev) {
		k.pending[key] = o
	}
	k.mu.Unlock()
	if q := k.queue.Load(); q != nil {
		(*q).Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: key}})
	}
}

// RecordedDigest returns the digest recorded for the copy at target, for registry.Options.RecordedDigest: a
// workload reconciled after its copy was lost gets that content back, as the keeper's restore would. It reads
// the cache, and knows nothing before the keeper is set up.
func (k *Keeper) RecordedDigest(target name.Tag) (v1.Hash, bool) {
	if k.client == nil {
		return v1.Hash{}, false
	}
	ib := &v1alpha1.ImageBackup{}
	if err := k.client.Get(context.Background(), client.ObjectKey{Name: ObjectName(target.String())}, ib); err != nil ||
		ib.Spec.Backup != target.String() || ib.Status.Digest == "" {
		return v1.Hash{}, false
	}
	h, err := v1.NewHash(ib.Status.Digest)
	return h, err == nil
}

// supersedes reports whether observation o carries more than prev: a later copy replaces what was known, but
// finding a copy present says less than the copy of the same digest that was just made.
func supersedes(o, prev registry.Observation) bool {
	if o.State == registry.Present && prev.State == registry.Copied && o.Digest == prev.Digest {
		return false
	}
	return true
}

// startQueue is the source of the observations: it keeps the controller's queue for Observe and hands it what
// waited.
func (k *Keeper) startQueue(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	k.queue.Store(&q)
	k.mu.Lock()
	defer k.mu.Unlock()
	for key := range k.pending {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: key}})
	}
	return nil
}

// take removes and returns the pending observation of key.
func (k *Keeper) take(key string) (registry.Observation, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	o, ok := k.pending[key]
	delete(k.pending, key)
	return o, ok
}

// giveBack puts an observation that could not be recorded back, unless a newer one arrived meanwhile.
func (k *Keeper) giveBack(key string, o registry.Observation) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.pending[key]; !ok {
		k.pending[key] = o
	}
}

// Reconcile brings one ImageBackup up to date:
//  1. record what the copier last reported (creating the object for a new copy);
//  2. count what needs the copy;
//  3. when due, verify the copy (a HEAD; every DeepVerifyEvery-th time every manifest and blob);
//  4. restore a lost copy at its recorded digest, or mark it Unrecoverable when the source lost it too;
//  5. retire a copy nothing has needed for Retention;
//  6. write the status and come back when the next check is due.
func (k *Keeper) Reconcile(ctx context.Context, req reconcile.Request) (_ reconcile.Result, err error) {
	log := ctrl.LoggerFrom(ctx).WithValues("imagebackup", req.Name)
	ctx = ctrl.LoggerInto(ctx, log)

	obs, observed := k.take(req.Name)
	defer func() {
		if err != nil && observed {
			k.giveBack(req.Name, obs)
		}
	}()
	ib := &v1alpha1.ImageBackup{}
	if err := k.client.Get(ctx, req.NamespacedName, ib); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
		k.forget(req.Name)
		if !observed {
			return reconcile.Result{}, nil // nothing was copied under this name, or it was retired
		}
		if ib, err = k.create(ctx, req.Name, obs); err != nil {
			return reconcile.Result{}, err
		}
	}
	if !ib.DeletionTimestamp.IsZero() || !k.owns(ib) {
		return reconcile.Result{}, nil
	}
	target, err := nameTag(ib.Spec.Backup)
	if err != nil {
		return reconcile.Result{}, reconcile.TerminalError(fmt.Errorf("spec.backup %q is not a tag: %w", ib.Spec.Backup, err))
	}
	w := &work{ib: ib, before: ib.Status.DeepCopy(), target: target, now: time.Now()}
	if observed {
		w.record(obs)
	}
	if w.users, err = cachedUsage(ctx, k.client, ib.Spec.Backup); err != nil {
		return reconcile.Result{}, err
	}
	w.setUsage()

	result, err := k.keep(ctx, w)
	if err == nil && w.retired {
		k.forget(req.Name)
		return reconcile.Result{}, nil
	}
	later, werr := k.writeStatus(ctx, w)
	if werr != nil {
		return reconcile.Result{}, errors.Join(err, werr)
	}
	if later > 0 && observed && err == nil {
		// Not written: the observation must wait for the write that is made later.
		k.giveBack(req.Name, obs)
	}
	k.phases.set(req.Name, ib.Status.Phase)
	if err != nil {
		return reconcile.Result{}, err
	}
	if result.RequeueAfter == 0 {
		result.RequeueAfter = k.nextCheck(w)
	}
	if later > 0 {
		result.RequeueAfter = min(result.RequeueAfter, later)
	}
	return result, nil
}

// forget drops what the keeper remembers of an ImageBackup that no longer exists.
func (k *Keeper) forget(key string) {
	k.phases.forget(key)
	k.written.Delete(key)
}

// keep verifies, restores and retires the copy of w as they are due.
func (k *Keeper) keep(ctx context.Context, w *work) (reconcile.Result, error) {
	st := &w.ib.Status
	switch st.Phase {
	case v1alpha1.PhaseCopying:
		return reconcile.Result{}, nil // the copier reports when it is done
	case "":
		return reconcile.Result{}, nil // just created: its first status is on the way (the cache may lag)
	case v1alpha1.PhaseFailed:
		if !w.users.needed() && st.Digest == "" {
			return reconcile.Result{}, k.deleteObject(ctx, w, "nothing uses the image, which was never copied")
		}
		return reconcile.Result{}, nil // the workload reconciler tries again, and reports what it copies
	}
	// What is to be retired is neither verified nor restored first.
	if k.retireDue(w) {
		if res, done, err := k.retire(ctx, w); done || err != nil {
			return res, err
		}
	}
	switch st.Phase {
	case v1alpha1.PhaseLost, v1alpha1.PhaseRestoring:
		return k.restore(ctx, w, "")
	case v1alpha1.PhaseUnrecoverable:
		if last, ok := k.checked.Load(w.ib.Name); ok && w.now.Sub(last.(time.Time)) < k.opts.VerifyInterval {
			return reconcile.Result{RequeueAfter: k.opts.VerifyInterval - w.now.Sub(last.(time.Time))}, nil
		}
		k.checked.Store(w.ib.Name, w.now)
		lost, err := k.verify(ctx, w, false)
		if err != nil || lost == "" {
			return reconcile.Result{}, err
		}
		return k.restore(ctx, w, lost)
	}
	if !w.verifyDue(k.opts) {
		return reconcile.Result{}, nil
	}
	lost, err := k.verify(ctx, w, w.deepDue(k.opts))
	if err != nil || lost == "" {
		return reconcile.Result{}, err
	}
	return k.restore(ctx, w, lost)
}

// retireDue reports whether nothing has needed the copy of w for Retention.
func (k *Keeper) retireDue(w *work) bool {
	st := &w.ib.Status
	return k.opts.Retention > 0 && !w.users.needed() && st.UnusedSince != nil && !w.now.Before(st.UnusedSince.Add(k.opts.Retention))
}

// nextCheck is how long until the copy of w is due for its next verification or retirement.
func (k *Keeper) nextCheck(w *work) time.Duration {
	st := &w.ib.Status
	next := k.opts.VerifyInterval
	if st.LastVerified != nil {
		next = st.LastVerified.Add(k.interval(w.ib.Name)).Sub(w.now)
	}
	if due := st.UnusedSince; k.opts.Retention > 0 && due != nil && due.Add(k.opts.Retention).After(w.now) {
		next = min(next, due.Add(k.opts.Retention).Sub(w.now))
	}
	return max(next, time.Second)
}

// interval is the verification interval of the copy called key: VerifyInterval plus up to a tenth of it, the
// same for the copy every time (a hash of its name), so that copies made together spread out.
func (k *Keeper) interval(key string) time.Duration {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return k.opts.VerifyInterval + time.Duration(float64(k.opts.VerifyInterval)*float64(h.Sum32()%1000)/10000)
}

// work is one reconcile of one ImageBackup.
type work struct {
	ib     *v1alpha1.ImageBackup
	before *v1alpha1.ImageBackupStatus
	target name.Tag
	now    time.Time
	users  *usage
	// retired is set once the object is deleted.
	retired bool
}

func (w *work) verifyDue(opts Options) bool {
	st := &w.ib.Status
	return st.LastVerified == nil || !w.now.Before(st.LastVerified.Add(opts.VerifyInterval)) || w.deepDue(opts)
}

func (w *work) deepDue(opts Options) bool {
	st := &w.ib.Status
	return st.LastDeepVerified == nil || !w.now.Before(st.LastDeepVerified.Add(opts.VerifyInterval*time.Duration(opts.DeepVerifyEvery)))
}

// source returns the image the copy was made from.
func (w *work) source() (name.Reference, error) {
	ref, err := name.ParseReference(w.ib.Spec.Source, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("spec.source %q is not an image reference: %w", w.ib.Spec.Source, err)
	}
	return ref, nil
}

func (w *work) digest() v1.Hash {
	h, _ := v1.NewHash(w.ib.Status.Digest)
	return h
}

// setUsage writes what needs the copy into the status, and when that stopped.
func (w *work) setUsage() {
	st := &w.ib.Status
	st.UsedBy = w.users.status()
	switch {
	case w.users.needed():
		st.UnusedSince = nil
	case st.UnusedSince == nil:
		st.UnusedSince = &metav1.Time{Time: w.now}
	}
}

// restoreCredentials returns the pull credentials of a workload that uses the copy, when restores pull with
// workloads' pull secrets.
func (k *Keeper) restoreCredentials(w *work) registry.CredentialSource {
	if k.secrets == nil {
		return nil
	}
	for _, obj := range w.users.objects {
		u := userOf(obj)
		if u == nil || u.kind == "Pod" || u.kind == "ReplicaSet" {
			continue // trimmed in the cache: their pull secrets are not there
		}
		spec := u.spec(obj)
		return func(ctx context.Context) (*registry.Credentials, error) {
			creds, _, err := k.secrets.Credentials(ctx, obj.GetNamespace(), spec)
			return creds, err
		}
	}
	return nil
}

// event records an Event on the ImageBackup.
func (k *Keeper) event(ib *v1alpha1.ImageBackup, kind, reason, note string) {
	k.recorder.Eventf(ib, nil, kind, reason, reason, "%s", note)
}

// eventOnUsers records an Event on every workload that uses the copy.
func (k *Keeper) eventOnUsers(w *work, kind, reason, note string) {
	for _, obj := range w.users.objects {
		k.recorder.Eventf(obj, nil, kind, reason, reason, "%s", note)
	}
}

// userOf returns the user kind of obj.
func userOf(obj client.Object) *user {
	for i := range users {
		if fmt.Sprintf("%T", users[i].newObj()) == fmt.Sprintf("%T", obj) {
			return &users[i]
		}
	}
	return nil
}
