package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

// copyOnceFlag starts the hidden child mode in which the harness binary copies images with our copier, so that
// our copies run in a process of their own, like crane's and skopeo's, and their peak RSS can be read:
//
//	bench -copy-once [-concurrent] [-cpuprofile FILE] SRC DST [SRC DST ...]
//
// The pairs are copied in order (or all at once with -concurrent) by one fresh Copier, as a freshly started
// controller would; with -engine crane, by crane's own copy code (go-containerregistry's puller and pusher with
// crane's defaults) instead, so that the time of a call can be compared with ours. The child prints a
// copyOnceReport as JSON.
const copyOnceFlag = "-copy-once"

// copyOnceReport is what the child prints: how long each Copy call took.
type copyOnceReport struct {
	Seconds []float64 `json:"seconds"`
	// Total is the time from the first call to the last return.
	Total float64 `json:"total"`
}

func copyOnce(args []string) error {
	fs := flag.NewFlagSet(copyOnceFlag, flag.ContinueOnError)
	concurrent := fs.Bool("concurrent", false, "copy all pairs at the same time")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file")
	layerJobs := fs.Int("layer-jobs", 0, "Options.LayerJobs (default: the copier's)")
	engine := fs.String("engine", ours, "copy with ours (the Copier) or crane (crane copy's code)")
	maxCopies := fs.Int("max-copies", 0, "Options.MaxConcurrentCopies (default: the copier's)")
	traceFile := fs.String("trace-requests", "", "write a timeline of our copier's HTTP requests to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pairs := fs.Args()
	if len(pairs) == 0 || len(pairs)%2 != 0 {
		return errors.New("want SRC DST [SRC DST ...]")
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	ctx := context.Background()
	// The controller's defaults (4 images at a time) apply, as in a deployment without flags.
	opts := registry.Options{LayerJobs: *layerJobs, MaxConcurrentCopies: *maxCopies}
	if *traceFile != "" {
		t := &requestTrace{start: time.Now(), next: remote.DefaultTransport}
		defer t.write(*traceFile)
		opts.Transport = t
	}
	copier := registry.New(opts)
	report := copyOnceReport{Seconds: make([]float64, len(pairs)/2)}
	errs := make([]error, len(pairs)/2)
	copyPair := func(i int) {
		src, err := name.ParseReference(pairs[2*i])
		if err != nil {
			errs[i] = err
			return
		}
		dst, err := name.NewTag(pairs[2*i+1])
		if err != nil {
			errs[i] = err
			return
		}
		start := time.Now()
		if *engine == crane {
			errs[i] = craneCopy(ctx, src, dst)
		} else {
			_, errs[i] = copier.Copy(ctx, registry.CopyRequest{Source: src, Target: dst})
		}
		report.Seconds[i] = time.Since(start).Seconds()
	}

	start := time.Now()
	if *concurrent {
		var wg sync.WaitGroup
		for i := range report.Seconds {
			wg.Go(func() { copyPair(i) })
		}
		wg.Wait()
	} else {
		for i := range report.Seconds {
			if copyPair(i); errs[i] != nil {
				break
			}
		}
	}
	report.Total = time.Since(start).Seconds()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	out, err := json.Marshal(report)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(out))
	return err
}

// craneCopy copies src to dst as crane copy v0.22.1 does (pkg/crane.Copy without a platform): one puller and
// one pusher with crane's defaults (GOMAXPROCS jobs, the default keychain).
func craneCopy(ctx context.Context, src name.Reference, dst name.Tag) error {
	opts := []remote.Option{
		remote.WithContext(ctx), remote.WithJobs(runtime.GOMAXPROCS(0)),
		remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithUserAgent("crane/v0.22.1"),
	}
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return err
	}
	pusher, err := remote.NewPusher(opts...)
	if err != nil {
		return err
	}
	desc, err := puller.Get(ctx, src)
	if err != nil {
		return err
	}
	return pusher.Push(ctx, dst, desc)
}

// requestTrace records when each request started and its response arrived, relative to start.
type requestTrace struct {
	start time.Time
	next  http.RoundTripper
	mu    sync.Mutex
	lines []string
}

func (t *requestTrace) RoundTrip(req *http.Request) (*http.Response, error) {
	begin := time.Since(t.start)
	resp, err := t.next.RoundTrip(req)
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	t.mu.Lock()
	t.lines = append(t.lines, fmt.Sprintf("%8.1fms %8.1fms %-6s %3d %s %s", float64(begin.Microseconds())/1000,
		float64(time.Since(t.start).Microseconds())/1000, req.Method, status, req.URL.Host, req.URL.Path))
	t.mu.Unlock()
	return resp, err
}

func (t *requestTrace) write(path string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_ = os.WriteFile(path, []byte(strings.Join(t.lines, "\n")+"\n"), 0o600)
}
