// Package registrytest runs real container registries for tests: go-containerregistry's in-process registry
// for fast tests and the distribution registry binary for integration tests, both behind a proxy that counts
// requests so tests can prove what did (and did not) cross the wire. Front puts the same proxy in front of any
// registry. Middleware added to the proxy changes how the registry behaves: it demands credentials
// (BasicAuth, TokenRealm), misbehaves (Faults, SwallowUploads, ServeManifest) or holds requests so that a test
// can act or measure meanwhile (Gate, Rendezvous, Concurrency).
package registrytest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
)

// Registry is a registry running for a test, reached through a counting proxy at Host.
type Registry struct {
	// Host is host:port of the proxy in front of the registry; use it in image references.
	Host string
	// Backend is host:port of the registry itself. Requests sent there bypass the proxy: they are neither
	// counted nor seen by its middleware, and cost no extra hop (for timing measurements).
	Backend string

	proxy    *httptest.Server
	backend  *httptest.Server // in-process registry, if any
	process  *exec.Cmd        // distribution registry, if any
	dataDir  string           // storage of a distribution registry
	exited   chan struct{}
	upstream *url.URL
	down     atomic.Bool

	// inFlight counts the requests being served; a request is recorded when its answer is complete.
	inFlight atomic.Int64

	// chain is what the proxy serves after counting: the middleware added so far around the reverse proxy.
	// Use swaps it while requests are served.
	chain      atomic.Pointer[http.Handler]
	forward    http.Handler
	middleware []Middleware

	mu       sync.Mutex
	requests []Request
}

// Request is one request the registry received.
type Request struct {
	Method string
	Path   string
	// Query is the raw query, e.g. "mount=sha256:...&from=repo" of a cross-repository mount.
	Query string
	// Bytes is the request body size for uploads.
	Bytes int64
	// Status is the status code the client saw, or 0 when the connection was closed without an answer.
	Status int
}

// IsMount reports whether the request mounted a blob from another repository (POST ?mount= answered 201).
func (r Request) IsMount() bool {
	return r.Method == http.MethodPost && strings.Contains(r.Query, "mount=") && r.Status == http.StatusCreated
}

// IsBlob reports whether the request read or wrote blob content (HEAD existence checks excluded).
func (r Request) IsBlob() bool {
	return strings.Contains(r.Path, "/blobs/") && r.Method != http.MethodHead
}

// NewInProcess starts go-containerregistry's in-memory registry, with the OCI 1.1 referrers API.
func NewInProcess() *Registry {
	backend := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(discardLogger()), ggcrregistry.WithReferrersSupport(true)))
	u, _ := url.Parse(backend.URL)
	r := &Registry{backend: backend, upstream: u, Backend: u.Host}
	r.startProxy()
	return r
}

// Front puts a counting proxy with middleware mw in front of the registry at host (host:port, plain HTTP), for
// a test that needs a registry to behave differently without changing it for other tests: Host is the proxy,
// Backend is host. Close stops only the proxy.
func Front(host string, mw ...Middleware) *Registry {
	r := &Registry{upstream: &url.URL{Scheme: "http", Host: host}, Backend: host}
	r.startProxy()
	r.Use(mw...)
	return r
}

// DistributionOption configures a distribution registry that StartDistribution starts.
type DistributionOption func(*distributionConfig)

type distributionConfig struct{ deletes bool }

// WithoutDeletes starts the registry as the distribution registry ships: refusing DELETE requests (405
// UNSUPPORTED). By default StartDistribution enables them.
func WithoutDeletes() DistributionOption { return func(c *distributionConfig) { c.deletes = false } }

