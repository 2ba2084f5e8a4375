package admission

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// Path is where the webhook is served; the MutatingWebhookConfiguration's clientConfig names it.
const Path = "/mutate-workloads"

// DefaultBudget bounds the network work of one admission request: far below the API server's timeout for the
// webhook (at most 5 s), so that a slow registry costs a create a second, never a failure.
const DefaultBudget = time.Second

// CopyFinder tells whether the backup registry holds a complete copy, without copying; *registry.Copier is the
// one used outside tests.
type CopyFinder interface {
	Lookup(ctx context.Context, req registry.CopyRequest) (v1.Hash, error)
}

// Options configure the webhook; they are built from the same flags as the reconciler's.
type Options struct {
	// Backup is the registry (and path prefix) that copies go to.
	Backup imageref.Backup
	// IgnoredNamespaces are never rewritten (the webhook configuration's namespaceSelector keeps them out too).
	IgnoredNamespaces []string
	// WorkloadPullSecrets requires the workload's own pull secrets to prove access to each source, as the
	// reconciler does.
	WorkloadPullSecrets bool
	// PullSecretsTTL is how long the webhook reuses the pull secrets it read for a namespace, ServiceAccount
	// and list of secret names, so that most requests cost no read of the API server (0 reads every time).
	PullSecretsTTL time.Duration
	// BackupPullSecret, if set, is added to rewritten pod templates; a namespace that does not hold it yet is
	// left to the reconciler, which creates it there.
	BackupPullSecret string
	// Budget bounds the network work of one request (DefaultBudget if 0).
	Budget time.Duration
	// Kinds names the workload kinds rewritten (workload.KindNames; all of them if empty); requests for
	// others are admitted unchanged.
	Kinds []string
}

// Webhook rewrites the pod templates of workloads at admission.
type Webhook struct {
	policy      *workload.Policy
	pullSecrets *workload.PullSecrets
	copies      CopyFinder
	opts        Options
	decoder     admission.Decoder
	secrets     *secretPresence
	kinds       map[schema.GroupKind]rewriter
}

// rewriter decodes the objects of one kind and returns the patch that points them at their copies.
type rewriter interface {
	kindName() string
	rewrite(ctx context.Context, w *Webhook, req admission.Request) ([]workload.PatchOp, string, error)
}

// Handle answers one admission request. It always allows the object: it only ever adds a patch.
func (w *Webhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	kind := req.Kind.Kind
	rw, ok := w.kinds[schema.GroupKind{Group: req.Kind.Group, Kind: req.Kind.Kind}]
	result := resultSkipped
	var ops []workload.PatchOp
	log := ctrl.LoggerFrom(ctx).WithValues("workload", klog.KRef(req.Namespace, req.Name), "kind", kind, "operation", req.Operation)
	ctx = ctrl.LoggerInto(ctx, log)
	if ok && (req.Operation == admissionv1.Create || req.Operation == admissionv1.Update) && req.SubResource == "" {
		kind = rw.kindName()
		budget, cancel := context.WithTimeout(ctx, w.opts.Budget)
		var err error
		ops, result, err = rw.rewrite(budget, w, req)
		cancel()
		switch {
		case err != nil && len(ops) == 0:
			log.Info("Admitting the workload unchanged; the reconciler will back it up", "error", err.Error())
		case err != nil:
			log.Info("Rewrote the images whose copies were found; the reconciler will back up the others", "error", err.Error())
		}
	}
	requestsTotal.WithLabelValues(kind, result).Inc()
	requestDuration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	if len(ops) == 0 {
		return admission.Allowed("")
	}
	patch := make([]jsonpatch.JsonPatchOperation, 0, len(ops))
	for _, op := range ops {
		// The patch applies to the very object it was computed from: the reconciler's guards are not needed.
		if op.Op != "test" {
			patch = append(patch, jsonpatch.JsonPatchOperation{Operation: op.Op, Path: op.Path, Value: op.Value})
		}
	}
	return admission.Patched("", patch...)
}

// kindRewriter is the rewriter of the workload kind T.
type kindRewriter[T client.Object] struct {
	kind workload.Kind[T]
}

func (k kindRewriter[T]) kindName() string { return k.kind.Name }

