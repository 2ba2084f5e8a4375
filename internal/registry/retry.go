package registry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// copyRetries and maxInlineWait are the budget of one Copy; see "Retries" in the package documentation.
const (
	copyRetries   = 3
	maxInlineWait = 2 * time.Second
)

// retryBackoff is the wait before the n-th retry of a request (n from 1): 250ms, 500ms, 1s, ... up to
// maxInlineWait.
func retryBackoff(n int) time.Duration {
	return min(maxInlineWait, 250*time.Millisecond<<(n-1))
}

var retryStatusCodes = map[int]bool{
	http.StatusRequestTimeout: true, http.StatusTooManyRequests: true, http.StatusInternalServerError: true,
	http.StatusBadGateway: true, http.StatusServiceUnavailable: true, http.StatusGatewayTimeout: true,
}

// retryBudget is what one Copy may still spend on retries, shared by every request the Copy makes.
type retryBudget struct {
	mu   sync.Mutex
	left int
	used int
	// after is the longest Retry-After that was too long to wait inline.
	after time.Duration
}

type budgetKey struct{}

// withRetryBudget returns ctx carrying a fresh budget of copyRetries retries.
func withRetryBudget(ctx context.Context) (context.Context, *retryBudget) {
	b := &retryBudget{left: copyRetries}
	return context.WithValue(ctx, budgetKey{}, b), b
}

// budgetOf returns the budget that ctx carries; requests made outside a Copy get one of their own.
func budgetOf(ctx context.Context) *retryBudget {
	if b, ok := ctx.Value(budgetKey{}).(*retryBudget); ok {
		return b
	}
	return &retryBudget{left: copyRetries}
}

// take spends one retry and returns its number (1 for the first), or 0 if none is left.
func (b *retryBudget) take() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.left == 0 {
		return 0
	}
	b.left--
	b.used++
	return b.used
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

// retryTransport repeats failed requests within the budget of their Copy; see "Retries" in the package
// documentation.
type retryTransport struct{ next http.RoundTripper }

func (t retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	budget := budgetOf(req.Context())
	for {
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

// shouldRetry decides whether the answer to req is worth sending req again for, and after how long. A wait too
// long to spend inline is recorded in the budget for the caller instead.
func (t retryTransport) shouldRetry(req *http.Request, resp *http.Response, err error, budget *retryBudget) (time.Duration, bool) {
	if req.Context().Err() != nil || !rewindable(req) {
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
				budget.deferTo(after)
				return 0, false
			}
			wait = after
		}
	default:
		return 0, false
	}
	n := budget.take()
	if n == 0 {
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
