package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
)

// admissionConfig sizes the admission row.
type admissionConfig struct {
	smoke bool
	// rate is the requests per second of each stream (webhook and ignored namespace), for duration.
	rate     int
	duration time.Duration
	images   int
	// inFlight bounds the requests outstanding at once; the loop waits for a slot, and counts the sends it
	// made late.
	inFlight int
	// warmup requests of each stream go first, not counted: connections, caches, the webhook's first calls.
	warmup int
}

func admissionConfigFor(env *benchEnv) admissionConfig {
	cfg := admissionConfig{rate: 50, duration: time.Minute, images: 5, inFlight: 64, warmup: 50}
	if env.smoke {
		cfg = admissionConfig{smoke: true, rate: 20, duration: 5 * time.Second, images: 2, inFlight: 64, warmup: 10}
	}
	return cfg
}

func (cfg admissionConfig) requests() int { return int(float64(cfg.rate) * cfg.duration.Seconds()) }

func (cfg admissionConfig) judge(ok bool) *bool {
	if cfg.smoke {
		return nil
	}
	return &ok
}

const (
	// targetHandlerP99 is the goal for the webhook's own time per request.
	targetHandlerP99 = 10 * time.Millisecond
	// admissionNamespace is where the webhook rewrites; ignoredNamespace is in the default --ignore-namespaces
	// and in the namespaceSelector of the webhook configuration, so the API server never calls the webhook.
	admissionNamespace = "bench-admission"
	ignoredNamespace   = "kube-public"
	// admissionControllerArgs log every webhook request with nanosecond timestamps (controller-runtime logs
	// "received request" and "wrote response" at V(5)): the exact per-request handler times. Sampling is off
	// at that level, so no line is dropped.
	admissionLogLevel    = "--zap-log-level=5"
	admissionTimeEncoder = "--zap-time-encoding=rfc3339nano"
)

// The two streams of the row.
const (
	streamWebhook = iota
	streamIgnored
)

var streamNames = [...]string{"webhook", "ignored ns"}

// admissionSample is one dry-run create.
type admissionSample struct {
	name    string
	latency time.Duration
	err     error
	// rewritten: the returned object runs from the backup registry.
	rewritten bool
}

// loadStats describes how well the paced loop kept its schedule.
type loadStats struct {
	elapsed     time.Duration
	late        int // sends that left more than 5 ms after their time
	maxInFlight int64
}

