package registrytest_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// client opens a connection per request: net/http sends a GET again when a reused connection closes without an
// answer, which would count a fault twice.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// get sends GET path to host, with basic credentials when user is set, and returns the status (0 when the
// connection was closed without an answer).
func get(t *testing.T, host, path, user, pass string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// statuses returns the statuses the registry recorded, in order.
func statuses(r *registrytest.Registry) []int {
	var out []int
	for _, req := range r.Requests() {
		out = append(out, req.Status)
	}
	return out
}

func newRegistry(t *testing.T) *registrytest.Registry {
	t.Helper()
	r := registrytest.NewInProcess()
	t.Cleanup(r.Close)
	return r
}

func TestBasicAuthRefusesWithoutCredentialsAndCountsWhatClientsSaw(t *testing.T) {
	r := newRegistry(t)
	r.Use(registrytest.BasicAuth("user", "pass"))

	if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusUnauthorized {
		t.Errorf("without credentials: %d, want 401", got)
	}
	if got := get(t, r.Host, "/v2/", "user", "wrong"); got != http.StatusUnauthorized {
		t.Errorf("with a wrong password: %d, want 401", got)
	}
	if got := get(t, r.Host, "/v2/", "user", "pass"); got != http.StatusOK {
		t.Errorf("with credentials: %d, want 200", got)
	}
	if got, want := statuses(r), []int{401, 401, 200}; !slices.Equal(got, want) {
		t.Errorf("recorded statuses %v, want %v: counting comes before the middleware", got, want)
	}
}

func TestUseAfterStartWhileRequestsAreServed(t *testing.T) {
	r := newRegistry(t)
	if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusOK {
		t.Fatalf("before Use: %d, want 200", got)
	}

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusOK && got != http.StatusUnauthorized {
					t.Errorf("while Use runs: %d", got)
				}
			}
		})
	}
	r.Use(registrytest.BasicAuth("user", "pass"))
	wg.Wait()

	if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusUnauthorized {
		t.Errorf("after Use: %d, want 401", got)
	}
	if got := len(r.Requests()); got != 1+4*20+1 {
		t.Errorf("%d requests recorded, want %d", got, 1+4*20+1)
	}
}

func TestMiddlewareRunsInTheOrderAdded(t *testing.T) {
	r := newRegistry(t)
	var mu sync.Mutex
	var order []string
	mark := func(name string) registrytest.Middleware {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
				next.ServeHTTP(w, req)
			})
		}
	}
	r.Use(mark("a"), mark("b"))
	r.Use(mark("c"))
	get(t, r.Host, "/v2/", "", "")
	if want := []string{"a", "b", "c"}; !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
}

func TestFaultsBreakOnlyMatchingRequestsAndCountHits(t *testing.T) {
	r := newRegistry(t)
	if _, err := r.PushImage("app:v1", 1, 1024); err != nil {
		t.Fatal(err)
	}
	faults := &registrytest.Faults{}
	r.Use(faults.Middleware)
	r.ResetRequests()

	faults.Set(registrytest.Fault{Name: "rate limit", Match: registrytest.Manifests, Status: http.StatusTooManyRequests, RetryAfter: "1"})
	if got := get(t, r.Host, "/v2/app/manifests/v1", "", ""); got != http.StatusTooManyRequests {
		t.Errorf("manifest: %d, want 429", got)
	}
	if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusOK {
		t.Errorf("not matched: %d, want 200", got)
	}
	if got := faults.Hits(); got != 1 {
		t.Errorf("%d hits, want 1", got)
	}
	if got := len(faults.HitTimes()); got != 1 {
		t.Errorf("%d hit times, want 1", got)
	}

	faults.Set(registrytest.Fault{Name: "down", Down: true})
	if got := get(t, r.Host, "/v2/", "", ""); got != 0 {
		t.Errorf("down: %d, want no answer", got)
	}
	if got := faults.Hits(); got != 1 {
		t.Errorf("%d hits since the new fault, want 1", got)
	}

	faults.Clear()
	if got := get(t, r.Host, "/v2/app/manifests/v1", "", ""); got != http.StatusOK {
		t.Errorf("cleared: %d, want 200", got)
	}
	if got, want := statuses(r), []int{429, 200, 0, 200}; !slices.Equal(got, want) {
		t.Errorf("recorded statuses %v, want %v", got, want)
	}
}

