package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

const verificationsMetric = "image_clone_verifications_total"

// verifyPass is what one verification pass did, between two scrapes.
type verifyPass struct {
	// verifications by "depth/result", and their sum.
	verifications map[string]float64
	total         float64
	// backupRequests are the backup registry's requests by "method handler code", and their sum.
	backupRequests map[string]float64
	backupTotal    float64
	// upstream are the requests the upstream registry's proxy saw.
	upstream []registrytest.Request
	// api are the controller's API server requests by method.
	api map[string]float64
	// first and last are when the first verification and the last one were seen.
	first, last time.Time
	cpu         cpuUsage
}

func (p verifyPass) spread() time.Duration { return p.last.Sub(p.first) }

func (p verifyPass) perBackup() float64 { return ratio(p.backupTotal, p.total) }

// measure fills in the counts of p from scrapes before and after the pass.
func (p *verifyPass) measure(before, after, regBefore, regAfter metricstest.Samples) {
	p.verifications = map[string]float64{}
	for _, s := range after {
		if s.Name == verificationsMetric {
			p.verifications[s.Labels["depth"]+"/"+s.Labels["result"]] += s.Value
		}
	}
	for _, s := range before {
		if s.Name == verificationsMetric {
			p.verifications[s.Labels["depth"]+"/"+s.Labels["result"]] -= s.Value
		}
	}
	p.total = after.Sum(verificationsMetric, nil) - before.Sum(verificationsMetric, nil)
	p.backupRequests = map[string]float64{}
	for _, s := range regAfter {
		if s.Name == "registry_http_requests_total" {
			p.backupRequests[s.Labels["method"]+" "+s.Labels["handler"]+" "+s.Labels["code"]] += s.Value
		}
	}
	for _, s := range regBefore {
		if s.Name == "registry_http_requests_total" {
			p.backupRequests[s.Labels["method"]+" "+s.Labels["handler"]+" "+s.Labels["code"]] -= s.Value
		}
	}
	p.backupTotal = regAfter.Sum("registry_http_requests_total", nil) - regBefore.Sum("registry_http_requests_total", nil)
	p.api = scaleDelta(before, after, "rest_client_requests_total", "method")
}

// upstreamCounts renders the upstream requests by method and kind (see upstreamByKind), e.g.
// "GET manifests: 3", or "none".
func upstreamCounts(reqs []registrytest.Request) string { return listCounts(upstreamByKind(reqs)) }

