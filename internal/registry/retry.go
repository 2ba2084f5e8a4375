package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// maxFailures and maxInlineWait are the budget of one Copy; see "Retries" in the package documentation.
const (
	maxFailures   = 4
	maxInlineWait = 2 * time.Second
)

// retryBackoff is the wait before a request is sent again after its registry's n-th failure in a Copy (n from
// 1): 250ms, 500ms, 1s, ... up to maxInlineWait.
func retryBackoff(n int) time.Duration {
	return min(maxInlineWait, 250*time.Millisecond<<(n-1))
}

var retryStatusCodes = map[int]bool{
	http.StatusRequestTimeout: true, http.StatusTooManyRequests: true, http.StatusInternalServerError: true,
	http.StatusBadGateway: true, http.StatusServiceUnavailable: true, http.StatusGatewayTimeout: true,
}

// retryBudget counts, for one Copy, the failed requests to each registry host; every request the Copy makes
// shares it.
type retryBudget struct {
	mu       sync.Mutex
	failures map[string]int
	// after is the longest Retry-After that was too long to wait inline.
	after time.Duration
}

type budgetKey struct{}

// withRetryBudget returns ctx carrying a fresh budget.
func withRetryBudget(ctx context.Context) context.Context {
	return context.WithValue(ctx, budgetKey{}, &retryBudget{})
}

// budgetOf returns the budget that ctx carries; requests made outside a Copy get one of their own.
func budgetOf(ctx context.Context) *retryBudget {
	if b, ok := ctx.Value(budgetKey{}).(*retryBudget); ok {
		return b
	}
	return &retryBudget{}
}

// spent reports whether host failed maxFailures requests of the Copy already.
func (b *retryBudget) spent(host string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures[host] >= maxFailures
}

// fail records a failed request to host and returns how many failed so far.
func (b *retryBudget) fail(host string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures == nil {
		b.failures = map[string]int{}
	}
	b.failures[host]++
	return b.failures[host]
}

// deferTo records that the registry asked for a wait too long to spend in a worker.
func (b *retryBudget) deferTo(wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.after = max(b.after, wait)
}

// retryAfter returns the longest wait that was deferred to the caller.
func (b *retryBudget) retryAfter() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.after
}

// errBudgetSpent fails a request that is not sent, because its registry failed too often in this Copy.
type errBudgetSpent struct{ host string }

func (e *errBudgetSpent) Error() string {
	return fmt.Sprintf("not asking %s again in this copy: %d of its requests failed already", e.host, maxFailures)
}

// retryTransport repeats failed requests within the budget of their Copy; see "Retries" in the package
// documentation.
type retryTransport struct{ next http.RoundTripper }

func (t retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	budget := budgetOf(req.Context())
	for {
		if budget.spent(req.URL.Host) {
			if req.Body != nil {
				_ = req.Body.Close()
			}
			return nil, &errBudgetSpent{host: req.URL.Host}
		}
		resp, err := t.next.RoundTrip(req)
		wait, again := t.shouldRetry(req, resp, err, budget)
		if !again {
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
		}
		if err := sleep(req.Context(), wait); err != nil {
			return nil, err
		}
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req.Body = body
		}
	}
}

// shouldRetry decides whether the answer to req is worth sending req again for, and after how long. Every
// failure worth a retry counts against the budget, whether or not req can be sent again; a wait too long to
// spend inline is recorded in the budget for the caller instead.
func (t retryTransport) shouldRetry(req *http.Request, resp *http.Response, err error, budget *retryBudget) (time.Duration, bool) {
	if req.Context().Err() != nil {
		return 0, false
	}
	var wait time.Duration
	switch {
	case err != nil:
		if !retryable(err) {
			return 0, false
		}
	case retryStatusCodes[resp.StatusCode]:
		if after, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			if after > maxInlineWait {
				budget.fail(req.URL.Host)
				budget.deferTo(after)
				return 0, false
			}
			wait = after
		}
	default:
		return 0, false
	}
	n := budget.fail(req.URL.Host)
	if n >= maxFailures || !rewindable(req) {
		return 0, false
	}
	if wait == 0 {
		wait = retryBackoff(n)
	}
	return wait, true
}

// rewindable reports whether the request can be sent again: it has no body, or one that can be re-created.
func rewindable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// retryable reports whether a request that got no answer is worth repeating: temporary network errors and
// connections that broke off. Timeouts of the caller's context are not.
func retryable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var te interface{ Temporary() bool }
	if errors.As(err, &te) && te.Temporary() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, net.ErrClosed)
}

// neverRetry is go-containerregistry's retry predicate for the Copier: retryTransport is the one place that
// repeats requests.
func neverRetry(error) bool { return false }

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second, true
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(0, at.Sub(now)), true
	}
	return 0, false
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