func TestTruncatedBlobIsCountedWithTheStatusSent(t *testing.T) {
	r := newRegistry(t)
	if _, err := r.PushImage("app:v1", 1, 64<<10); err != nil {
		t.Fatal(err)
	}
	faults := &registrytest.Faults{}
	r.Use(faults.Middleware)
	faults.Set(registrytest.Fault{Name: "truncate", Match: registrytest.BlobGets, Truncate: true})
	r.ResetRequests()

	img, err := remote.Image(mustRef(t, r.Host+"/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err == nil {
		_, err = io.ReadAll(rc)
		_ = rc.Close()
	}
	if err == nil {
		t.Fatal("a truncated blob read without an error")
	}
	if faults.Hits() == 0 {
		t.Error("no blob download was broken")
	}
	blobs := 0
	for _, req := range r.Requests() {
		if req.IsBlob() && req.Status == http.StatusOK {
			blobs++
		}
	}
	if blobs == 0 {
		t.Errorf("the truncated download is not recorded with its 200: %+v", r.Requests())
	}
}

func TestFrontCountsInFrontOfAnotherRegistry(t *testing.T) {
	backend := newRegistry(t)
	front := registrytest.Front(backend.Host, registrytest.BasicAuth("user", "pass"))
	t.Cleanup(front.Close)

	if front.Backend != backend.Host {
		t.Errorf("Backend %s, want %s", front.Backend, backend.Host)
	}
	get(t, front.Host, "/v2/", "", "")
	get(t, front.Host, "/v2/", "user", "pass")
	if got, want := statuses(front), []int{401, 200}; !slices.Equal(got, want) {
		t.Errorf("front recorded %v, want %v", got, want)
	}
	if got, want := statuses(backend), []int{200}; !slices.Equal(got, want) {
		t.Errorf("registry behind recorded %v, want %v", got, want)
	}
}

func TestSetDownIsCounted(t *testing.T) {
	r := newRegistry(t)
	r.SetDown(true)
	if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusServiceUnavailable {
		t.Errorf("down: %d, want 503", got)
	}
	r.SetDown(false)
	if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusOK {
		t.Errorf("up again: %d, want 200", got)
	}
	if got, want := statuses(r), []int{503, 200}; !slices.Equal(got, want) {
		t.Errorf("recorded %v, want %v", got, want)
	}
}

func TestTokenRealmServesReadsWithTheTokenItHandsOut(t *testing.T) {
	r := newRegistry(t)
	want, err := r.PushImage("app:v1", 1, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tokens := registrytest.Front(r.Host, registrytest.TokenRealm("anonymous-token"))
	t.Cleanup(tokens.Close)

	if got := get(t, tokens.Host, "/v2/app/manifests/v1", "", ""); got != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", got)
	}
	desc, err := remote.Get(mustRef(t, tokens.Host+"/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != want {
		t.Errorf("digest %s, want %s", desc.Digest, want)
	}
	realm := 0
	for _, req := range tokens.Requests() {
		if req.Path == registrytest.TokenPath {
			realm++
		}
	}
	if realm != 1 {
		t.Errorf("%d requests to the realm, want 1: %+v", realm, tokens.Requests())
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestResetMiddlewareServesAsStarted(t *testing.T) {
	r := newRegistry(t)
	r.Use(registrytest.BasicAuth("user", "pass"))
	if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusUnauthorized {
		t.Fatalf("with BasicAuth: %d, want 401", got)
	}
	r.ResetMiddleware()
	if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusOK {
		t.Errorf("after ResetMiddleware: %d, want 200", got)
	}
	r.Use(registrytest.BasicAuth("user", "pass"))
	if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusUnauthorized {
		t.Errorf("with BasicAuth again: %d, want 401", got)
	}
}