// runAdmission measures the admission row on a cluster of its own: the images are backed up first, then
// dry-run creates go to a namespace the webhook rewrites in and, interleaved at the same rate, to one it
// leaves out.
func runAdmission(ctx context.Context, env *benchEnv) ([]Result, error) {
	cfg := admissionConfigFor(env)
	c, images, err := startWebhookCluster(ctx, cfg.images, admissionLogLevel, admissionTimeEncoder)
	defer c.stop(ctx)
	if err != nil {
		return nil, err
	}
	if err := backUpImages(ctx, c, admissionNamespace, images); err != nil {
		return nil, err
	}
	prefix := c.backupRegistry() + "/"

	warm, _, err := admissionLoad(ctx, c, cfg, images, prefix, "warm-", cfg.warmup)
	if err != nil {
		return nil, err
	}
	if f := admissionFailures(warm[streamWebhook]); f.errored+f.unchanged > 0 {
		return nil, fmt.Errorf("warm-up: %d of %d dry-run creates in %s failed (%d errors%s, %d not rewritten): is the webhook configured?%s",
			f.errored+f.unchanged, cfg.warmup, admissionNamespace, f.errored, errExample(f.firstErr), f.unchanged, c.controllerLogTail())
	}

	logStart, err := fileSize(c.controllerLog())
	if err != nil {
		return nil, err
	}
	before, err := c.controllerMetrics(ctx)
	if err != nil {
		return nil, err
	}
	apiBefore, err := c.apiserverMetrics(ctx)
	if err != nil {
		return nil, err
	}
	regBefore, err := c.backupRegistryMetrics(ctx)
	if err != nil {
		return nil, err
	}
	cpuBefore := c.componentCPU()
	n := cfg.requests()
	scaleLog("admission: %d dry-run creates in %s and %d in %s, interleaved, %d/s each for %s", n, admissionNamespace, n,
		ignoredNamespace, cfg.rate, cfg.duration)
	samples, load, err := admissionLoad(ctx, c, cfg, images, prefix, "adm-", n)
	if err != nil {
		return nil, err
	}
	cpu := c.componentCPU().minus(cpuBefore)
	// The controller counts a request after its response is written; give the last ones a moment.
	time.Sleep(200 * time.Millisecond)
	after, err := c.controllerMetrics(ctx)
	if err != nil {
		return nil, err
	}
	apiAfter, err := c.apiserverMetrics(ctx)
	if err != nil {
		return nil, err
	}
	regAfter, err := c.backupRegistryMetrics(ctx)
	if err != nil {
		return nil, err
	}
	handled, err := handlerTimes(c.controllerLog(), logStart, "adm-")
	if err != nil {
		return nil, err
	}

	var latency [2][]time.Duration
	for s := range samples {
		for _, x := range samples[s] {
			if x.err == nil {
				latency[s] = append(latency[s], x.latency)
			}
		}
		slices.Sort(latency[s])
		if len(latency[s]) == 0 {
			return nil, fmt.Errorf("every dry-run create in the %s stream failed, e.g.: %w", streamNames[s], samples[s][0].err)
		}
	}
	var exact []time.Duration
	for _, x := range samples[streamWebhook] {
		if d, ok := handled.times[admissionNamespace+"/"+x.name]; ok {
			exact = append(exact, d)
		}
	}
	slices.Sort(exact)
	histP50, histN := histogramQuantile(before, after, "image_clone_admission_duration_seconds", nil, 0.50)
	histP99, _ := histogramQuantile(before, after, "image_clone_admission_duration_seconds", nil, 0.99)
	webhookMatch := map[string]string{"type": "admit"} // the configuration's only webhook
	apiView := quantilesMs(apiBefore, apiAfter, "apiserver_admission_webhook_admission_duration_seconds", webhookMatch)
	failOpen := apiAfter.Sum("apiserver_admission_webhook_fail_open_count", nil) - apiBefore.Sum("apiserver_admission_webhook_fail_open_count", nil)
	results := scaleDelta(before, after, "image_clone_admission_requests_total", "result")

	failures := admissionFailures(samples[streamWebhook])
	peer := admissionFailures(samples[streamIgnored])
	p := func(s int, q float64) float64 { return scaleMs(scalePercentile(latency[s], q)) }
	clientValues := func(q float64) map[string]float64 {
		return map[string]float64{streamNames[streamWebhook]: p(streamWebhook, q), streamNames[streamIgnored]: p(streamIgnored, q)}
	}
	clientRatios := func(q float64) map[string]float64 {
		return map[string]float64{"webhook/ignored ns": ratio(p(streamWebhook, q), p(streamIgnored, q))}
	}
	// The exact times are the measure; the histogram stands in if the log had none.
	handlerP50, handlerP99, source := histP50*1e3, histP99*1e3, "histogram"
	if len(exact) > 0 {
		handlerP50, handlerP99, source = scaleMs(scalePercentile(exact, 50)), scaleMs(scalePercentile(exact, 99)), "log"
	}
	handlerValues := func(q float64, hist float64) map[string]float64 {
		v := map[string]float64{"histogram": hist * 1e3}
		if len(exact) > 0 {
			v["log"] = scaleMs(scalePercentile(exact, q))
		}
		return v
	}
	scaleLog("admission: client p50/p99 %.1f/%.1f ms (ignored namespace %.1f/%.1f ms), handler p50/p99 %.2f/%.2f ms (%s), %d failed",
		p(streamWebhook, 50), p(streamWebhook, 99), p(streamIgnored, 50), p(streamIgnored, 99), handlerP50, handlerP99, source,
		failures.errored+failures.unchanged)

	row := fmt.Sprintf("admission: dry-run Deployment creates, %d/s for %s, copies exist", cfg.rate, cfg.duration)
	how := fmt.Sprintf("%d server-side dry-run creates (dryRun=All) in %s, where the webhook rewrites, interleaved with "+
		"as many in %s, which its namespaceSelector leaves out (the API server calls no webhook), each stream "+
		"at %.1f/s achieved; %d images, one container each; at most %d in flight (max seen %d, %d sends > 5 ms late); "+
		"after %d warm-up requests per stream",
		n, admissionNamespace, ignoredNamespace, float64(n)/load.elapsed.Seconds(), cfg.images, cfg.inFlight,
		load.maxInFlight, load.late, cfg.warmup)
	return []Result{
		{
			Row:     row,
			Measure: "client latency ms, p50",
			Values:  clientValues(50),
			Ratios:  clientRatios(50),
			Note:    how,
		},
		{
			Row:     row,
			Measure: "client latency ms, p99",
			Values:  clientValues(99),
			Ratios:  clientRatios(99),
			Note: fmt.Sprintf("slowest: webhook %s, ignored ns %s; the API server's own view of the webhook call "+
				"(apiserver_admission_webhook_admission_duration_seconds): %s; CPU seconds: %s",
				slowest(latency[streamWebhook], 3), slowest(latency[streamIgnored], 3), apiView, cpu),
		},
		{
			Row:     row,
			Measure: "webhook handler ms, p50",
			Values:  handlerValues(50, histP50),
			Note: fmt.Sprintf("log: per request, from the controller's \"received request\" (review decoded) to its \"wrote response\" "+
				"(patch encoded and written), matched by request UID, for %d of %d requests (%s %s); histogram: "+
				"image_clone_admission_duration_seconds (Handle only) over the run, interpolated within its buckets, %.0f observations",
				len(exact), n, admissionLogLevel, admissionTimeEncoder, histN),
		},
		{
			Row:     row,
			Measure: "webhook handler ms, p99",
			Values:  handlerValues(99, histP99),
			Target:  fmt.Sprintf("%s p99 < %d ms", source, targetHandlerP99.Milliseconds()),
			Met:     cfg.judge(handlerP99 < scaleMs(targetHandlerP99)),
			Note: fmt.Sprintf("slowest (log): %s; what the handler waits for, server side: the API server's GETs of "+
				"ServiceAccounts (the webhook reads the workload's for its pull secrets, then remembers them for --tag-cache-ttl) %s; the backup registry's "+
				"manifest HEADs %s (from their histograms' buckets); controller flags: %s",
				slowest(exact, 5),
				quantilesMs(apiBefore, apiAfter, "apiserver_request_duration_seconds", map[string]string{"verb": "GET", "resource": "serviceaccounts"}),
				quantilesMs(regBefore, regAfter, "registry_http_request_duration_seconds", map[string]string{"handler": "manifest", "method": "head"}),
				webhookControllerFlags(admissionLogLevel, admissionTimeEncoder)),
		},
		{
			Row:     row,
			Measure: "failed admissions (errors + admitted with the public image)",
			Values:  map[string]float64{streamNames[streamWebhook]: float64(failures.errored + failures.unchanged)},
			Target:  "= 0",
			Met:     scaleMet(failures.errored+failures.unchanged == 0),
			Note: fmt.Sprintf("%d errored%s, %d not rewritten; webhook results over the run: %s; API server fail-open calls: %.0f; "+
				"ignored namespace: %d errored, %d rewritten, %d reached the webhook (want 0)",
				failures.errored, errExample(failures.firstErr), failures.unchanged, scaleCounts(results), failOpen,
				peer.errored, len(samples[streamIgnored])-peer.unchanged-peer.errored, handled.namespaces[ignoredNamespace]),
		},
	}, nil
}

