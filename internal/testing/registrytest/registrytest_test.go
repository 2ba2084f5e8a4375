package registrytest_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

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
// statuses returns the statuses of the requests r recorded, once those still being served are recorded too: a
// request whose connection a fault closed is recorded when its handler returns, which may be after the client
// has moved on.
func statuses(r *registrytest.Registry) []int {
	var out []int
	for _, req := range r.SettledRequests() {
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
	// Requests are recorded as they finish, so the one left without an answer may come last.
	if got, want := slices.Sorted(slices.Values(statuses(r))), []int{0, 200, 200, 429}; !slices.Equal(got, want) {
		t.Errorf("recorded statuses %v, want %v", got, want)
	}
}

// breakBlobReads starts a registry holding a one-layer image whose blob reads break as f says, and returns
// the registry, the layer and the faults.
func breakBlobReads(t *testing.T, f registrytest.Fault) (*registrytest.Registry, v1.Layer, *registrytest.Faults) {
	t.Helper()
	r := newRegistry(t)
	layer := pushLayer(t, r, 64<<10)
	faults := &registrytest.Faults{}
	r.Use(faults.Middleware)
	f.Match = registrytest.BlobGets
	faults.Set(f)
	return r, layer, faults
}

func TestTruncatedBlobIsCountedWithTheStatusSent(t *testing.T) {
	r, layer, faults := breakBlobReads(t, registrytest.Fault{Name: "truncate", Truncate: true})
	r.ResetRequests()

	if readLayer(layer) == nil {
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
	get(t, r.Host, "/v2/", "", "")
	r.ResetMiddleware()
	get(t, r.Host, "/v2/", "", "")
	r.Use(registrytest.BasicAuth("user", "pass"))
	get(t, r.Host, "/v2/", "", "")
	if got, want := statuses(r), []int{401, 200, 401}; !slices.Equal(got, want) {
		t.Errorf("recorded statuses %v, want %v: refused with BasicAuth, served after the reset, refused again", got, want)
	}
}

// getAsync sends GET path to host in the background; the channel receives the status.
func getAsync(ctx context.Context, host, path string) <-chan int {
	done := make(chan int, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+path, nil)
		if err != nil {
			done <- -1
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			done <- 0
			return
		}
		_ = resp.Body.Close()
		done <- resp.StatusCode
	}()
	return done
}

// expectPending fails the test if status receives an answer within a moment.
func expectPending(t *testing.T, status <-chan int, what string) {
	t.Helper()
	select {
	case got := <-status:
		t.Fatalf("%s was answered %d while it should be held", what, got)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestGateHoldsMatchingRequestsUntilOpened(t *testing.T) {
	r := newRegistry(t)
	gate := registrytest.NewGate(func(req *http.Request) bool { return req.URL.Path == "/v2/held" })
	t.Cleanup(gate.Open)
	r.Use(gate.Middleware)

	held := getAsync(context.Background(), r.Host, "/v2/held")
	select {
	case <-gate.Held():
	case <-time.After(5 * time.Second):
		t.Fatal("the gate never held the request")
	}
	expectPending(t, held, "a matching request")
	if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusOK {
		t.Errorf("a request the gate does not match: %d, want 200", got)
	}

	ctx, giveUp := context.WithCancel(context.Background())
	abandoned := getAsync(ctx, r.Host, "/v2/held")
	expectPending(t, abandoned, "a second matching request")
	giveUp()
	if got := <-abandoned; got != 0 {
		t.Errorf("abandoned request: %d, want no answer", got)
	}
	waitRecorded(t, r, 2) // the gate has let go of the abandoned request

	gate.Open()
	if got := <-held; got != http.StatusNotFound {
		t.Errorf("held request after Open: %d, want the registry's 404", got)
	}
	if got := get(t, r.Host, "/v2/held", "", ""); got != http.StatusNotFound {
		t.Errorf("matching request after Open: %d, want 404", got)
	}
	waitRecorded(t, r, 4)
	if got, want := slices.Sorted(slices.Values(statuses(r))), []int{0, 200, 404, 404}; !slices.Equal(got, want) { // recorded as they finish
		t.Errorf("recorded statuses %v, want %v: the abandoned request was answered with nothing", got, want)
	}
}

// waitRecorded waits until r has recorded n requests: a request is recorded once its handler is done, which
// may be after its client has moved on.
func waitRecorded(t *testing.T, r *registrytest.Registry, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(r.Requests()) < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests recorded, want %d", len(r.Requests()), n)
		}
	}
}

func TestRendezvousHoldsTheFirstRequestsUntilEveryPartyIsAsked(t *testing.T) {
	a, b := newRegistry(t), newRegistry(t)
	meet := registrytest.NewRendezvous(func(req *http.Request) bool { return req.URL.Path == "/v2/" }, "a", "b")
	a.Use(meet.At("a"))
	b.Use(meet.At("b"))

	if got := get(t, a.Host, "/v2/other", "", ""); got != http.StatusNotFound {
		t.Errorf("a request the rendezvous does not match: %d, want 404", got)
	}
	first := getAsync(context.Background(), a.Host, "/v2/")
	expectPending(t, first, "the first request to a")
	if meet.Met() {
		t.Error("met with one party asked")
	}
	if got := get(t, b.Host, "/v2/", "", ""); got != http.StatusOK {
		t.Errorf("the first request to b: %d, want 200", got)
	}
	if got := <-first; got != http.StatusOK {
		t.Errorf("the first request to a: %d, want 200", got)
	}
	if !meet.Met() {
		t.Error("not met with both parties asked")
	}
	if got := get(t, a.Host, "/v2/", "", ""); got != http.StatusOK {
		t.Errorf("a later request to a: %d, want 200 at once", got)
	}
}

// pushLayer pushes a one-layer image of size bytes to app:v1 on r and returns its layer, whose blob is read
// through the proxy when it is opened.
func pushLayer(t *testing.T, r *registrytest.Registry, size int64) v1.Layer {
	t.Helper()
	if _, err := r.PushImage("app:v1", 1, size); err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(mustRef(t, r.Host+"/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return layers[0]
}

// readLayer reads the blob of layer to its end and returns what went wrong.
func readLayer(layer v1.Layer) error {
	rc, err := layer.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	return err
}

func TestConcurrencyCountsRequestsInServiceAtTheSameTime(t *testing.T) {
	r := newRegistry(t)
	d, err := pushLayer(t, r, 256<<10).Digest()
	if err != nil {
		t.Fatal(err)
	}
	blob := "/v2/app/blobs/" + d.String()

	// One request after the other, on one connection: each is out of service before its client sees the end
	// of its answer and sends the next.
	serial := &registrytest.Concurrency{Match: registrytest.BlobGets}
	r.Use(serial.Middleware)
	keepAlive := &http.Client{}
	for range 20 {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+r.Host+blob, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := keepAlive.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	if got := get(t, r.Host, "/v2/", "", ""); got != http.StatusOK {
		t.Errorf("a request it does not match: %d, want 200", got)
	}
	if serial.Most() != 1 || serial.Total() != 20 {
		t.Errorf("one after the other: most %d of %d, want 1 of 20", serial.Most(), serial.Total())
	}

	r.ResetMiddleware()
	parallel := &registrytest.Concurrency{Match: registrytest.BlobGets, Delay: 50 * time.Millisecond}
	r.Use(parallel.Middleware)
	var answers []<-chan int
	for range 3 {
		answers = append(answers, getAsync(context.Background(), r.Host, blob))
	}
	for _, a := range answers {
		if got := <-a; got != http.StatusOK {
			t.Errorf("blob read: %d, want 200", got)
		}
	}
	if parallel.Most() != 3 || parallel.Total() != 3 {
		t.Errorf("at the same time: most %d of %d, want 3 of 3", parallel.Most(), parallel.Total())
	}
}

func TestSwallowUploadsAcceptsBlobsItDoesNotStore(t *testing.T) {
	r := newRegistry(t)
	var losing atomic.Bool
	r.Use(registrytest.SwallowUploads(func(*http.Request) bool { return losing.Load() }))

	for _, lose := range []bool{true, false} {
		losing.Store(lose)
		img, err := random.Image(1024, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(mustRef(t, r.Host+"/app:v1"), img); err != nil {
			t.Fatalf("losing %t: the push failed: %v", lose, err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		d, err := layers[0].Digest()
		if err != nil {
			t.Fatal(err)
		}
		got := get(t, r.Backend, "/v2/app/blobs/"+d.String(), "", "")
		if want := map[bool]int{true: http.StatusNotFound, false: http.StatusOK}[lose]; got != want {
			t.Errorf("losing %t: the pushed layer is read from the registry with %d, want %d", lose, got, want)
		}
	}
}

func TestServeManifestAnswersWithAnotherManifest(t *testing.T) {
	r := newRegistry(t)
	want, err := r.PushImage("app:v1", 1, 1024)
	if err != nil {
		t.Fatal(err)
	}
	serve, err := r.PushImage("app:v2", 1, 1024)
	if err != nil {
		t.Fatal(err)
	}
	r.Use(registrytest.ServeManifest("app", want, serve))
	r.ResetRequests()

	path := "/v2/app/manifests/" + want.String()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+r.Host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", string(types.OCIImageIndex)) // not the media type of serve
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != serve.String() {
		t.Errorf("answered %d with %q, want 200 with %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), serve)
	}
	if got := r.Requests(); len(got) != 1 || got[0].Path != path {
		t.Errorf("recorded %+v, want the request for %s", got, want)
	}
	if _, err := remote.Get(mustRef(t, r.Host+"/app:v2")); err != nil {
		t.Errorf("another manifest: %v", err)
	}
}

func TestFaultsCorruptBlobBodiesSoTheirDigestFails(t *testing.T) {
	_, layer, faults := breakBlobReads(t, registrytest.Fault{Name: "corrupt", Corrupt: true})
	if err := readLayer(layer); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("reading a corrupted blob: %v, want a checksum mismatch", err)
	}
	if faults.Hits() != 1 {
		t.Errorf("%d blob reads corrupted, want 1", faults.Hits())
	}
}