// rewrite returns the patch for one object of the kind and the request's result:
//  0. skip an UPDATE of a kind whose template cannot change (Jobs);
//  1. skip what the reconciler skips (opt-outs, ignored namespaces, the backup registry's own workloads);
//  2. look up the copy of every external image, all at once within the budget: on UPDATE, a copy the stored
//     object already runs from is kept as the reconciler keeps it (the backup is asked, not the source, so a
//     GitOps re-apply is rewritten even while the source registry is down); otherwise the copy must exist at
//     the digest the source has now;
//  3. with a backup pull secret, add it, but only where the namespace holds it already;
//  4. rewrite every image whose copy was found.
func (k kindRewriter[T]) rewrite(ctx context.Context, w *Webhook, req admission.Request) ([]workload.PatchOp, string, error) {
	if k.kind.ImmutableTemplate && req.Operation != admissionv1.Create {
		// Its template cannot change: a patch of it would fail the request, not only the rewrite.
		return nil, resultSkipped, nil
	}
	obj := workload.NewObject[T]()
	if err := w.decoder.DecodeRaw(req.Object, obj); err != nil {
		return nil, resultError, fmt.Errorf("decoding the %s: %w", k.kind.Name, err)
	}
	if obj.GetNamespace() == "" {
		obj.SetNamespace(req.Namespace) // a CREATE may leave it to the URL
	}
	template := k.kind.PodTemplate(obj)
	if reason, err := w.policy.SkipReason(ctx, obj, template); err != nil || reason != "" {
		if err != nil {
			return nil, resultError, err
		}
		ctrl.LoggerFrom(ctx).V(1).Info("Skipping workload", "reason", reason)
		return nil, resultSkipped, nil
	}
	running := map[string]bool{}
	if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
		old := workload.NewObject[T]()
		if err := w.decoder.DecodeRaw(req.OldObject, old); err != nil {
			return nil, resultError, fmt.Errorf("decoding the stored %s: %w", k.kind.Name, err)
		}
		spec := &k.kind.PodTemplate(old).Spec
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			running[c.Image] = true
		}
	}

	spec := &template.Spec
	found, result, err := w.findCopies(ctx, obj.GetNamespace(), spec, running)
	if len(found) == 0 {
		return nil, result, err
	}
	ops, _ := workload.ImageOps(k.kind.TemplatePath, spec, found)
	if w.opts.BackupPullSecret != "" && !workload.ListsPullSecret(spec, w.opts.BackupPullSecret) {
		// Pods could not pull their copies without it.
		switch present, serr := w.secrets.present(ctx, obj.GetNamespace()); {
		case serr != nil:
			return nil, resultError, serr
		case !present:
			ctrl.LoggerFrom(ctx).V(1).Info("The namespace has no backup pull secret yet; leaving the workload to the reconciler", "secret", w.opts.BackupPullSecret)
			return nil, resultNoCopy, nil
		}
		ops = append(ops, workload.PullSecretOps(k.kind.TemplatePath, spec, w.opts.BackupPullSecret, "")...)
	}
	for image, backup := range found {
		ctrl.LoggerFrom(ctx).V(1).Info("Pointing workload at backup at admission", "image", image, "backup", backup)
	}
	return ops, resultRewritten, err // err: an image whose copy could not be looked up, left to the reconciler
}

// findCopies looks up the copy of every external image of spec at once and returns the rewrites of those that
// exist, with the result for the request if it rewrote nothing (or rewrote only part) and the first error.
// Images in running are copies the stored object runs from already (see rewrite). Copies spec already names
// must, with a backup pull secret that rewriting would add, prove the workload's access too, as in the
// reconciler: adding the secret hands the workload every copy it names.
func (w *Webhook) findCopies(ctx context.Context, namespace string, spec *corev1.PodSpec, running map[string]bool) (map[string]string, string, error) {
	images := w.policy.Images(spec)
	proveNamed := w.opts.BackupPullSecret != "" && !workload.ListsPullSecret(spec, w.opts.BackupPullSecret)
	var lookups []workload.Image
	for _, img := range images {
		if img.Err == nil && (!img.Keep || proveNamed && w.pullSecrets != nil) {
			lookups = append(lookups, img)
		}
	}
	if !slices.ContainsFunc(lookups, func(img workload.Image) bool { return !img.Keep }) {
		return nil, resultSkipped, nil // nothing external to rewrite
	}

	creds := w.credentials(namespace, spec)
	errs := make([]error, len(lookups))
	var wg sync.WaitGroup
	for i, img := range lookups {
		keep := img.Keep || running[img.Mapping.PodImage()]
		wg.Go(func() {
			_, errs[i] = w.copies.Lookup(ctx, registry.CopyRequest{
				Source: img.Mapping.Source, Target: img.Mapping.Target, Credentials: creds,
				KeepExisting: keep, ProveAccess: keep && w.pullSecrets != nil})
		})
	}
	wg.Wait()

	found := map[string]string{}
	result := resultRewritten
	var firstErr error
	for i, img := range lookups {
		switch err := errs[i]; {
		case err == nil:
			if !img.Keep {
				found[img.Name] = img.Mapping.PodImage()
			}
		case errors.Is(err, registry.ErrNotBackedUp):
			if result == resultRewritten {
				result = resultNoCopy
			}
		default:
			if img.Keep {
				// A copy the workload names that its credentials cannot read: no secret, and so no rewrite.
				return nil, resultError, fmt.Errorf("proving access to %s for the copy %s: %w", img.Mapping.Source, img.Name, err)
			}
			result = resultError
			if firstErr == nil {
				firstErr = fmt.Errorf("looking up the copy of %s: %w", img.Name, err)
			}
		}
	}
	if len(found) > 0 {
		result = resultRewritten
	}
	return found, result, firstErr
}

// credentials returns the workload's pull credentials, read at most once per request and only if a lookup
// needs them; nil (the copier's keychain) unless WorkloadPullSecrets.
func (w *Webhook) credentials(namespace string, spec *corev1.PodSpec) registry.CredentialSource {
	if w.pullSecrets == nil {
		return nil
	}
	var once sync.Once
	var creds *registry.Credentials
	var err error
	return func(ctx context.Context) (*registry.Credentials, error) {
		once.Do(func() { creds, _, err = w.pullSecrets.Credentials(ctx, namespace, spec) })
		return creds, err
	}
}
