package controller

import (
	"errors"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// TestDecide checks the one place that turns the classes of failed copies into what a reconcile does next.
func TestDecide(t *testing.T) {
	fail := func(image string, c registry.Class, after time.Duration) backupResult {
		return backupResult{Image: workload.Image{Name: image}, err: &registry.Error{Class: c, RetryAfter: after, Err: errors.New(image + " failed")}}
	}
	ok := backupResult{Image: workload.Image{Name: "ok"}}
	for _, tc := range []struct {
		name         string
		results      []backupResult
		patch        bool
		requeueAfter time.Duration
		wantErr      bool
		terminal     bool
	}{
		{name: "everything copied", results: []backupResult{ok}, patch: true},
		{name: "a transient failure holds the patch back and retries with backoff",
			results: []backupResult{ok, fail("a", registry.Transient, 0)}, wantErr: true},
		{name: "a Retry-After requeues after that long, without an error that would retry sooner",
			results: []backupResult{ok, fail("a", registry.Transient, 2*time.Minute)}, requeueAfter: 2 * time.Minute},
		{name: "a Retry-After wins over another transient failure that did not ask",
			results: []backupResult{fail("a", registry.Transient, 2*time.Minute), fail("b", registry.Transient, 0)}, requeueAfter: 2 * time.Minute},
		{name: "the longest Retry-After wins, capped",
			results: []backupResult{fail("a", registry.Transient, time.Minute), fail("b", registry.Transient, time.Hour)}, requeueAfter: maxRetryAfter},
		{name: "permanent failures patch the other images and retry with backoff",
			results: []backupResult{ok, fail("a", registry.Permanent, 0), fail("b", registry.AccessDenied, 0), fail("c", registry.TooLarge, 0)},
			patch:   true, wantErr: true},
		{name: "a transient failure holds back even with permanent ones",
			results: []backupResult{ok, fail("a", registry.Permanent, 0), fail("b", registry.Transient, 0)}, wantErr: true},
		{name: "invalid references patch the others and are not retried",
			results: []backupResult{ok, fail("a", registry.Invalid, 0)}, patch: true, wantErr: true, terminal: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := decide(tc.results)
			if p.patch != tc.patch {
				t.Errorf("patch = %v, want %v", p.patch, tc.patch)
			}
			if p.result.RequeueAfter != tc.requeueAfter {
				t.Errorf("RequeueAfter = %s, want %s", p.result.RequeueAfter, tc.requeueAfter)
			}
			if (p.err != nil) != tc.wantErr {
				t.Errorf("err = %v, want an error: %v", p.err, tc.wantErr)
			}
			if got := errors.Is(p.err, reconcile.TerminalError(nil)); got != tc.terminal {
				t.Errorf("terminal = %v, want %v (err %v)", got, tc.terminal, p.err)
			}
			if want := len(tc.results) - 1; tc.results[0].err == nil && len(p.failed) != want {
				t.Errorf("%d failures reported, want %d", len(p.failed), want)
			}
		})
	}
}

// TestKeptChecked checks that only the reconcile triggered by the controller's own patch skips the check of
// the copies, once, and only at the generation that patch wrote.
func TestKeptChecked(t *testing.T) {
	r := &Reconciler[*appsv1.Deployment]{ownPatches: lru.New(10)}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{UID: "u1", Generation: 2}}
	if r.keptChecked(d) {
		t.Fatal("a workload this process never patched is checked")
	}
	r.ownPatches.Add(d.UID, int64(2))
	if !r.keptChecked(d) {
		t.Fatal("the reconcile after the process's own patch need not check again")
	}
	if r.keptChecked(d) {
		t.Fatal("a later reconcile at the same generation (an annotation changed, say) checks again")
	}
	r.ownPatches.Add(d.UID, int64(2))
	d.Generation = 3
	if r.keptChecked(d) {
		t.Fatal("a generation written by someone else after the patch is checked")
	}
}