// StartDistribution starts the distribution registry binary with its storage in dir, with deletes enabled
// unless WithoutDeletes is given.
func StartDistribution(binary, dir string, opts ...DistributionOption) (*Registry, error) {
	conf := distributionConfig{deletes: true}
	for _, opt := range opts {
		opt(&conf)
	}
	if binary == "" {
		return nil, errors.New("no distribution registry binary: set REGISTRY_BINARY (make test does) or run hack/test-binaries.sh registry")
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	config := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: %t
http:
  addr: 127.0.0.1:%d
`, filepath.Join(dir, "data"), conf.deletes, port)), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(context.Background(), binary, "serve", config)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
	logFile, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", binary, err)
	}
	upstream := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}
	r := &Registry{process: cmd, exited: make(chan struct{}), upstream: upstream, Backend: upstream.Host, dataDir: filepath.Join(dir, "data")}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(r.exited)
	}()
	if err := r.waitReady(30 * time.Second); err != nil {
		r.Close()
		log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
		return nil, fmt.Errorf("distribution registry did not become ready: %w\n%s", err, log)
	}
	r.startProxy()
	return r, nil
}

func (r *Registry) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-r.exited:
			return errors.New("registry process exited")
		default:
		}
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, r.upstream.String()+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer on %s within %s: %w", r.upstream, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *Registry) startProxy() {
	rp := httputil.NewSingleHostReverseProxy(r.upstream)
	rp.ErrorLog = discardLogger()
	// Large copy buffers and enough idle connections for parallel blob transfers keep the extra hop cheap.
	rp.BufferPool = proxyBuffers
	rp.Transport = proxyTransport
	r.forward = r.unlessDown(rp)
	r.chain.Store(&r.forward)
	r.proxy = httptest.NewServer(http.HandlerFunc(r.count))
	r.Host = strings.TrimPrefix(r.proxy.URL, "http://")
}

// Use adds middleware to the proxy, inside the middleware added before: a request passes the earlier
// middleware first, then mw[0], mw[1], and so on. It may be called while requests are served; those already
// in flight finish with the middleware they started with. Requests are counted before any middleware sees
// them, so Requests records what clients sent and the status they saw.
func (r *Registry) Use(mw ...Middleware) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.middleware = append(r.middleware, mw...)
	h := r.forward
	for i := len(r.middleware) - 1; i >= 0; i-- {
		h = r.middleware[i](h)
	}
	r.chain.Store(&h)
}

// ResetMiddleware removes the middleware added so far, so that a registry shared by several tests serves the
// next one as it was started. Requests in flight finish with the middleware they started with.
func (r *Registry) ResetMiddleware() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.middleware = nil
	r.chain.Store(&r.forward)
}

// count serves a request through the middleware and records it, also when a middleware aborts the response.
func (r *Registry) count(w http.ResponseWriter, req *http.Request) {
	r.inFlight.Add(1)
	defer r.inFlight.Add(-1) // after the request is recorded
	rec := Request{Method: req.Method, Path: req.URL.Path, Query: req.URL.RawQuery}
	var body byteCounter
	if req.Body != nil {
		req.Body = struct {
			io.Reader
			io.Closer
		}{io.TeeReader(req.Body, &body), req.Body}
	}
	sw := &statusWriter{ResponseWriter: w}
	finished := false
	defer func() {
		rec.Bytes, rec.Status = body.Load(), sw.seen(finished)
		r.mu.Lock()
		r.requests = append(r.requests, rec)
		r.mu.Unlock()
	}()
	(*r.chain.Load()).ServeHTTP(sw, req)
	finished = true
}

// unlessDown answers 503 instead of calling next while SetDown(true) is in force.
func (r *Registry) unlessDown(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.down.Load() {
			http.Error(w, "registry is down for this test", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, req)
	})
}

// PID returns the process ID of a distribution registry, or 0 for an in-process registry.
func (r *Registry) PID() int {
	if r.process == nil || r.process.Process == nil {
		return 0
	}
	return r.process.Process.Pid
}

// SetDown makes the registry answer every request with 503 (true) or serve normally again (false). The
// answers are counted, and the proxy's middleware sees the requests before the outage does.
func (r *Registry) SetDown(down bool) { r.down.Store(down) }

// Requests returns the requests received so far.
func (r *Registry) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}

// BlobRequests counts requests that read or wrote blob content.
func (r *Registry) BlobRequests() int {
	n := 0
	for _, req := range r.Requests() {
		if req.IsBlob() {
			n++
		}
	}
	return n
}

// UploadedBytes sums the blob bytes uploaded.
func (r *Registry) UploadedBytes() int64 { return r.UploadedBytesTo("") }

// UploadedBytesTo sums the blob bytes uploaded to repository repo (all repositories if repo is "").
func (r *Registry) UploadedBytesTo(repo string) int64 {
	part := "/blobs/uploads/"
	if repo != "" {
		part = "/v2/" + repo + part
	}
	var n int64
	for _, req := range r.Requests() {
		if strings.Contains(req.Path, part) {
			n += req.Bytes
		}
	}
	return n
}

// Mounts counts the blobs mounted into repository repo from other repositories (all if repo is "").
func (r *Registry) Mounts(repo string) int {
	n := 0
	for _, req := range r.Requests() {
		if req.IsMount() && (repo == "" || strings.HasPrefix(req.Path, "/v2/"+repo+"/blobs/uploads/")) {
			n++
		}
	}
	return n
}

// SettledRequests returns the requests received so far once those still being served have been recorded (for up
// to 5 seconds): a client can have the last byte of an answer before the proxy records the request, so counting
// right after a call returns may miss its last requests.
func (r *Registry) SettledRequests() []Request {
	for deadline := time.Now().Add(5 * time.Second); r.inFlight.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return r.Requests()
}

// ResetRequests forgets the requests received so far. Requests still being served (a blob whose last bytes
// are in transit while the client has moved on) are waited for first, for up to 5 seconds, so that they are
// not counted as requests made after the reset.
func (r *Registry) ResetRequests() {
	for deadline := time.Now().Add(5 * time.Second); r.inFlight.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = nil
}

// Close stops the registry.
func (r *Registry) Close() {
	if r.proxy != nil {
		r.proxy.Close()
	}
	if r.backend != nil {
		r.backend.Close()
	}
	if r.process != nil && r.process.Process != nil {
		_ = r.process.Process.Kill()
		<-r.exited
	}
}

// statusWriter remembers the status code of a response, and whether the connection was taken over instead.
type statusWriter struct {
	http.ResponseWriter
	status   int
	hijacked bool
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status < http.StatusOK { // the first final status; 1xx come before it
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Hijack hands over the connection, as a fault that closes it does.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer (the reverse proxy flushes through it).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// seen returns the status the client saw: 0 for a connection taken over, or for a handler that aborted,
// before an answer; 200 for one that finished without writing anything.
func (w *statusWriter) seen(finished bool) int {
	switch {
	case w.status != 0:
		return w.status
	case finished && !w.hijacked:
		return http.StatusOK
	default:
		return 0
	}
}

// proxyTransport carries the proxies' requests to the registries, keeping a connection per parallel transfer.
var proxyTransport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.ReadBufferSize = 256 << 10
	t.WriteBufferSize = 256 << 10
	return t
}()

// proxyBuffers hands the proxies 256 KiB copy buffers instead of the 32 KiB default.
var proxyBuffers = &bufferPool{pool: sync.Pool{New: func() any { return make([]byte, 256<<10) }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte { return p.pool.Get().([]byte) }

func (p *bufferPool) Put(b []byte) { p.pool.Put(b) } //nolint:staticcheck // a slice header allocation per copy is negligible

// byteCounter counts the bytes written to it.
type byteCounter struct{ atomic.Int64 }

func (c *byteCounter) Write(p []byte) (int, error) {
	c.Add(int64(len(p)))
	return len(p), nil
}

func freePort() (int, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }
