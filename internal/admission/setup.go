package admission

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// SetupWithManager registers the webhook at Path on the manager's webhook server, for every kind of
// opts.Kinds. Every replica serves it: it reads through the manager's cache, which runs whether or not the
// replica leads.
func SetupWithManager(mgr ctrl.Manager, copies CopyFinder, opts Options) error {
	w, err := New(mgr, copies, opts)
	if err != nil {
		return err
	}
	// The cache starts its informers when the manager starts, so the first request does not wait for a sync
	// (only the leader's controllers would otherwise start them).
	for _, obj := range []client.Object{&corev1.Namespace{}, &corev1.Service{}} {
		if _, isService := obj.(*corev1.Service); isService && !workload.ReadsServices(opts.Backup) {
			continue
		}
		if _, err := mgr.GetCache().GetInformer(context.Background(), obj); err != nil {
			return fmt.Errorf("starting the informer the webhook reads %T through: %w", obj, err)
		}
	}
	mgr.GetWebhookServer().Register(Path, &admission.Webhook{Handler: w, RecoverPanic: ptr.To(true)})
	return nil
}

// New returns the webhook for the kinds of opts.Kinds (all of workload.KindNames if empty), reading Namespaces and Services through the
// manager's cache and pull secrets through its API reader.
func New(mgr ctrl.Manager, copies CopyFinder, opts Options) (*Webhook, error) {
	if opts.Budget <= 0 {
		opts.Budget = DefaultBudget
	}
	w := &Webhook{
		policy:  workload.NewPolicy(opts.Backup, opts.IgnoredNamespaces, cacheFirst{cache: mgr.GetClient(), api: mgr.GetAPIReader()}),
		copies:  copies,
		opts:    opts,
		decoder: admission.NewDecoder(mgr.GetScheme()),
		secrets: &secretPresence{reader: mgr.GetAPIReader(), name: opts.BackupPullSecret, known: cache.NewLRUExpireCache(secretPresenceSize)},
		kinds:   map[schema.GroupKind]rewriter{},
	}
	if opts.WorkloadPullSecrets {
		w.pullSecrets = &workload.PullSecrets{Reader: mgr.GetAPIReader(), TTL: opts.PullSecretsTTL}
	}
	kinds := opts.Kinds
	if len(kinds) == 0 {
		kinds = workload.KindNames
	}
	for _, name := range kinds {
		var err error
		switch name {
		case workload.Deployments.Name:
			err = addKind(w, mgr, workload.Deployments)
		case workload.DaemonSets.Name:
			err = addKind(w, mgr, workload.DaemonSets)
		case workload.StatefulSets.Name:
			err = addKind(w, mgr, workload.StatefulSets)
		case workload.CronJobs.Name:
			err = addKind(w, mgr, workload.CronJobs)
		case workload.Jobs.Name:
			err = addKind(w, mgr, workload.Jobs)
		default:
			err = fmt.Errorf("unknown workload kind %q", name)
		}
		if err != nil {
			return nil, err
		}
	}
	return w, nil
}

// addKind makes w rewrite the workloads of kind.
func addKind[T client.Object](w *Webhook, mgr ctrl.Manager, kind workload.Kind[T]) error {
	gvk, err := apiutil.GVKForObject(workload.NewObject[T](), mgr.GetScheme())
	if err != nil {
		return fmt.Errorf("finding the API group of %s: %w", kind.Name, err)
	}
	w.kinds[gvk.GroupKind()] = kindRewriter[T]{kind: kind}
	return nil
}

// cacheFirst reads through the manager's cache and asks the API server only for what the cache does not hold
// (yet): a Deployment applied together with its new Namespace may reach the webhook before the Namespace
// reaches the cache.
type cacheFirst struct {
	cache, api client.Reader
}

func (c cacheFirst) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := c.cache.Get(ctx, key, obj, opts...)
	if apierrors.IsNotFound(err) {
		return c.api.Get(ctx, key, obj, opts...)
	}
	return err
}

func (c cacheFirst) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return c.cache.List(ctx, list, opts...)
}

// secretPresenceSize bounds how many namespaces the webhook remembers holding the backup pull secret.
const secretPresenceSize = 10000

// secretPresenceTTL is how long a namespace is remembered to hold the backup pull secret: the controller does
// not delete it, so a short memory only spares most requests one read.
const secretPresenceTTL = time.Minute

// secretPresence tells whether a namespace holds the backup pull secret. It reads the Secret's metadata only,
// past the cache, and remembers the namespaces that hold it for a while.
type secretPresence struct {
	reader client.Reader
	name   string
	known  *cache.LRUExpireCache
}

// present reports whether namespace holds the Secret.
func (s *secretPresence) present(ctx context.Context, namespace string) (bool, error) {
	if _, ok := s.known.Get(namespace); ok {
		return true, nil
	}
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	switch err := s.reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: s.name}, meta); {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading backup pull secret %s/%s: %w", namespace, s.name, err)
	}
	s.known.Add(namespace, struct{}{}, secretPresenceTTL)
	return true, nil
}
