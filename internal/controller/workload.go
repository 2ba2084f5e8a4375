// Package controller holds the one reconciler that backs up the images of Deployments and DaemonSets and
// points their pod templates at the copies.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
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
)

// IgnoreAnnotation opts a workload, or every workload of a namespace, out of backups when set to "true".
const IgnoreAnnotation = "image-clone-controller.io/ignore"

// FieldOwner identifies the controller's writes in managedFields and audit logs.
const FieldOwner = "image-clone-controller"

// Event reasons recorded on workloads.
const (
	ReasonImagesBackedUp = "ImagesBackedUp"
	ReasonBackupFailed   = "BackupFailed"
)

// Retry delays for workloads whose images could not all be backed up: quick at first for blips, capped so that
// an image that appears later (or credentials that get fixed) is picked up within minutes.
const (
	retryBaseDelay = 500 * time.Millisecond
	retryMaxDelay  = 5 * time.Minute
)

// ImageCopier copies an image into the backup registry and returns its digest once the copy is verified
// complete. Implementations deduplicate concurrent requests for the same copy.
type ImageCopier interface {
	Copy(ctx context.Context, src name.Reference, dst name.Tag, opts ...registry.CopyOption) (v1.Hash, error)
}

// Kind describes one workload kind to the generic reconciler; the pod template accessor is the only
// kind-specific code.
type Kind[T client.Object] struct {
	// Name is the Kind as users see it, e.g. "Deployment"; it names the controller and labels metrics.
	Name string
	// PodTemplate returns the object's pod template, which the reconciler rewrites in place.
	PodTemplate func(T) *corev1.PodTemplateSpec
	// TemplatePath is the JSON pointer of the pod template in the object, e.g. "/spec/template".
	TemplatePath string
	// NewList returns an empty list of the kind, used to find the workloads of a namespace.
	NewList func() client.ObjectList
}

// Deployments is the Kind of apps/v1 Deployments.
var Deployments = Kind[*appsv1.Deployment]{
	Name:         "Deployment",
	PodTemplate:  func(d *appsv1.Deployment) *corev1.PodTemplateSpec { return &d.Spec.Template },
	TemplatePath: "/spec/template",
	NewList:      func() client.ObjectList { return &appsv1.DeploymentList{} },
}

// DaemonSets is the Kind of apps/v1 DaemonSets.
var DaemonSets = Kind[*appsv1.DaemonSet]{
	Name:         "DaemonSet",
	PodTemplate:  func(d *appsv1.DaemonSet) *corev1.PodTemplateSpec { return &d.Spec.Template },
	TemplatePath: "/spec/template",
	NewList:      func() client.ObjectList { return &appsv1.DaemonSetList{} },
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
	// TagCacheTTL is how long the digest a tag was backed up at is reused for other workloads without asking
	// the source registry again (see tagCache); 0 asks every time.
	TagCacheTTL time.Duration
	// WorkloadPullSecrets pulls source images with the workload's own pull secrets (those of its pod template
	// and its ServiceAccount) instead of the copier's credentials, so a workload is only backed up from images
	// it could pull itself. It needs permission to get Secrets and ServiceAccounts.
	WorkloadPullSecrets bool
	// BackupPullSecret, if set, names a pull secret for the backup registry in OwnNamespace; it is copied into
	// every namespace whose workloads are pointed at the backup and added to their pod templates.
	BackupPullSecret string
	// OwnNamespace is the controller's namespace, which holds BackupPullSecret.
	OwnNamespace string
	// BackupPullSecretRefresh is how often at most a namespace's copy of BackupPullSecret is compared with its
	// source, as workloads of the namespace are patched or reconciled (default 1m).
	BackupPullSecretRefresh time.Duration
}

