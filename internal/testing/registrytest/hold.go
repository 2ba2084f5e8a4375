package registrytest

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Gate holds the requests it matches until it is opened, so that a test can act while a client waits for an
// answer, e.g. cancel the copy whose upload is held. A held request whose client goes away is dropped without
// an answer. Open the gate before the registry is closed: closing waits for the requests it holds.
type Gate struct {
	match    func(*http.Request) bool
	held     chan struct{}
	released chan struct{}
	heldOnce sync.Once
	openOnce sync.Once
}

// NewGate returns a closed gate for the requests match selects (every request for nil).
func NewGate(match func(*http.Request) bool) *Gate {
	return &Gate{match: match, held: make(chan struct{}), released: make(chan struct{})}
}

// Held is closed once the gate has held its first request.
func (g *Gate) Held() <-chan struct{} { return g.held }

// Open lets the held requests and all later ones pass. It may be called more than once.
func (g *Gate) Open() { g.openOnce.Do(func() { close(g.released) }) }

// Middleware holds the matching requests until the gate is opened and passes the others to next at once.
func (g *Gate) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.match == nil || g.match(r) {
			g.heldOnce.Do(func() { close(g.held) })
			select {
			case <-g.released:
			case <-r.Context().Done():
				panic(http.ErrAbortHandler) // the client is gone; recorded as answered with nothing
			}
		}
		next.ServeHTTP(w, r)
	})
}

// rendezvousTimeout is how long a Rendezvous holds a request for the other parties.
const rendezvousTimeout = 10 * time.Second

// Rendezvous holds the first request it matches at each of its parties until every party has received one,
// so that a test can prove a client asks several registries at the same time: a client that asks one after
// the other waits in vain, and is answered 504 after 10 seconds. Each party is a Registry (or Front) that
// uses the Rendezvous's At(party) middleware.
type Rendezvous struct {
	match   func(*http.Request) bool
	mu      sync.Mutex
	arrived map[string]bool
	all     chan struct{}
}

// NewRendezvous returns a rendezvous of the named parties for the requests match selects (every request for
// nil).
func NewRendezvous(match func(*http.Request) bool, parties ...string) *Rendezvous {
	m := &Rendezvous{match: match, arrived: map[string]bool{}, all: make(chan struct{})}
	for _, p := range parties {
		m.arrived[p] = false
	}
	return m
}

// Met reports whether every party has received a matching request.
func (m *Rendezvous) Met() bool {
	select {
	case <-m.all:
		return true
	default:
		return false
	}
}

// At is the middleware of party, which must be one of the parties the rendezvous was made for.
func (m *Rendezvous) At(party string) Middleware {
	if _, ok := m.arrived[party]; !ok {
		panic("registrytest: " + party + " is not a party of the rendezvous")
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if m.arrive(party, r) {
				select {
				case <-m.all:
				case <-time.After(rendezvousTimeout):
					http.Error(w, "rendezvous: the other parties were not asked meanwhile", http.StatusGatewayTimeout)
					return
				case <-r.Context().Done():
					panic(http.ErrAbortHandler)
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// arrive records that party received r and reports whether r is to wait for the other parties: it is the
// party's first matching request.
func (m *Rendezvous) arrive(party string, r *http.Request) bool {
	if m.match != nil && !m.match(r) {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.arrived[party] {
		return false
	}
	m.arrived[party] = true
	for _, arrived := range m.arrived {
		if !arrived {
			return true
		}
	}
	close(m.all)
	return true
}

// Concurrency delays every request it matches and measures how many of them are served at the same time, so
// that a test can prove a client's bound on parallel requests holds and is reached. A request is in service
// from its arrival until the last byte of its answer is written, before that byte can reach the client, so a
// client that waits for one answer before sending the next request is never seen with both in service.
type Concurrency struct {
	// Match selects the requests measured; nil measures every request.
	Match func(*http.Request) bool
	// Delay holds every measured request this long before it is served, so that parallel requests overlap.
	Delay time.Duration

	open, most, total atomic.Int64
}

// Most returns the most matching requests that were in service at the same time.
func (c *Concurrency) Most() int { return int(c.most.Load()) }

// Total counts the matching requests.
func (c *Concurrency) Total() int { return int(c.total.Load()) }

// Middleware measures and delays the matching requests, and passes the others to next unchanged.
func (c *Concurrency) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.Match != nil && !c.Match(r) {
			next.ServeHTTP(w, r)
			return
		}
		c.total.Add(1)
		n := c.open.Add(1)
		for {
			most := c.most.Load()
			if n <= most || c.most.CompareAndSwap(most, n) {
				break
			}
		}
		var once sync.Once
		done := func() { once.Do(func() { c.open.Add(-1) }) }
		defer done()
		time.Sleep(c.Delay)
		next.ServeHTTP(&lastByteWriter{ResponseWriter: w, remaining: -1, last: done}, r)
	})
}

// lastByteWriter calls last just before it writes the last byte of a body of known length.
type lastByteWriter struct {
	http.ResponseWriter
	remaining int64 // bytes of body still to write; -1 until the headers are known or when they do not say
	headed    bool
	last      func()
}

func (l *lastByteWriter) WriteHeader(status int) {
	l.head()
	l.ResponseWriter.WriteHeader(status)
}

func (l *lastByteWriter) Write(p []byte) (int, error) {
	l.head()
	if l.remaining >= 0 {
		if l.remaining -= int64(len(p)); l.remaining <= 0 {
			l.last()
		}
	}
	return l.ResponseWriter.Write(p)
}

func (l *lastByteWriter) head() {
	if l.headed {
		return
	}
	l.headed = true
	if n, err := strconv.ParseInt(l.Header().Get("Content-Length"), 10, 64); err == nil {
		l.remaining = n
	}
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (l *lastByteWriter) Unwrap() http.ResponseWriter { return l.ResponseWriter }
