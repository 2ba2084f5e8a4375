package workload

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// countingReader counts the reads that reach the API (here a fake client: what is tested is how often
// PullSecrets asks, not what the API server answers).
type countingReader struct {
	client.Reader
	gets atomic.Int32
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.gets.Add(1)
	return c.Reader.Get(ctx, key, obj, opts...)
}

func TestPullSecretsTTL(t *testing.T) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "default"},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "regcred"},
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com":{"auth":"dTpw"}}}`)}}
	reader := &countingReader{Reader: fake.NewClientBuilder().WithObjects(sa, secret).Build()}
	ctx := context.Background()
	spec := &corev1.PodSpec{}

	fresh := &PullSecrets{Reader: reader}
	for range 2 {
		if _, _, err := fresh.Credentials(ctx, "apps", spec); err != nil {
			t.Fatal(err)
		}
	}
	if got := reader.gets.Load(); got != 4 {
		t.Fatalf("without a TTL: %d reads for two calls, want 4 (ServiceAccount and Secret each time)", got)
	}

	reader.gets.Store(0)
	remembering := &PullSecrets{Reader: reader, TTL: time.Hour}
	first, _, err := remembering.Credentials(ctx, "apps", spec)
	if err != nil || first.ID == "" {
		t.Fatalf("credentials %+v, %v; want the Secret's", first, err)
	}
	again, _, _ := remembering.Credentials(ctx, "apps", spec)
	if got := reader.gets.Load(); got != 2 || again.ID != first.ID {
		t.Errorf("with a TTL: %d reads for two calls (want 2), IDs %q and %q", got, first.ID, again.ID)
	}
	if _, _, err := remembering.Credentials(ctx, "other", spec); err != nil {
		t.Fatal(err)
	}
	if got := reader.gets.Load(); got != 3 {
		t.Errorf("another namespace must be read, not remembered: %d reads, want 3", got)
	}
}