// runVerify measures one verification pass of the keeper over every copy of the shared cluster. The
// controller is restarted with --verify-interval I once every copy was last verified (by its copy) more than
// I ago, so that its first pass verifies all at once: its duration is the keeper's pace. The next pass comes
// of the interval alone, with nothing else for the controller to do, and is the one whose requests are counted.
func runVerify(ctx context.Context, env *benchEnv) ([]Result, error) {
	cfg := inventoryConfigFor(env)
	ic, err := backupsCluster(ctx, env, cfg)
	if err != nil {
		return nil, err
	}
	defer releaseBackupsCluster(ctx, "memory")
	n := ic.backups
	args := append([]string{"--verify-interval=" + cfg.verifyInterval.String()}, ic.upstreamArgs()...)

	list, err := ic.imageBackups(ctx)
	if err != nil {
		return nil, err
	}
	var latest time.Time
	for i := range list {
		if v := list[i].Status.LastVerified; v != nil && v.After(latest) {
			latest = v.Time
		}
	}
	// lastVerified has whole seconds.
	if wait := time.Until(latest.Add(cfg.verifyInterval + time.Second)); wait > 0 {
		inventoryLog("verify: waiting %s until every copy is due for verification", wait.Round(100*time.Millisecond))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}

	first, started, err := ic.startupPass(ctx, n, args, cfg.quietTimeout)
	if err != nil {
		return nil, err
	}
	inventoryLog("verify: the restarted controller verified %d copies in %s (first to last), %s after it started",
		n, first.spread().Round(10*time.Millisecond), first.last.Sub(started).Round(10*time.Millisecond))
	// The interval's pass begins one interval after the first verification of this one, at the earliest.
	if quiet := time.Since(first.first); quiet >= cfg.verifyInterval {
		return nil, fmt.Errorf("the restarted controller was quiet %s after its first verification, later than the next pass "+
			"could begin: raise INVENTORY_VERIFY_INTERVAL above that", quiet.Round(time.Second))
	}
	timed, err := ic.timedPass(ctx, n, cfg.verifyInterval, cfg.quietTimeout)
	if err != nil {
		return nil, err
	}
	inventoryLog("verify: the next pass made %.0f backup registry requests and %d upstream for %.0f verifications",
		timed.backupTotal, len(timed.upstream), timed.total)

	row := fmt.Sprintf("verify: one pass over %d intact backups", n)
	perBackup := timed.perBackup()
	return []Result{
		{
			Row:     row,
			Measure: "backup registry requests per backup verified (registry_http_requests_total / " + verificationsMetric + ")",
			Values:  map[string]float64{"ours": perBackup},
			Target:  "<= 1",
			Met:     scaleMet(perBackup <= 1),
			Note: fmt.Sprintf("the pass --verify-interval %s brought on by itself: %.0f verifications (%s), every backup exactly once "+
				"(each one's status.lastVerified moved); backup registry requests (its own metrics): %s; controller API requests: %s "+
				"(%.2f per backup: the status write of lastVerified); CPU seconds: %s; %s; controller flags: %s",
				cfg.verifyInterval, timed.total, scaleCounts(timed.verifications), scaleCounts(timed.backupRequests),
				scaleCounts(timed.api), ratio(sumValues(timed.api), timed.total), timed.cpu, ic.setupNote, ic.flags(args...)),
		},
		{
			Row:     row,
			Measure: "upstream registry requests in the pass",
			Values:  map[string]float64{"ours": float64(len(timed.upstream))},
			Target:  "= 0",
			Met:     scaleMet(len(timed.upstream) == 0),
			Note: fmt.Sprintf("counted by a proxy in front of the upstream registry, which the controller pulls through "+
				"(--source-mirror index.docker.io=PROXY); in the pass after the restart: %s", upstreamCounts(first.upstream)),
		},
		{
			Row:     row,
			Measure: "seconds to verify every backup when all are due at once (first pass after a restart)",
			Values:  map[string]float64{"ours": first.spread().Seconds()},
			Note: fmt.Sprintf("first to last verification seen, metrics scraped every 50 ms: %.0f verifications/s; %.1f s from "+
				"the process start (caches' sync included); verifications: %s%s; backup registry requests then: %s (%.2f per backup, "+
				"with the workload reconcilers' own check of every Deployment's copy at start); CPU seconds from the restart: %s; "+
				"the interval's pass spread over %.1f s by design (each copy's interval is --verify-interval plus up to a tenth, "+
				"by a hash of its name)",
				ratio(float64(n), first.spread().Seconds()), first.last.Sub(started).Seconds(), scaleCounts(first.verifications),
				first.duplicates(n), scaleCounts(first.backupRequests), ratio(first.backupTotal, float64(n)), first.cpu,
				timed.spread().Seconds()),
		},
	}, nil
}

// startupPass restarts the controller with args and measures its first pass, in which every one of n copies
// is due. It returns when the pass is over and the controller quiet, with the start of the new process.
func (ic *inventoryCluster) startupPass(ctx context.Context, n int, args []string, quietTimeout time.Duration) (verifyPass, time.Time, error) {
	var p verifyPass
	regBefore, err := ic.backupRegistryMetrics(ctx)
	if err != nil {
		return p, time.Time{}, err
	}
	oldPID, err := ic.controllerPID()
	if err != nil {
		return p, time.Time{}, err
	}
	ic.upstream.ResetRequests()
	cpuBefore := ic.componentCPU()
	delete(cpuBefore.procs, "controller") // the new process's CPU time is all in the pass
	restarted := make(chan error, 1)
	go func() { restarted <- ic.restartWith(ctx, args...) }()
	restarting := true
	err = scalePoll(ctx, 50*time.Millisecond, 5*time.Minute, "the restarted controller to verify every copy", func() (bool, error) {
		if restarting {
			select {
			case err := <-restarted:
				if err != nil {
					return false, err
				}
				restarting = false
			default:
			}
		}
		// The old process answers until it is stopped, and nothing answers until the new one serves: no pid
		// file, or no metrics yet, is a restart under way.
		pid, pidErr := ic.controllerPID()
		if pidErr != nil || pid == oldPID {
			return false, nil //nolint:nilerr // see above
		}
		m, scrapeErr := ic.controllerMetrics(ctx)
		if scrapeErr != nil {
			return false, nil //nolint:nilerr // see above
		}
		v, now := m.Sum(verificationsMetric, nil), time.Now()
		if v > 0 && p.first.IsZero() {
			p.first = now
		}
		if v >= float64(n) && p.last.IsZero() {
			p.last = now
		}
		return !restarting && !p.last.IsZero(), nil
	})
	if err != nil {
		return p, time.Time{}, fmt.Errorf("%w%s", err, ic.controllerLogTail())
	}
	pid, err := ic.controllerPID()
	if err != nil {
		return p, time.Time{}, err
	}
	started, err := processStart(pid)
	if err != nil {
		return p, time.Time{}, err
	}
	if err := ic.waitInventoryQuiet(ctx, quietTimeout); err != nil {
		return p, time.Time{}, err
	}
	p.cpu = ic.componentCPU().minus(cpuBefore)
	after, err := ic.controllerMetrics(ctx)
	if err != nil {
		return p, time.Time{}, err
	}
	regAfter, err := ic.backupRegistryMetrics(ctx)
	if err != nil {
		return p, time.Time{}, err
	}
	p.measure(nil, after, regBefore, regAfter)
	p.upstream = ic.upstream.Requests()
	// A copy may be verified twice in this pass (see duplicates), never less than once.
	if p.total < float64(n) {
		return p, time.Time{}, fmt.Errorf("the restarted controller made %.0f verifications (%s) for %d copies", p.total,
			scaleCounts(p.verifications), n)
	}
	return p, started, nil
}

