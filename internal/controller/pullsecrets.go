package controller

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/dockerconfig"
)

// ManagedByLabel marks the backup pull secrets the controller created, which it keeps in step with their source;
// a Secret of the same name without the label belongs to someone else and is left alone.
const ManagedByLabel = "app.kubernetes.io/managed-by"

// managedBy is the value of ManagedByLabel on the controller's Secrets.
const managedBy = "image-clone-controller"

// backupPullSecret provides the pull secret of a private backup registry in the namespaces of the workloads
// that are pointed at it, copied from the Secret of the same name in the controller's own namespace.
type backupPullSecret struct {
	client client.Client
	reader client.Reader
	// name is the Secret's name, in source's namespace and in every workload namespace.
	name   string
	source string // the controller's namespace

	// every is how often at most refresh checks one namespace's copy, so that the workloads of a namespace
	// reconciled together (at startup, say) cost two reads, not two each.
	every time.Duration

	mu sync.Mutex
	// checked holds when each namespace's copy was last made equal to the source.
	checked map[string]time.Time
}

// refresh is ensure, skipped if namespace's copy was checked less than b.every ago.
func (b *backupPullSecret) refresh(ctx context.Context, namespace string) error {
	b.mu.Lock()
	last, ok := b.checked[namespace]
	b.mu.Unlock()
	if ok && time.Since(last) < b.every {
		return nil
	}
	return b.ensure(ctx, namespace)
}

func (b *backupPullSecret) markChecked(namespace string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.checked == nil {
		b.checked = map[string]time.Time{}
	}
	b.checked[namespace] = time.Now()
}

// ensure makes the pull secret exist in namespace. A Secret of that name that the controller did not create is
// used as it is (the operator provides it some other way); one the controller created is kept equal to the
// source, so rotating the source rotates every copy.
func (b *backupPullSecret) ensure(ctx context.Context, namespace string) error {
	src := &corev1.Secret{}
	if err := b.reader.Get(ctx, types.NamespacedName{Namespace: b.source, Name: b.name}, src); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("backup pull secret %s/%s does not exist: create it (type %s) with read access to the backup registry, or drop --backup-pull-secret", b.source, b.name, corev1.SecretTypeDockerConfigJson)
		}
		return fmt.Errorf("reading backup pull secret %s/%s: %w", b.source, b.name, err)
	}
	if _, ok := dockerconfig.SecretKey(*src); !ok {
		return fmt.Errorf("backup pull secret %s/%s is of type %q without credentials; want type %s", b.source, b.name, src.Type, corev1.SecretTypeDockerConfigJson)
	}

	current := &corev1.Secret{}
	err := b.reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: b.name}, current)
	switch {
	case apierrors.IsNotFound(err):
		created := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Namespace:   namespace,
				Name:        b.name,
				Labels:      map[string]string{ManagedByLabel: managedBy},
				Annotations: map[string]string{"image-clone-controller.io/source": b.source + "/" + b.name},
			},
			Type: src.Type,
			Data: src.Data,
		}
		if err := b.client.Create(ctx, created, client.FieldOwner(FieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating backup pull secret %s/%s: %w", namespace, b.name, err)
		}
		ctrl.LoggerFrom(ctx).Info("Created backup pull secret", "secret", klog.KRef(namespace, b.name))
		b.markChecked(namespace)
		return nil
	case err != nil:
		return fmt.Errorf("reading backup pull secret %s/%s: %w", namespace, b.name, err)
	case current.Labels[ManagedByLabel] != managedBy:
		b.markChecked(namespace)
		return nil // the operator's own Secret
	case current.Type != src.Type:
		return fmt.Errorf("backup pull secret %s/%s has type %q but its source %s/%s has %q: delete it to have it created again",
			namespace, b.name, current.Type, b.source, b.name, src.Type)
	case maps.EqualFunc(current.Data, src.Data, func(a, b []byte) bool { return string(a) == string(b) }):
		b.markChecked(namespace)
		return nil
	}
	current.Data = src.Data
	if err := b.client.Update(ctx, current, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("updating backup pull secret %s/%s: %w", namespace, b.name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Updated backup pull secret from its source", "secret", klog.KRef(namespace, b.name))
	b.markChecked(namespace)
	return nil
}
