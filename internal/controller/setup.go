// Package controller holds the one reconciler that backs up the images of workloads (every kind of
// internal/workload) and points their pod templates at the copies. setup.go wires it into a manager, reconcile.go holds its steps,
// patch.go the JSON patches it writes and events.go the words of its Events.
package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/lru"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// FieldOwner identifies the controller's writes in managedFields and audit logs.
const FieldOwner = "image-clone-controller"

// Event reasons recorded on workloads.
const (
	ReasonImagesBackedUp = "ImagesBackedUp"
	ReasonBackupFailed   = "BackupFailed"
	// ReasonBackupIncomplete: a copy the workload is pointed at lacks some of its signatures, attestations or
	// SBOMs (only with --referrers-optional; otherwise the workload waits for them).
	ReasonBackupIncomplete = "BackupIncomplete"
)

// Retry delays for workloads whose images could not all be backed up: quick at first for blips, capped so that
// an image that appears later (or credentials that get fixed) is picked up within minutes.
const (
	retryBaseDelay = 500 * time.Millisecond
	retryMaxDelay  = 5 * time.Minute
)

// ImageCopier copies an image into the backup registry and returns its digest once the copy is verified
// complete; its errors carry a registry.Class. Implementations deduplicate concurrent requests for the same
// copy. *registry.Copier is the one used outside tests.
type ImageCopier interface {
	Copy(ctx context.Context, req registry.CopyRequest) (v1.Hash, error)
}

// Options configure the reconcilers; they are built from command-line flags.
type Options struct {
	// Backup is the registry (and path prefix) that copies go to.
	Backup imageref.Backup
	// IgnoredNamespaces are never reconciled.
	IgnoredNamespaces []string
	// MaxConcurrentReconciles bounds parallel reconciles per kind.
	MaxConcurrentReconciles int
	// MaxConcurrentImages bounds how many images of one workload are resolved and copied at once.
	MaxConcurrentImages int
	// WorkloadPullSecrets pulls source images with the workload's own pull secrets (those of its pod template
	// and its ServiceAccount) instead of the copier's credentials, so a workload is only backed up from images
	// it could pull itself. It needs permission to get Secrets and ServiceAccounts.
	WorkloadPullSecrets bool
	// PullSecretsTTL is how long the pull secrets read for a workload are reused, by the reconcilers of every
	// kind, for workloads of the same namespace, ServiceAccount and pod pull secrets (see
	// workload.PullSecrets.TTL): a change to the ServiceAccount's imagePullSecrets or to a Secret applies to
	// reconciles that start once it has passed. 0 reads them for every workload.
	PullSecretsTTL time.Duration
	// Clock is the time source of PullSecretsTTL (default the system clock); tests set a fake one.
	Clock cache.Clock
	// BackupPullSecret, if set, names a pull secret for the backup registry in OwnNamespace; it is copied into
	// every namespace whose workloads are pointed at the backup and added to their pod templates.
	BackupPullSecret string
	// OwnNamespace is the controller's namespace, which holds BackupPullSecret.
	OwnNamespace string
	// Kinds names the workload kinds reconciled (workload.KindNames; all of them if empty).
	Kinds []string
	// BackupPullSecretRefresh is how often at most a namespace's copy of BackupPullSecret is compared with its
	// source, as workloads of the namespace are patched or reconciled (default 1m).
	BackupPullSecretRefresh time.Duration
}

// +kubebuilder:rbac:groups=apps,resources=deployments;daemonsets;statefulsets,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=batch,resources=cronjobs,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
//
// Reading pull secrets (Options.WorkloadPullSecrets) and writing backup pull secrets (Options.BackupPullSecret)
// need permissions of their own, kept in separate ClusterRoles (config/rbac/pull_secrets_role.yaml,
// config/components/backup-pull-secret) so that they can be scoped to some namespaces or left out.