// +kubebuilder:rbac:groups=apps,resources=deployments;daemonsets,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
//
// Reading pull secrets (Options.WorkloadPullSecrets) and writing backup pull secrets (Options.BackupPullSecret)
// need permissions of their own, kept in separate ClusterRoles (config/rbac/pull_secrets_role.yaml,
// config/components/backup-pull-secret) so that they can be scoped to some namespaces or left out.

// SetupWithManager registers the image backup reconciler for Deployments and DaemonSets.
func SetupWithManager(mgr ctrl.Manager, copier ImageCopier, opts Options) error {
	rec := mgr.GetEventRecorder("image-clone-controller")
	if err := indexBackupServices(context.Background(), mgr.GetFieldIndexer(), opts.Backup); err != nil {
		return err
	}
	if opts.TagCacheTTL > 0 {
		// One cache for both kinds: a DaemonSet and a Deployment often share images.
		copier = newTagCache(copier, opts.TagCacheTTL)
	}
	if opts.BackupPullSecret != "" && opts.OwnNamespace == "" {
		return errors.New("a backup pull secret needs the controller's namespace (POD_NAMESPACE), which holds its source")
	}
	if err := (&Reconciler[*appsv1.Deployment]{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: rec, Copier: copier, Options: opts, Kind: Deployments,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&Reconciler[*appsv1.DaemonSet]{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: rec, Copier: copier, Options: opts, Kind: DaemonSets,
	}).SetupWithManager(mgr)
}

// Reconciler backs up the external images of one workload kind and points the pod template at the copies.
type Reconciler[T client.Object] struct {
	Client client.Client
	// APIReader reads workloads past the cache, to retry a patch that lost a race against another writer.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Copier    ImageCopier
	Options   Options
	Kind      Kind[T]

	ignored map[string]bool
	// pullSecrets is set when sources are pulled with the workload's pull secrets.
	pullSecrets *pullCredentials
	// backupSecret is set when the backup registry needs a pull secret.
	backupSecret *backupPullSecret
}

// SetupWithManager registers the reconciler as controller "image-clone-<kind>".
func (r *Reconciler[T]) SetupWithManager(mgr ctrl.Manager) error {
	r.ignored = map[string]bool{}
	for _, ns := range r.Options.IgnoredNamespaces {
		r.ignored[ns] = true
	}
	if r.Options.WorkloadPullSecrets {
		r.pullSecrets = &pullCredentials{reader: r.APIReader}
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
	inScope := predicate.NewPredicateFuncs(func(o client.Object) bool { return !r.ignored[o.GetNamespace()] })
	namespaceInScope := predicate.NewPredicateFuncs(func(o client.Object) bool { return !r.ignored[o.GetName()] })

	return ctrl.NewControllerManagedBy(mgr).
		Named("image-clone-"+strings.ToLower(r.Kind.Name)).
		For(newObject[T](), builder.WithPredicates(inScope,
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

// Reconcile backs up one workload's images:
//  1. skip workloads that are ignored, being deleted, or serve the backup registry;
//  2. map every external image of containers and initContainers to its backup reference;
//  3. copy the images with the workload's own pull credentials, each verified complete before it counts;
//  4. provide the backup pull secret, if configured, in the workload's namespace;
//  5. patch all safely backed-up images (and that secret) in one patch (each image field guarded by a test);
//  6. report failures as Warning events and retry with backoff.
//
// While any image fails transiently nothing is patched, so the workload rolls out once, not once per image.
// Images that can never be copied as they stand are reported and do not hold the others back.
func (r *Reconciler[T]) Reconcile(ctx context.Context, obj T) (reconcile.Result, error) {
	log := ctrl.LoggerFrom(ctx).WithValues("workload", klog.KObj(obj), "kind", r.Kind.Name)
	ctx = ctrl.LoggerInto(ctx, log)

	if reason, err := r.skipReason(ctx, obj); err != nil || reason != "" {
		if reason != "" {
			log.V(1).Info("Skipping workload", "reason", reason)
		}
		return reconcile.Result{}, err
	}

	template := r.Kind.PodTemplate(obj)
	images := r.externalImages(template)
	if len(images) == 0 && !r.lacksBackupPullSecret(&template.Spec) {
		return reconcile.Result{}, r.refreshBackupPullSecret(ctx, obj, &template.Spec)
	}
	copyOpts, unusedSecrets, err := r.sourceCredentials(ctx, obj, images)
	if err != nil {
		return reconcile.Result{}, err
	}
	results := r.backUp(ctx, images, copyOpts)

	rewrites := map[string]string{}
	var transient, permanent, invalid []string
	var failed []backupResult
	for _, res := range results {
		switch {
		case res.err == nil:
			rewrites[res.image] = res.mapping.PodImage()
		case res.invalid:
			invalid = append(invalid, res.image)
		case registry.IsPermanent(res.err):
			permanent = append(permanent, res.image)
		default:
			transient = append(transient, res.image)
		}
		if res.err != nil {
			log.Error(res.err, "Backing up image failed", "image", res.image)
			failed = append(failed, res)
		}
	}
	if len(failed) > 0 {
		// One Event for all the failed images: the events API folds Events of the same type, reason and action
		// on the same object into one series that keeps the first note only, so one Event per image would show
		// just one of them (whichever was sent first).
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonBackupFailed, "BackUp", "%s", describeFailures(failed, unusedSecrets))
	}

	if len(transient) > 0 {
		return reconcile.Result{}, fmt.Errorf("backing up %s: will retry", strings.Join(transient, ", "))
	}
	if len(rewrites) > 0 || r.lacksBackupPullSecret(&template.Spec) {
		if err := r.pointAtBackups(ctx, obj, rewrites, results); err != nil {
			return reconcile.Result{}, err
		}
	}
	if len(permanent) > 0 {
		// Retried with backoff: the image may be published, or access granted, later.
		return reconcile.Result{}, fmt.Errorf("cannot back up %s", strings.Join(permanent, ", "))
	}
	if len(invalid) > 0 {
		// Retrying cannot fix an invalid reference; the spec change that fixes it triggers a new reconcile.
		return reconcile.Result{}, reconcile.TerminalError(fmt.Errorf("invalid image references: %s", strings.Join(invalid, ", ")))
	}
	return reconcile.Result{}, nil
}

// skipReason says why a workload is left alone, or "" if it is reconciled.
func (r *Reconciler[T]) skipReason(ctx context.Context, obj T) (string, error) {
	switch {
	case obj.GetDeletionTimestamp() != nil:
		return "being deleted", nil
	case r.ignored[obj.GetNamespace()]:
		return "namespace is ignored", nil
	case obj.GetAnnotations()[IgnoreAnnotation] == "true":
		return "workload has " + IgnoreAnnotation + "=true", nil
	}
	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, types.NamespacedName{Name: obj.GetNamespace()}, ns); err != nil {
		return "", fmt.Errorf("reading namespace %s for its %s annotation: %w", obj.GetNamespace(), IgnoreAnnotation, err)
	}
	if ns.Annotations[IgnoreAnnotation] == "true" {
		return "namespace has " + IgnoreAnnotation + "=true", nil
	}
	// Last, because it may read Services.
	service, err := newBackupServer(r.Options.Backup).serves(ctx, r.Client, obj, r.Kind.PodTemplate(obj))
	if err != nil || service == "" {
		return "", err
	}
	return "workload serves the backup registry (Service " + service + ")", nil
}

// sourceCredentials returns the copy options that make the copier pull images with the workload's own
// credentials, and the workload's pull secrets that could not be used, for the user to see.
func (r *Reconciler[T]) sourceCredentials(ctx context.Context, obj T, images []string) ([]registry.CopyOption, []string, error) {
	if r.pullSecrets == nil || len(images) == 0 {
		return nil, nil, nil
	}
	auth, unused, err := r.pullSecrets.sourceAuth(ctx, obj.GetNamespace(), &r.Kind.PodTemplate(obj).Spec)
	if err != nil {
		return nil, nil, err
	}
	return []registry.CopyOption{auth}, unused, nil
}

// pointAtBackups provides the backup pull secret, if configured, and patches the workload to the copies.
func (r *Reconciler[T]) pointAtBackups(ctx context.Context, obj T, rewrites map[string]string, results []backupResult) error {
	if r.backupSecret != nil {
		// Workloads of one namespace are often patched together (a new namespace, a controller start): the
		// namespace's copy is checked once per BackupPullSecretRefresh, not once per workload.
		if err := r.backupSecret.refresh(ctx, obj.GetNamespace()); err != nil {
			// Pods could not pull their copies without the secret: point them nowhere yet.
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonBackupFailed, "PatchImages", "%s",
				eventNote("Cannot point the workload at its backups: "+err.Error()))
			return err
		}
	}
	patched, err := r.patch(ctx, obj, rewrites)
	if err != nil {
		return err
	}
	if patched {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, ReasonImagesBackedUp, "PatchImages", "%s",
			describeBackups(results))
	}
	return nil
}

// lacksBackupPullSecret reports whether the pod template runs images from the backup registry but does not list
// the backup pull secret, e.g. because the secret was configured after the workload was backed up.
func (r *Reconciler[T]) lacksBackupPullSecret(spec *corev1.PodSpec) bool {
	return r.backupSecret != nil && !r.backupSecret.references(spec) && r.usesBackup(spec)
}

// usesBackup reports whether any container of spec runs an image from the backup registry.
func (r *Reconciler[T]) usesBackup(spec *corev1.PodSpec) bool {
	return slices.ContainsFunc(slices.Concat(spec.InitContainers, spec.Containers),
		func(c corev1.Container) bool { return r.Options.Backup.Contains(c.Image) })
}

// refreshBackupPullSecret keeps the namespace's copy of the backup pull secret in place and current for a workload
// that already runs from the backup: a rotated source, or a deleted copy, is fixed when a workload of the
// namespace is reconciled (every workload is, when the controller starts), at most once per
// Options.BackupPullSecretRefresh and namespace.
func (r *Reconciler[T]) refreshBackupPullSecret(ctx context.Context, obj T, spec *corev1.PodSpec) error {
	if r.backupSecret == nil || !r.backupSecret.references(spec) || !r.usesBackup(spec) {
		return nil
	}
	if err := r.backupSecret.refresh(ctx, obj.GetNamespace()); err != nil {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonBackupFailed, "PullSecret", "%s",
			eventNote("Cannot keep the backup pull secret of this namespace in place: "+err.Error()))
		return err
	}
	return nil
}

