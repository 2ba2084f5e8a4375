package workload

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
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

func TestPullSecretsTTLExpires(t *testing.T) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "default"}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "regcred"},
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com":{"auth":"dTpw"}}}`)}}
	api := fake.NewClientBuilder().WithObjects(sa, secret).Build()
	reader := &countingReader{Reader: api}
	ctx := context.Background()
	clock := clocktesting.NewFakeClock(time.Now())
	p := &PullSecrets{Reader: reader, TTL: time.Minute, Clock: clock}

	before, _, err := p.Credentials(ctx, "apps", &corev1.PodSpec{})
	if err != nil || before.ID != "" {
		t.Fatalf("credentials %+v, %v; want none (the ServiceAccount names no pull secret)", before, err)
	}
	sa.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
	if err := api.Update(ctx, sa); err != nil {
		t.Fatal(err)
	}
	clock.Step(59 * time.Second)
	if within, _, _ := p.Credentials(ctx, "apps", &corev1.PodSpec{}); within.ID != "" || reader.gets.Load() != 1 {
		t.Errorf("within the TTL: credentials %q after %d reads; want what was read first, after 1 read", within.ID, reader.gets.Load())
	}
	clock.Step(2 * time.Second)
	after, _, err := p.Credentials(ctx, "apps", &corev1.PodSpec{})
	if err != nil || after.ID == "" {
		t.Errorf("once the TTL passed: credentials %+v, %v; want the ServiceAccount's new pull secret", after, err)
	}
}

// blockingReader holds every Get until release is closed, and counts them.
type blockingReader struct {
	countingReader
	release chan struct{}
}

func (b *blockingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	<-b.release
	return b.countingReader.Get(ctx, key, obj, opts...)
}

func TestPullSecretsShareConcurrentReads(t *testing.T) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "default"}}
	reader := &blockingReader{countingReader: countingReader{Reader: fake.NewClientBuilder().WithObjects(sa).Build()},
		release: make(chan struct{})}
	p := &PullSecrets{Reader: reader, TTL: time.Hour}
	const callers = 20
	var started, done sync.WaitGroup
	started.Add(callers)
	errs := make(chan error, callers)
	for range callers {
		done.Go(func() {
			started.Done()
			_, _, err := p.Credentials(context.Background(), "apps", &corev1.PodSpec{})
			errs <- err
		})
	}
	started.Wait()
	close(reader.release)
	done.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := reader.gets.Load(); got != 1 {
		t.Errorf("%d callers at once read the ServiceAccount %d times, want once", callers, got)
	}
}

func TestPullSecretsSharedReadLeavesACancelledCaller(t *testing.T) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "default"}}
	reader := &blockingReader{countingReader: countingReader{Reader: fake.NewClientBuilder().WithObjects(sa).Build()},
		release: make(chan struct{})}
	p := &PullSecrets{Reader: reader, TTL: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, _, err := p.Credentials(ctx, "apps", &corev1.PodSpec{})
		first <- err
	}()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled caller got %v, want its context's error", err)
	}
	close(reader.release)
	// The read the cancelled caller started runs to its end, and is remembered.
	if _, _, err := p.Credentials(context.Background(), "apps", &corev1.PodSpec{}); err != nil {
		t.Fatal(err)
	}
	if got := reader.gets.Load(); got != 1 {
		t.Errorf("the ServiceAccount was read %d times, want once", got)
	}
}

func TestPullSecretsDoNotRememberWhatWasMissing(t *testing.T) {
	api := fake.NewClientBuilder().Build()
	reader := &countingReader{Reader: api}
	ctx := context.Background()
	p := &PullSecrets{Reader: reader, TTL: time.Hour}
	spec := &corev1.PodSpec{ServiceAccountName: "puller"}

	if _, _, err := p.Credentials(ctx, "apps", spec); err != nil {
		t.Fatal(err)
	}
	// The ServiceAccount is created after the workload, naming a Secret that is created later still.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "puller"},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}}}
	if err := api.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	if creds, unused, err := p.Credentials(ctx, "apps", spec); err != nil || creds.ID != "" || len(unused) != 1 {
		t.Fatalf("with the ServiceAccount only: credentials %+v, unused %v, %v; want none, regcred not found", creds, unused, err)
	}
	if err := api.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "regcred"},
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com":{"auth":"dTpw"}}}`)}}); err != nil {
		t.Fatal(err)
	}
	creds, _, err := p.Credentials(ctx, "apps", spec)
	if err != nil || creds.ID == "" {
		t.Fatalf("with both: credentials %+v, %v; want the Secret's", creds, err)
	}
	reads := reader.gets.Load()
	if again, _, _ := p.Credentials(ctx, "apps", spec); again.ID != creds.ID || reader.gets.Load() != reads {
		t.Errorf("a complete read must be remembered: %d more reads", reader.gets.Load()-reads)
	}
}
