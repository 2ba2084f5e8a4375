package admission

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// TestCacheFirst stands a cache that lags behind the API server with two fake clients: what is tested is
// which one is asked.
func TestCacheFirst(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "new", Annotations: map[string]string{"a": "b"}}}
	r := cacheFirst{cache: fake.NewClientBuilder().Build(), api: fake.NewClientBuilder().WithObjects(ns).Build()}
	got := &corev1.Namespace{}
	if err := r.Get(context.Background(), client.ObjectKey{Name: "new"}, got); err != nil || got.Annotations["a"] != "b" {
		t.Fatalf("a Namespace the cache does not hold yet: %v, %+v", err, got)
	}
	if err := r.Get(context.Background(), client.ObjectKey{Name: "gone"}, got); !apierrors.IsNotFound(err) {
		t.Fatalf("a Namespace neither holds: %v, want NotFound", err)
	}
}