// externalImages returns the distinct images of the pod template that do not live in the backup registry yet.
func (r *Reconciler[T]) externalImages(template *corev1.PodTemplateSpec) []string {
	seen := map[string]bool{}
	for _, c := range slices.Concat(template.Spec.InitContainers, template.Spec.Containers) {
		if !r.Options.Backup.Contains(c.Image) {
			seen[c.Image] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// backupResult is the outcome of backing up one image.
type backupResult struct {
	image   string
	mapping imageref.Mapping
	digest  v1.Hash
	err     error
	invalid bool // the reference itself is unusable
}

func (r *Reconciler[T]) backUp(ctx context.Context, images []string, opts []registry.CopyOption) []backupResult {
	results := make([]backupResult, len(images))
	limit := make(chan struct{}, max(1, r.Options.MaxConcurrentImages))
	var wg sync.WaitGroup
	for i, image := range images {
		results[i].image = image
		mapping, err := r.Options.Backup.Map(image)
		if err != nil {
			results[i].err, results[i].invalid = err, true
			continue
		}
		results[i].mapping = mapping
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			results[i].digest, results[i].err = r.Copier.Copy(ctx, mapping.Source, mapping.Target, opts...)
		})
	}
	wg.Wait()
	return results
}

// patchAttempts bounds how often a patch that lost a race against another writer is retried on a fresh read
// before the workload goes back to the queue.
const patchAttempts = 3

// patch rewrites the images in one JSON patch (RFC 6902) that replaces only the image fields, each guarded by
// tests of the container's name and image as they were read. Writes by others to anything else — the
// Deployment controller updating status right after a workload is created, a user editing env — neither make
// it fail nor get overwritten. If a user changed one of those images (or reordered the containers) in the
// meantime, a test fails and the rewrite is computed again from a fresh read; images the fresh read no longer
// has are simply not rewritten.
//
// It reports whether this call patched the workload: a stale read of a workload that an earlier reconcile
// already patched ends up with nothing to change.
func (r *Reconciler[T]) patch(ctx context.Context, obj T, rewrites map[string]string) (bool, error) {
	log := ctrl.LoggerFrom(ctx)
	current := obj
	for attempt := 1; ; attempt++ {
		spec := &r.Kind.PodTemplate(current).Spec
		ops, changed := imagePatch(r.Kind.TemplatePath, spec, rewrites)
		addSecret := r.backupSecret != nil && !r.backupSecret.references(spec) && (len(changed) > 0 || r.lacksBackupPullSecret(spec))
		if addSecret {
			ops = append(ops, pullSecretPatch(r.Kind.TemplatePath, spec, r.backupSecret.name, current.GetResourceVersion())...)
		}
		if len(ops) == 0 {
			return false, nil // an earlier reconcile (or the user) already changed every image we would rewrite
		}
		body, err := json.Marshal(ops)
		if err != nil {
			return false, fmt.Errorf("encoding the image patch: %w", err)
		}
		target := newObject[T]()
		target.SetNamespace(obj.GetNamespace())
		target.SetName(obj.GetName())
		err = r.Client.Patch(ctx, target, client.RawPatch(types.JSONPatchType, body), client.FieldOwner(FieldOwner))
		if err == nil {
			workloadsPatched.WithLabelValues(r.Kind.Name).Inc()
			for _, image := range changed {
				log.Info("Pointed workload at backup", "image", image, "backup", rewrites[image])
			}
			if addSecret {
				log.Info("Added the backup pull secret to the pod template", "secret", r.backupSecret.name)
			}
			return len(changed) > 0, nil
		}
		// A failed test comes back as 422 Invalid; a conflict is not expected without a resourceVersion in the
		// patch, but means the same: the read was stale.
		if !apierrors.IsInvalid(err) && !apierrors.IsConflict(err) || attempt == patchAttempts {
			return false, fmt.Errorf("patching images: %w", err)
		}
		log.V(1).Info("Workload changed concurrently; patching a fresh read", "attempt", attempt, "error", err.Error())
		current = newObject[T]()
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(obj), current); err != nil {
			return false, fmt.Errorf("re-reading workload after a failed patch: %w", err)
		}
	}
}