// admissionLoad sends n dry-run creates to each stream, alternating between them, paced at cfg.rate per stream,
// with at most cfg.inFlight outstanding. Objects are named namePrefix + index, the same in both namespaces.
func admissionLoad(ctx context.Context, c *localCluster, cfg admissionConfig, images []string, prefix, namePrefix string,
	n int) ([2][]admissionSample, loadStats, error) {
	var samples [2][]admissionSample
	samples[streamWebhook], samples[streamIgnored] = make([]admissionSample, n), make([]admissionSample, n)
	namespaces := [2]string{admissionNamespace, ignoredNamespace}
	period := time.Second / time.Duration(2*cfg.rate)
	slots := make(chan struct{}, cfg.inFlight)
	var mu sync.Mutex
	var inFlight int64
	var wg sync.WaitGroup
	var stats loadStats
	timer := time.NewTimer(0)
	<-timer.C
	start := time.Now()
	for k := range 2 * n {
		at := start.Add(time.Duration(k) * period)
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				wg.Wait()
				return samples, stats, ctx.Err()
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return samples, stats, ctx.Err()
		}
		if time.Since(at) > 5*time.Millisecond {
			stats.late++
		}
		stream, i := k%2, k/2
		wg.Go(func() {
			defer func() { <-slots }()
			mu.Lock()
			inFlight++
			stats.maxInFlight = max(stats.maxInFlight, inFlight)
			mu.Unlock()
			samples[stream][i] = dryRunCreate(ctx, c, namespaces[stream], fmt.Sprintf("%s%05d", namePrefix, i), images[i%len(images)], prefix)
			mu.Lock()
			inFlight--
			mu.Unlock()
		})
	}
	wg.Wait()
	stats.elapsed = time.Since(start)
	return samples, stats, nil
}