// duplicates describes the verifications of a pass beyond one per copy: after a restart, a copy reconciled
// twice in a row (its initial list event, then the workload reconciler's report of it) may be read the second
// time from a cache that has not yet seen the status the first reconcile wrote, and be verified again (its
// status write then conflicts and is retried).
func (p verifyPass) duplicates(n int) string {
	if extra := p.total - float64(n); extra > 0 {
		return fmt.Sprintf(" (%.0f more than copies: a second reconcile read a cache that had not yet seen the first one's status)", extra)
	}
	return ""
}

// timedPass waits for the pass that the verify interval brings on by itself and measures it: every one of the n
// copies must be verified exactly once in it, which holds while the first pass took less than nine tenths of
// the interval (each copy's interval is up to a tenth longer than the flag).
func (ic *inventoryCluster) timedPass(ctx context.Context, n int, interval, quietTimeout time.Duration) (verifyPass, error) {
	var p verifyPass
	list, err := ic.imageBackups(ctx)
	if err != nil {
		return p, err
	}
	previous := map[string]time.Time{}
	for i := range list {
		if v := list[i].Status.LastVerified; v != nil {
			previous[list[i].Name] = v.Time
		}
	}
	before, err := ic.controllerMetrics(ctx)
	if err != nil {
		return p, err
	}
	regBefore, err := ic.backupRegistryMetrics(ctx)
	if err != nil {
		return p, err
	}
	ic.upstream.ResetRequests()
	cpuBefore := ic.componentCPU()
	start := time.Now()
	inventoryLog("verify: waiting for the next pass (--verify-interval %s)", interval)
	err = scalePoll(ctx, 50*time.Millisecond, interval*11/10+2*time.Minute, "the next verification pass", func() (bool, error) {
		m, err := ic.controllerMetrics(ctx)
		if err != nil {
			return false, err
		}
		v, now := m.Sum(verificationsMetric, nil)-before.Sum(verificationsMetric, nil), time.Now()
		if v > 0 && p.first.IsZero() {
			p.first = now
		}
		if v >= float64(n) {
			p.last = now
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return p, fmt.Errorf("%w%s", err, ic.controllerLogTail())
	}
	if err := ic.waitInventoryQuiet(ctx, quietTimeout); err != nil {
		return p, err
	}
	p.cpu = ic.componentCPU().minus(cpuBefore)
	after, err := ic.controllerMetrics(ctx)
	if err != nil {
		return p, err
	}
	regAfter, err := ic.backupRegistryMetrics(ctx)
	if err != nil {
		return p, err
	}
	p.measure(before, after, regBefore, regAfter)
	p.upstream = ic.upstream.Requests()
	if first := p.first.Sub(start); first < 0 {
		return p, fmt.Errorf("the pass started before it was waited for (%s)", first)
	}

	list, err = ic.imageBackups(ctx)
	if err != nil {
		return p, err
	}
	var stale []string
	for i := range list {
		ib := &list[i]
		if v := ib.Status.LastVerified; v == nil || !v.After(previous[ib.Name]) || ib.Status.Phase != v1alpha1.PhaseReady {
			stale = append(stale, ib.Name)
		}
	}
	switch {
	case p.total != float64(n) || p.verifications["shallow/intact"] != float64(n):
		return p, fmt.Errorf("the pass made %.0f verifications (%s) for %d copies, want one shallow intact verification of each: "+
			"raise INVENTORY_VERIFY_INTERVAL above 1.1 times the first pass", p.total, scaleCounts(p.verifications), n)
	case len(list) != n || len(stale) > 0:
		slices.Sort(stale)
		return p, fmt.Errorf("%d ImageBackups, %d of them not verified (or not Ready) in the pass, e.g. %v", len(list), len(stale),
			stale[:min(len(stale), 3)])
	}
	return p, nil
}

func sumValues(m map[string]float64) float64 {
	var sum float64
	for _, v := range m {
		sum += v
	}
	return sum
}