// jsonPatchOp is one operation of a JSON patch (RFC 6902).
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// pullSecretPatch returns the JSON patch operations that add the pull secret secretName to spec (at
// templatePath in the object). Appending to an existing list needs no guard; creating the list does, since
// "add" would replace a list someone else created meanwhile, so it is guarded by the resourceVersion read.
func pullSecretPatch(templatePath string, spec *corev1.PodSpec, secretName, resourceVersion string) []jsonPatchOp {
	path := templatePath + "/spec/imagePullSecrets"
	ref := map[string]string{"name": secretName}
	if len(spec.ImagePullSecrets) > 0 {
		return []jsonPatchOp{{Op: "add", Path: path + "/-", Value: ref}}
	}
	return []jsonPatchOp{
		{Op: "test", Path: "/metadata/resourceVersion", Value: resourceVersion},
		{Op: "add", Path: path, Value: []map[string]string{ref}},
	}
}

// imagePatch returns the JSON patch operations that point every container of spec (at templatePath in the
// object) whose image has a rewrite at its backup, and the images changed. Each replacement is preceded by
// tests of the container's name and current image.
func imagePatch(templatePath string, spec *corev1.PodSpec, rewrites map[string]string) ([]jsonPatchOp, []string) {
	var ops []jsonPatchOp
	var changed []string
	for _, list := range []struct {
		field      string
		containers []corev1.Container
	}{{"initContainers", spec.InitContainers}, {"containers", spec.Containers}} {
		for i, c := range list.containers {
			backup, ok := rewrites[c.Image]
			if !ok {
				continue
			}
			path := fmt.Sprintf("%s/spec/%s/%d", templatePath, list.field, i)
			ops = append(ops,
				jsonPatchOp{Op: "test", Path: path + "/name", Value: c.Name},
				jsonPatchOp{Op: "test", Path: path + "/image", Value: c.Image},
				jsonPatchOp{Op: "replace", Path: path + "/image", Value: backup})
			changed = append(changed, c.Image)
		}
	}
	return ops, changed
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

// describeBackups renders "source → backup (digest)" for every image that was backed up.
func describeBackups(results []backupResult) string {
	var parts []string
	for _, res := range results {
		if res.err == nil {
			parts = append(parts, fmt.Sprintf("%s → %s (%s)", res.image, res.mapping.PodImage(), res.digest))
		}
	}
	return eventNote("Backed up " + strings.Join(parts, "; "))
}

// describeFailures tells the user which images failed, in plain words where possible, and the registry's
// errors, within the Event note's size limit: when they do not all fit, each gets an equal share.
//
// unusedSecrets are pull secrets the workload names that could not be used; they are mentioned first, since they
// may be why access was denied.
func describeFailures(failed []backupResult, unusedSecrets []string) string {
	const sep = "; "
	prefix := ""
	if len(unusedSecrets) > 0 {
		prefix = cutNote("Pull secrets not used: "+strings.Join(unusedSecrets, ", "), maxEventNote/4) + ". "
	}
	notes := make([]string, len(failed))
	length := len(prefix) + len(sep)*(len(failed)-1)
	for i, res := range failed {
		notes[i] = describeFailure(res)
		length += len(notes[i])
	}
	if length > maxEventNote {
		share := (maxEventNote - len(prefix) - len(sep)*(len(failed)-1)) / len(failed)
		for i := range notes {
			notes[i] = cutNote(notes[i], share)
		}
	}
	return eventNote(prefix + strings.Join(notes, sep))
}

// describeFailure tells the user which image failed, in plain words where possible, and the registry's error.
func describeFailure(res backupResult) string {
	if hint := registry.Explain(res.err); hint != "" {
		return fmt.Sprintf("Cannot back up image %s: %s: %v", res.image, hint, res.err)
	}
	return fmt.Sprintf("Cannot back up image %s: %v", res.image, res.err)
}

// maxEventNote is the events.k8s.io/v1 limit of an Event's note.
const maxEventNote = 1024

// eventNote cuts a note to the events.k8s.io/v1 limit; the apiserver rejects longer notes, and the event
// would be lost.
func eventNote(note string) string { return cutNote(note, maxEventNote) }

// cutNote cuts note to at most limit bytes, ending in "..." when cut, without splitting a UTF-8 sequence.
func cutNote(note string, limit int) string {
	if len(note) <= limit {
		return note
	}
	cut := max(0, limit-len("..."))
	for cut > 0 && !utf8.RuneStart(note[cut]) {
		cut--
	}
	return note[:cut] + "..."
}

// newObject returns an empty object of the kind, e.g. &appsv1.Deployment{} for T = *appsv1.Deployment.
func newObject[T client.Object]() T {
	return reflect.New(reflect.TypeFor[T]().Elem()).Interface().(T)
}
