package registrytest

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault describes how matching requests are broken.
type Fault struct {
	// Name describes the fault in test output.
	Name string
	// Match selects the requests the fault applies to; nil matches every request.
	Match func(*http.Request) bool
	// Status answers with this status instead of forwarding (e.g. 500, 503, 429).
	Status int
	// RetryAfter is sent as the Retry-After header with Status.
	RetryAfter string
	// Down closes every matching connection without an answer, as a registry that is not running would.
	Down bool
	// Reset cuts the connection after half of the body: the request body for uploads, else the response body.
	Reset bool
	// Truncate ends the body after half of it, short of its Content-Length: the request body for uploads
	// (the registry sees a short upload), else the response body.
	Truncate bool
	// Corrupt flips the bytes of the body (the request body for uploads, else the response body), so its
	// digest no longer matches.
	Corrupt bool
	// Drip delays every 32 KiB of the body (the request body for uploads, else the response body) by this much.
	Drip time.Duration
}

// BlobGets matches requests that download blob content.
func BlobGets(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
}

// BlobUploads matches requests that upload blob content.
func BlobUploads(r *http.Request) bool {
	return (r.Method == http.MethodPut || r.Method == http.MethodPatch || r.Method == http.MethodPost) &&
		strings.Contains(r.URL.Path, "/blobs/uploads/")
}

// Manifests matches manifest requests.
func Manifests(r *http.Request) bool { return strings.Contains(r.URL.Path, "/manifests/") }

// Faults breaks the requests its current fault matches, so tests can show how the controller behaves when a
// registry misbehaves: error statuses, rate limits, connections reset in the middle of a blob, truncated or
// corrupted bodies, slow drips and outages. The registry behind it stays real. Add its Middleware to a
// Registry or Front; the zero value breaks nothing until Set.
type Faults struct {
	mu    sync.Mutex
	fault *Fault
	hits  int
	seen  []time.Time
}

// Set starts breaking requests with f.
func (p *Faults) Set(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault, p.hits, p.seen = &f, 0, nil
}

// Clear stops breaking requests.
func (p *Faults) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = nil
}

// Hits counts the requests broken since the fault was set.
func (p *Faults) Hits() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits
}

// HitTimes returns when each broken request arrived, so tests can check that retries back off.
func (p *Faults) HitTimes() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.seen...)
}

// Middleware breaks the requests the current fault matches and passes the others to next unchanged.
func (p *Faults) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := p.match(r)
		switch {
		case f == nil:
			next.ServeHTTP(w, r)
		case f.Down:
			resetConnection(w)
		case f.Status != 0:
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			http.Error(w, "injected fault: "+f.Name, f.Status)
		case r.ContentLength > 0:
			breakRequest(w, r, f, next)
		default:
			next.ServeHTTP(&breakingWriter{ResponseWriter: w, fault: f}, r)
		}
	})
}

func (p *Faults) match(r *http.Request) *Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fault == nil || (p.fault.Match != nil && !p.fault.Match(r)) {
		return nil
	}
	p.hits++
	p.seen = append(p.seen, time.Now())
	return p.fault
}

// breakRequest passes on a request whose body is broken as the fault says.
func breakRequest(w http.ResponseWriter, r *http.Request, f *Fault, next http.Handler) {
	half := r.ContentLength / 2
	switch {
	case f.Reset:
		_, _ = io.CopyN(io.Discard, r.Body, half)
		resetConnection(w)
		return
	case f.Truncate:
		r.Body = io.NopCloser(io.LimitReader(r.Body, half))
		r.ContentLength = half // the registry receives fewer bytes than the client sent
	case f.Corrupt:
		r.Body = io.NopCloser(&flippingReader{r: r.Body})
	case f.Drip > 0:
		r.Body = io.NopCloser(&drippingReader{r: r.Body, delay: f.Drip})
	}
	next.ServeHTTP(w, r)
}

type flippingReader struct{ r io.Reader }

func (f *flippingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	for i := range p[:n] {
		p[i] ^= 0xff
	}
	return n, err
}

type drippingReader struct {
	r     io.Reader
	delay time.Duration
}

func (d *drippingReader) Read(p []byte) (int, error) {
	time.Sleep(d.delay)
	return d.r.Read(p[:min(len(p), 32<<10)])
}

// resetConnection closes the client connection abruptly (RST instead of FIN), without an answer.
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// breakingWriter passes a response through and breaks its body as the fault says.
type breakingWriter struct {
	http.ResponseWriter
	fault   *Fault
	limit   int64 // bytes of body to pass before breaking; -1 until the headers are known
	written int64
	broken  bool
}

func (b *breakingWriter) WriteHeader(status int) {
	b.limit = -1
	if n := b.Header().Get("Content-Length"); n != "" && status < 300 {
		if size, err := strconv.ParseInt(n, 10, 64); err == nil {
			b.limit = size / 2
		}
	}
	b.ResponseWriter.WriteHeader(status)
}

func (b *breakingWriter) Write(p []byte) (int, error) {
	if b.broken {
		return 0, io.ErrClosedPipe
	}
	if b.fault.Corrupt {
		p = bytes.Clone(p)
		for i := range p {
			p[i] ^= 0xff
		}
	}
	if b.fault.Drip > 0 {
		written := 0
		for written < len(p) {
			n := min(len(p)-written, 32<<10)
			time.Sleep(b.fault.Drip)
			if _, err := b.ResponseWriter.Write(p[written : written+n]); err != nil {
				return written, err
			}
			b.flush()
			written += n
		}
		return written, nil
	}
	if (b.fault.Reset || b.fault.Truncate) && b.limit >= 0 && b.written+int64(len(p)) > b.limit {
		keep := b.limit - b.written
		if keep > 0 {
			_, _ = b.ResponseWriter.Write(p[:keep])
			b.flush()
		}
		b.broken = true
		if b.fault.Reset {
			resetConnection(b.ResponseWriter)
		}
		// Truncate: returning an error makes the reverse proxy end the response short of its Content-Length.
		return 0, io.ErrClosedPipe
	}
	n, err := b.ResponseWriter.Write(p)
	b.written += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the writer underneath, to flush or take over the connection.
func (b *breakingWriter) Unwrap() http.ResponseWriter { return b.ResponseWriter }

func (b *breakingWriter) flush() { _ = http.NewResponseController(b.ResponseWriter).Flush() }