// SetupWithManager registers the image backup reconciler for every kind of opts.Kinds (all of
// workload.KindNames if empty).
func SetupWithManager(mgr ctrl.Manager, copier ImageCopier, opts Options) error {
	if err := workload.IndexBackupServices(context.Background(), mgr.GetFieldIndexer(), opts.Backup); err != nil {
		return err
	}
	if opts.BackupPullSecret != "" && opts.OwnNamespace == "" {
		return errors.New("a backup pull secret needs the controller's namespace (POD_NAMESPACE), which holds its source")
	}
	kinds := opts.Kinds
	if len(kinds) == 0 {
		kinds = workload.KindNames
	}
	// One reader of pull secrets for every kind: the workloads of a namespace share what it remembers.
	secrets := newPullSecrets(mgr.GetAPIReader(), opts)
	for _, name := range kinds {
		var err error
		switch name {
		case workload.Deployments.Name:
			err = setupKind(mgr, copier, opts, secrets, workload.Deployments)
		case workload.DaemonSets.Name:
			err = setupKind(mgr, copier, opts, secrets, workload.DaemonSets)
		case workload.StatefulSets.Name:
			err = setupKind(mgr, copier, opts, secrets, workload.StatefulSets)
		case workload.CronJobs.Name:
			err = setupKind(mgr, copier, opts, secrets, workload.CronJobs)
		case workload.Jobs.Name:
			err = setupKind(mgr, copier, opts, secrets, workload.Jobs)
		default:
			err = fmt.Errorf("unknown workload kind %q", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// setupKind registers the reconciler of kind, which reads pull secrets with secrets.
func setupKind[T client.Object](mgr ctrl.Manager, copier ImageCopier, opts Options, secrets *workload.PullSecrets, kind workload.Kind[T]) error {
	return (&Reconciler[T]{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("image-clone-controller"),
		Copier: copier, Options: opts, Kind: kind, pullSecrets: secrets,
	}).SetupWithManager(mgr)
}

// newPullSecrets returns the reader of workloads' pull secrets that opts ask for, or nil.
func newPullSecrets(api client.Reader, opts Options) *workload.PullSecrets {
	if !opts.WorkloadPullSecrets {
		return nil
	}
	return &workload.PullSecrets{Reader: api, TTL: opts.PullSecretsTTL, Clock: opts.Clock}
}

// ownPatchesSize bounds how many workloads the reconciler of one kind remembers its last patch of.
const ownPatchesSize = 10000

// Reconciler backs up the external images of one workload kind and points the pod template at the copies.
type Reconciler[T client.Object] struct {
	Client client.Client
	// APIReader reads workloads past the cache, to retry a patch that lost a race against another writer.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Copier    ImageCopier
	Options   Options
	Kind      workload.Kind[T]

	policy *workload.Policy
	// pullSecrets is set when sources are pulled with the workload's pull secrets.
	pullSecrets *workload.PullSecrets
	// backupSecret is set when the backup registry needs a pull secret.
	backupSecret *backupPullSecret
	// ownPatches maps workload UIDs to the generation this process's last patch gave them (see keptChecked).
	ownPatches *lru.Cache
}

// SetupWithManager registers the reconciler as controller "image-clone-<kind>".
func (r *Reconciler[T]) SetupWithManager(mgr ctrl.Manager) error {
	r.policy = workload.NewPolicy(r.Options.Backup, r.Options.IgnoredNamespaces, r.Client)
	r.ownPatches = lru.New(ownPatchesSize)
	if r.pullSecrets == nil {
		r.pullSecrets = newPullSecrets(r.APIReader, r.Options)
	}
	if r.Options.BackupPullSecret != "" {
		every := r.Options.BackupPullSecretRefresh
		if every <= 0 {
			every = time.Minute
		}
		r.backupSecret = &backupPullSecret{client: r.Client, reader: r.APIReader, name: r.Options.BackupPullSecret,
			source: r.Options.OwnNamespace, every: every}
	}
	// Filtering at the watch keeps ignored namespaces out of the work queue altogether.
	inScope := predicate.NewPredicateFuncs(func(o client.Object) bool { return !r.policy.Ignores(o.GetNamespace()) })
	namespaceInScope := predicate.NewPredicateFuncs(func(o client.Object) bool { return !r.policy.Ignores(o.GetName()) })

	return ctrl.NewControllerManagedBy(mgr).
		Named("image-clone-"+strings.ToLower(r.Kind.Name)).
		For(workload.NewObject[T](), builder.WithPredicates(inScope,
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		// Opting a namespace back in (removing the annotation) must reconcile its workloads.
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.workloadsInNamespace),
			builder.WithPredicates(namespaceInScope, predicate.AnnotationChangedPredicate{})).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: r.Options.MaxConcurrentReconciles,
			RateLimiter:             workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](retryBaseDelay, retryMaxDelay),
		}).
		Complete(reconcile.AsReconciler[T](mgr.GetClient(), r))
}

// workloadsInNamespace enqueues every workload of the kind in a namespace whose annotations changed.
func (r *Reconciler[T]) workloadsInNamespace(ctx context.Context, ns client.Object) []reconcile.Request {
	list := r.Kind.NewList()
	if err := r.Client.List(ctx, list, client.InNamespace(ns.GetName())); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing workloads of namespace", "namespace", ns.GetName())
		return nil
	}
	var requests []reconcile.Request
	_ = meta.EachListItem(list, func(o runtime.Object) error {
		obj := o.(client.Object)
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)})
		return nil
	})
	return requests
}