// dryRunCreate sends one server-side dry-run create of a Deployment and reports whether the object the API
// server returned runs from the backup registry.
func dryRunCreate(ctx context.Context, c *localCluster, ns, name, image, prefix string) admissionSample {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	d := scaleDeployment(ns, name, image, 1)
	start := time.Now()
	got, err := c.client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	s := admissionSample{name: name, latency: time.Since(start), err: err}
	if err == nil {
		s.rewritten = onBackup(got, prefix)
	}
	return s
}

// admissionTally counts the failed requests of a stream.
type admissionTally struct {
	errored, unchanged int
	firstErr           error
}

func admissionFailures(samples []admissionSample) admissionTally {
	var t admissionTally
	for _, s := range samples {
		switch {
		case s.err != nil:
			t.errored++
			if t.firstErr == nil {
				t.firstErr = s.err
			}
		case !s.rewritten:
			t.unchanged++
		}
	}
	return t
}

func errExample(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprintf(" (e.g. %v)", err)
}

// handled holds what the controller's log says about the webhook requests it served.
type handled struct {
	// times maps "namespace/name" of each object to the time from "received request" to "wrote response".
	times map[string]time.Duration
	// namespaces counts the requests received per namespace.
	namespaces map[string]int
}

// handlerTimes reads the webhook requests from the controller's log from offset on: controller-runtime logs
// "received request" with the request UID and the object once it has decoded the AdmissionReview, and "wrote
// response" with the UID once it has written the response. Only objects named with namePrefix are timed.
func handlerTimes(path string, offset int64, namePrefix string) (handled, error) {
	out := handled{times: map[string]time.Duration{}, namespaces: map[string]int{}}
	f, err := os.Open(path)
	if err != nil {
		return out, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return out, err
	}
	type received struct {
		object string
		at     time.Time
	}
	pending := map[string]received{}
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for scanner.Scan() {
		line := scanner.Bytes()
		isReceived, isWrote := strings.Contains(string(line), `"received request"`), strings.Contains(string(line), `"wrote response"`)
		if !isReceived && !isWrote {
			continue
		}
		var entry struct {
			TS        string `json:"ts"`
			Msg       string `json:"msg"`
			RequestID string `json:"requestID"`
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		}
		if json.Unmarshal(line, &entry) != nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, entry.TS)
		if err != nil {
			return out, fmt.Errorf("the controller's log has timestamps like %q, not RFC 3339 (%s)", entry.TS, admissionTimeEncoder)
		}
		switch {
		case isReceived && entry.Msg == "received request":
			out.namespaces[entry.Namespace]++
			if strings.HasPrefix(entry.Name, namePrefix) {
				pending[entry.RequestID] = received{object: entry.Namespace + "/" + entry.Name, at: at}
			}
		case isWrote && entry.Msg == "wrote response":
			if r, ok := pending[entry.RequestID]; ok {
				out.times[r.object] = at.Sub(r.at)
				delete(pending, entry.RequestID)
			}
		}
	}
	return out, scanner.Err()
}

func fileSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// histogramDelta returns the cumulative bucket counts of histogram name between two scrapes, over its series
// whose labels include match, by upper bound, and the bounds in order.
func histogramDelta(before, after metricstest.Samples, name string, match map[string]string) ([]float64, map[float64]float64) {
	counts := map[float64]float64{}
	add := func(samples metricstest.Samples, sign float64) {
		for _, s := range samples {
			if s.Name != name+"_bucket" {
				continue
			}
			le, err := strconv.ParseFloat(s.Labels["le"], 64)
			if err != nil || !labelsInclude(s.Labels, match) {
				continue
			}
			counts[le] += sign * s.Value
		}
	}
	add(after, 1)
	add(before, -1)
	bounds := slices.Sorted(maps.Keys(counts))
	return bounds, counts
}

// histogramQuantile returns quantile q (0 to 1) of the observations histogram name made between two scrapes,
// over its series whose labels include match, interpolated linearly within the bucket it falls in, as
// Prometheus's histogram_quantile does (the highest finite bound if it falls in the +Inf bucket); and the
// number of observations.
func histogramQuantile(before, after metricstest.Samples, name string, match map[string]string, q float64) (float64, float64) {
	bounds, counts := histogramDelta(before, after, name, match)
	if len(bounds) == 0 || counts[bounds[len(bounds)-1]] == 0 {
		return 0, 0
	}
	total := counts[bounds[len(bounds)-1]]
	rank := q * total
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		if counts[le] >= rank {
			if math.IsInf(le, 1) {
				return lower, total
			}
			if counts[le] == below {
				return le, total
			}
			return lower + (le-lower)*(rank-below)/(counts[le]-below), total
		}
		lower, below = le, counts[le]
	}
	return lower, total
}

// quantilesMs describes the observations of a histogram between two scrapes by the buckets that hold its p50
// and p99, for histograms whose buckets are too coarse to interpolate in: "N, p50 ≤ X ms, p99 ≤ Y ms".
func quantilesMs(before, after metricstest.Samples, name string, match map[string]string) string {
	bounds, counts := histogramDelta(before, after, name, match)
	if len(bounds) == 0 || counts[bounds[len(bounds)-1]] == 0 {
		return "none"
	}
	total := counts[bounds[len(bounds)-1]]
	bound := func(q float64) string {
		prev := 0.0
		for _, le := range bounds {
			if counts[le] >= q*total {
				if math.IsInf(le, 1) {
					return fmt.Sprintf("> %g ms", prev*1e3)
				}
				return fmt.Sprintf("≤ %g ms", le*1e3)
			}
			prev = le
		}
		return "?"
	}
	return fmt.Sprintf("%.0f, p50 %s, p99 %s", total, bound(0.50), bound(0.99))
}

func labelsInclude(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}
