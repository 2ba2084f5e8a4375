package main

// Rows "scale", "scale-10k" and "overhead" (rows 5 and 6 of the issue): the controller at scale on the cluster
// of `make local-up` (a private instance with its own state directory and ports, see scale_cluster.go), and
// the latency it adds to a Deployment whose image is already backed up. "scale" creates 2,600 workloads
// (the size of the issue, and with -smoke the tiny one CI runs); "scale-10k" creates 10,000 and checks the
// goals of that size (it is left out with -smoke). There is no peer: the rows report our absolute figures and
// check them against the targets (not judged with -smoke, except the exact counts: copies, upstream manifest
// reads and blob requests).
//
// The controller runs without the admission webhook (--webhook=false, no webhook configuration): these rows
// measure the reconciler, and with the webhook a Deployment whose copy exists is never patched at all (the
// webhook rows measure that, see webhook.go). It runs with the ImageBackup inventory, as it does by default;
// SCALE_CONTROLLER_ARGS=--inventory=false measures what that costs. Its requests to the API server are
// counted by verb and resource on their way (scale_requests.go), and reported in all and without the inventory
// keeper's (ImageBackups, which grow with copies, not workloads); its requests to the upstream registry are
// counted at a proxy in front of it.
//
// With -cpuprofile DIR the controller runs with --pprof-bind-address and the rows save its profiles there
// (inspect with go tool pprof -top FILE): scale.cpu.pprof (the first 30 s of convergence), scale.heap.pprof
// (once converged) and overhead.cpu.pprof (10 s of the overhead row).
//
// Environment, for investigations:
//
//	SCALE_CONTROLLER_ARGS  more controller flags, e.g. "--max-concurrent-reconciles=8"
//	SCALE_REPLICAS         replicas of every Deployment and StatefulSet (default 1, see scaleConfig)
//	BENCH_MIN_PORT         lowest port the private clusters listen on (see scaleFreePorts)

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

func init() {
	rows = append(rows,
		row{name: "scale", run: runScale},
		row{name: "scale-10k", run: runScale10k},
		row{name: "overhead", run: runOverhead},
	)
}

// scaleSize names a configuration of the scale rows: the name of its row.
type scaleSize string

const (
	scaleDefault scaleSize = "scale"
	scale10k     scaleSize = "scale-10k"
)

// scaleConfig sizes the rows.
type scaleConfig struct {
	size               scaleSize
	smoke              bool
	namespaces, images int
	// How many workloads of each kind the scale row creates.
	deployments, daemonSets, statefulSets, cronJobs int
	overheadSamples                                 int
	// nodes is the number of kwok nodes; every DaemonSet runs one pod per node.
	nodes int
	// replicas of every Deployment and StatefulSet: 1. The pods (and their rollouts when the controller
	// patches the templates) do not overwhelm a 2-core machine: the controller manager creates them at its
	// client rate limit, so most of that churn trails the controller. SCALE_REPLICAS=0 takes pods out of the
	// picture. CronJobs are suspended, so that none creates a Job during the run.
	replicas        int32
	createWorkers   int
	convergeTimeout time.Duration
	// profileDir receives the controller's profiles ("" for none).
	profileDir string
	targets    scaleTargets
}

// scaleTargets are the goals a size is checked against (by the benchmark, never by tests); a zero field has
// no target.
type scaleTargets struct {
	// fromFirstCreate and afterCreation bound the time until every workload is patched, from the first
	// create request and from the end of the last one.
	fromFirstCreate, afterCreation time.Duration
	// rssMiB bounds the controller's peak resident memory while it converges.
	rssMiB int
	// requestsPerWorkload bounds the controller's API server requests while it converges, per workload.
	requestsPerWorkload float64
}

func scaleConfigFor(env *benchEnv, size scaleSize) scaleConfig {
	cfg := scaleConfig{
		size: size, namespaces: 50, deployments: 2000, daemonSets: 200, statefulSets: 200, cronJobs: 200, images: 100,
		overheadSamples: 200, nodes: 1, replicas: 1, createWorkers: 16, convergeTimeout: 10 * time.Minute,
		profileDir: env.cpuProfile,
		targets:    scaleTargets{fromFirstCreate: 2 * time.Minute, rssMiB: 150, requestsPerWorkload: 2},
	}
	switch {
	case env.smoke:
		cfg.smoke = true
		cfg.namespaces, cfg.deployments, cfg.daemonSets, cfg.statefulSets, cfg.cronJobs = 2, 20, 2, 2, 2
		cfg.images, cfg.overheadSamples = 5, 20
		cfg.convergeTimeout = 2 * time.Minute
	case size == scale10k:
		cfg.namespaces, cfg.deployments, cfg.daemonSets, cfg.statefulSets, cfg.cronJobs = 200, 8000, 1000, 500, 500
		cfg.images = 500
		// Generous: on a busy 2-core machine the row takes tens of minutes, and its counts are worth having then too.
		cfg.convergeTimeout = time.Hour
		cfg.targets = scaleTargets{afterCreation: 90 * time.Second, rssMiB: 200, requestsPerWorkload: 2}
	}
	if r, err := strconv.Atoi(os.Getenv("SCALE_REPLICAS")); err == nil && r >= 0 {
		cfg.replicas = int32(min(r, math.MaxInt32))
	}
	return cfg
}

// Targets of the overhead row (the issue's), and the image its Deployments use.
const (
	targetOverheadP99  = 50 * time.Millisecond
	overheadImageIndex = 7
)

// manifestsPerScaleImage is how many manifests a copy of one of the rows' images reads: its index and the
// image of each of its two platforms (see pushScaleImages).
const manifestsPerScaleImage = 3

func (cfg scaleConfig) workloads() int {
	return cfg.deployments + cfg.daemonSets + cfg.statefulSets + cfg.cronJobs
}

// kindCounts are the number of workloads of each kind of scaleKinds.
func (cfg scaleConfig) kindCounts() map[string]int {
	return map[string]int{"Deployment": cfg.deployments, "DaemonSet": cfg.daemonSets, "StatefulSet": cfg.statefulSets,
		"CronJob": cfg.cronJobs}
}

func (cfg scaleConfig) describe() string {
	return fmt.Sprintf("%d Deployments + %d DaemonSets + %d StatefulSets + %d CronJobs in %d namespaces, %d images",
		cfg.deployments, cfg.daemonSets, cfg.statefulSets, cfg.cronJobs, cfg.namespaces, cfg.images)
}

func (cfg scaleConfig) setup() string {
	return fmt.Sprintf("%d kwok node(s), Deployment and StatefulSet replicas %d", cfg.nodes, cfg.replicas)
}

// profileSeconds is the length of a CPU profile: full, or a few seconds with -smoke.
func (cfg scaleConfig) profileSeconds(full int) int {
	if cfg.smoke {
		return 3
	}
	return full
}

// judge returns whether a performance target was met, or nil with -smoke, whose sizes say nothing about them.
func (cfg scaleConfig) judge(ok bool) *bool {
	if cfg.smoke {
		return nil
	}
	return &ok
}

func scaleImage(i int) string { return fmt.Sprintf("img-%03d:1", i) }

// overheadResults holds the overhead row measured by runScale on its cluster, for runOverhead to report.
var overheadResults struct {
	sync.Mutex
	done    bool
	smoke   bool
	results []Result
	err     error
}

// runScale measures row 5: the controller converging on many workloads at once, and restarting with
// everything backed up. When the overhead row runs too, it measures that on the same cluster, where every
// workload is in the controller's caches, and keeps it for runOverhead.
func runScale(ctx context.Context, env *benchEnv) ([]Result, error) {
	return runScaleSize(ctx, env, scaleDefault)
}

// runScale10k is row 5 at 10,000 workloads. With -smoke it is left out: CI's smoke run checks the harness with
// the scale row, which runs the same code at a tiny size.
func runScale10k(ctx context.Context, env *benchEnv) ([]Result, error) {
	if env.smoke {
		return []Result{{Row: string(scale10k), Measure: "-", Note: "not run with -smoke: 10,000 workloads take minutes; the scale row runs the same phases"}}, nil
	}
	return runScaleSize(ctx, env, scale10k)
}

func runScaleSize(ctx context.Context, env *benchEnv, size scaleSize) ([]Result, error) {
	cfg := scaleConfigFor(env, size)
	c, err := startScaleCluster(ctx, cfg)
	defer c.stop(ctx)
	if err != nil {
		return nil, err
	}
	if err := pushScaleImages(ctx, c.upstreamRegistry(), cfg.images); err != nil {
		return nil, err
	}
	results, err := scalePhase(ctx, c, cfg)
	if err != nil {
		return results, err
	}
	restart, err := restartPhase(ctx, c, cfg)
	results = append(results, restart...)
	if err != nil || size != scaleDefault || !rowSelected("overhead") {
		return results, err
	}

	overhead, err := overheadPhase(ctx, c, cfg,
		fmt.Sprintf("on the scale cluster after the restart (%d workloads in the caches)", cfg.workloads()))
	overheadResults.Lock()
	overheadResults.done, overheadResults.smoke, overheadResults.results, overheadResults.err = true, cfg.smoke, overhead, err
	overheadResults.Unlock()
	return results, nil
}

// runOverhead measures row 6: create → patched latency of Deployments whose image is already backed up.
// When runScale measured it on its cluster it reports that; otherwise it starts a cluster of its own.
func runOverhead(ctx context.Context, env *benchEnv) ([]Result, error) {
	overheadResults.Lock()
	done, sameSize, results, err := overheadResults.done, overheadResults.smoke == env.smoke, overheadResults.results, overheadResults.err
	overheadResults.Unlock()
	if done && sameSize {
		return results, err
	}

	cfg := scaleConfigFor(env, scaleDefault)
	c, err := startScaleCluster(ctx, cfg)
	defer c.stop(ctx)
	if err != nil {
		return nil, err
	}
	if err := pushScaleImages(ctx, c.upstreamRegistry(), cfg.images); err != nil {
		return nil, err
	}
	return overheadPhase(ctx, c, cfg, "on an otherwise empty cluster")
}

// rowSelected reports whether the harness runs the named row (-rows empty means all).
func rowSelected(name string) bool {
	f := flag.Lookup("rows")
	if f == nil || f.Value.String() == "" {
		return true
	}
	for n := range strings.SplitSeq(f.Value.String(), ",") {
		if strings.TrimSpace(n) == name {
			return true
		}
	}
	return false
}

func startScaleCluster(ctx context.Context, cfg scaleConfig) (*localCluster, error) {
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o750); err != nil {
			return nil, err
		}
	}
	return startLocalCluster(ctx, clusterOptions{
		nodes:          cfg.nodes,
		controllerArgs: strings.Fields(os.Getenv("SCALE_CONTROLLER_ARGS")),
		profileDir:     cfg.profileDir,
		webhook:        false, // see the file comment
		countRequests:  true,
	})
}

// pushScaleImages pushes images img-000:1 ... to the upstream registry as Docker Hub's library/ repositories, which
// the controller pulls through its --source-mirror: small random two-platform indexes like hack/seed's.
func pushScaleImages(ctx context.Context, host string, n int) error {
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			ref, err := name.ParseReference(host+"/library/"+scaleImage(i), name.Insecure)
			if err != nil {
				return err
			}
			idx, err := registrytest.RandomIndex(2, 4096)
			if err != nil {
				return err
			}
			if err := remote.WriteIndex(ref, idx, remote.WithContext(gctx)); err != nil {
				return fmt.Errorf("pushing %s: %w", ref, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	scaleLog("pushed %d images to the upstream registry in %s", n, time.Since(start).Round(10*time.Millisecond))
	return nil
}

// --- row 5: convergence ------------------------------------------------------------------------------------

func scalePhase(ctx context.Context, c *localCluster, cfg scaleConfig) ([]Result, error) {
	namespaces := make([]string, cfg.namespaces)
	for i := range namespaces {
		namespaces[i] = fmt.Sprintf("scale-%02d", i)
		if _, err := c.client.CoreV1().Namespaces().Create(ctx,
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespaces[i]}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	before, err := c.controllerMetrics(ctx)
	if err != nil {
		return nil, err
	}
	apiBefore, apiFailuresBefore := c.apiRequests()
	upstreamBefore := len(c.upstreamRequests())
	cpuBefore := c.componentCPU()
	profileDone := c.startCPUProfile(ctx, "scale", cfg.profileSeconds(30))

	scaleLog("creating %s", cfg.describe())
	start := time.Now()
	var createDuration time.Duration
	created := make(chan error, 1)
	go func() {
		err := createWorkloads(ctx, c, cfg, namespaces)
		createDuration = time.Since(start)
		created <- err
	}()

	total := float64(cfg.workloads())
	var patched, patchedAtCreated float64
	var patchedKinds map[string]float64
	lastReport := time.Now()
	var createErr error
	creating := true
	// Every poll has the controller render its /metrics (a few hundred KiB of garbage): four a second is
	// resolution enough against goals of minutes, and keeps the harness from weighing on what it measures.
	err = scalePoll(ctx, 250*time.Millisecond, cfg.convergeTimeout, "every workload to be patched", func() (bool, error) {
		if creating {
			select {
			case createErr = <-created:
				creating = false
				if createErr != nil {
					return false, createErr
				}
				patchedAtCreated = patched
			default:
			}
		}
		m, err := c.controllerMetrics(ctx)
		if err != nil {
			return false, err
		}
		patched = m.Sum("image_clone_workloads_patched_total", nil)
		patchedKinds = m.By("image_clone_workloads_patched_total", "kind")
		if time.Since(lastReport) >= 5*time.Second {
			lastReport = time.Now()
			scaleLog("%4.0fs: %.0f workloads patched (%s), %.0f images copied", time.Since(start).Seconds(), patched,
				scaleCounts(patchedKinds),
				m.Sum("image_clone_copies_total", map[string]string{"result": "copied"})-before.Sum("image_clone_copies_total", map[string]string{"result": "copied"}))
		}
		return !creating && allPatched(patchedKinds, cfg.kindCounts()), nil
	})
	converge := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("%d of %d workloads patched (%s) after %s: %w%s", int(patched), int(total),
			scaleCounts(patchedKinds), converge.Round(time.Second), err, c.controllerLogTail())
	}
	scaleLog("all %d workloads patched %s after creation started (creation took %s)", int(total),
		converge.Round(10*time.Millisecond), createDuration.Round(10*time.Millisecond))
	cpu := c.componentCPU().minus(cpuBefore)
	pods := countPods(ctx, c)
	c.saveHeapProfile(ctx, "scale")

	pid, err := c.controllerPID()
	if err != nil {
		return nil, err
	}
	rss, err := peakRSS(pid)
	if err != nil {
		return nil, err
	}
	// The patches make the workloads' generation change, which reconciles each once more (nothing to do).
	if err := c.waitQuiet(ctx, 5*time.Minute); err != nil {
		return nil, err
	}
	<-profileDone
	after, err := c.controllerMetrics(ctx)
	if err != nil {
		return nil, err
	}
	if err := verifyPatched(ctx, c, namespaces, cfg); err != nil {
		return nil, err
	}

	copies := scaleDelta(before, after, "image_clone_copies_total", "result")
	requests := scaleDelta(before, after, "rest_client_requests_total", "method")
	codes := scaleDelta(before, after, "rest_client_requests_total", "code")
	requestsTotal := sumCounts(requests)
	apiAfter, apiFailuresAfter := c.apiRequests()
	byResource, failures := deltaCounts(apiBefore, apiAfter), deltaCounts(apiFailuresBefore, apiFailuresAfter)
	keeperPath, workloadPath := splitKeeper(byResource)
	upstream := c.upstreamRequests()[upstreamBefore:]
	manifestGets := upstreamManifestGets(upstream)
	wantGets := float64(cfg.images * manifestsPerScaleImage)
	reconciles := scaleDelta(before, after, "controller_runtime_reconcile_total", "result")
	reconcilesByController := scaleDelta(before, after, "controller_runtime_reconcile_total", "controller")
	patchedByKind := scaleDelta(before, after, "image_clone_workloads_patched_total", "kind")
	afterCreation := converge - createDuration

	row := string(cfg.size) + ": " + cfg.describe()
	setup := fmt.Sprintf("%s, CronJobs suspended (%s pods existed when all were patched); controller flags: %s", cfg.setup(), pods,
		controllerFlags())
	t := cfg.targets
	return []Result{
		{
			Row:     row,
			Measure: "seconds from the first create to every workload patched",
			Values:  map[string]float64{"ours": converge.Seconds()},
			Target:  durationTarget(t.fromFirstCreate),
			Met:     cfg.judgeTarget(t.fromFirstCreate > 0, converge < t.fromFirstCreate),
			Note: fmt.Sprintf("%s; patched by kind: %s; creating took %.1f s (%d parallel clients), %.0f workloads were patched by then; "+
				"mean reconcile %s, mean wait in queue %s, mean copy %s; CPU seconds while converging: %s",
				setup, scaleCounts(patchedByKind), createDuration.Seconds(), cfg.createWorkers, patchedAtCreated,
				meanSeconds(before, after, "controller_runtime_reconcile_time_seconds"),
				meanSeconds(before, after, "workqueue_queue_duration_seconds"),
				meanSeconds(before, after, "image_clone_copy_duration_seconds"), cpu),
		},
		{
			Row:     row,
			Measure: "seconds from the end of creation to every workload patched",
			Values:  map[string]float64{"ours": afterCreation.Seconds()},
			Target:  durationTarget(t.afterCreation),
			Met:     cfg.judgeTarget(t.afterCreation > 0, afterCreation < t.afterCreation),
			Note: fmt.Sprintf("creating took %.1f s; %.0f of %.0f workloads were patched when the last create returned",
				createDuration.Seconds(), patchedAtCreated, total),
		},
		{
			Row:     row,
			Measure: "images copied (image_clone_copies_total{result=copied})",
			Values:  map[string]float64{"ours": copies["copied"]},
			Target:  fmt.Sprintf("= %d", cfg.images),
			Met:     scaleMet(copies["copied"] == float64(cfg.images)),
			Note: fmt.Sprintf("copy requests: %s; source tags answered by the tag cache: %.0f (present = found in "+
				"the backup registry, which is asked on every copy)",
				scaleCounts(copies), after.Sum("image_clone_tag_cache_hits_total", nil)-before.Sum("image_clone_tag_cache_hits_total", nil)),
		},
		{
			Row:     row,
			Measure: "upstream manifest GETs (at the upstream registry's counting proxy)",
			Values:  map[string]float64{"ours": manifestGets},
			Target:  fmt.Sprintf("= %.0f (%d per image: its index and 2 platforms)", wantGets, manifestsPerScaleImage),
			Met:     scaleMet(manifestGets == wantGets),
			Note:    "all upstream requests: " + listCounts(upstreamByKind(upstream)),
		},
		{
			Row:     row,
			Measure: "API server requests by the controller per workload",
			Values:  map[string]float64{"ours": requestsTotal / total},
			Target:  fmt.Sprintf("<= %g", t.requestsPerWorkload),
			Met:     cfg.judgeTarget(t.requestsPerWorkload > 0, requestsTotal/total <= t.requestsPerWorkload),
			Note: fmt.Sprintf("%.0f requests (rest_client_requests_total) from the first create until the queues were empty; "+
				"by verb and resource (counted on their way to the API server, %.0f): %s; not 2xx: %s; by method: %s; by code: %s; "+
				"reconciles: %s; by controller: %s",
				requestsTotal, sumCounts(byResource), listCounts(byResource), listCounts(failures), scaleCounts(requests),
				scaleCounts(codes), scaleCounts(reconciles), scaleCounts(reconcilesByController)),
		},
		{
			Row:     row,
			Measure: "API server requests per workload, without the inventory keeper's (ImageBackups)",
			Values:  map[string]float64{"ours": sumCounts(workloadPath) / total},
			Note: fmt.Sprintf("what the workload reconcilers make, counted on the way to the API server: %s; the keeper made %.0f "+
				"(%.1f per ImageBackup, %.2f per workload): %s", listCounts(workloadPath), sumCounts(keeperPath),
				sumCounts(keeperPath)/float64(cfg.images), sumCounts(keeperPath)/total, listCounts(keeperPath)),
		},
		{
			Row:     row,
			Measure: "controller peak RSS, MiB (VmHWM)",
			Values:  map[string]float64{"ours": float64(rss) / (1 << 20)},
			Target:  fmt.Sprintf("< %d MiB", t.rssMiB),
			Met:     cfg.judge(rss < int64(t.rssMiB)<<20),
			Note: fmt.Sprintf("at the end of convergence, with every workload and Namespace in the informer caches; "+
				"resident now: %s; after the restart, with nothing to copy, the peak is lower (see the restart row)", rssParts(pid)),
		},
	}, nil
}

// durationTarget states a time target, or "" for none.
func durationTarget(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return fmt.Sprintf("< %g s", d.Seconds())
}

// judgeTarget is judge for a target the size may not have.
func (cfg scaleConfig) judgeTarget(has, ok bool) *bool {
	if !has {
		return nil
	}
	return cfg.judge(ok)
}

// scaleKinds are the workload kinds the rows create, as the kind label of the controller's metrics names them.
var scaleKinds = []string{"Deployment", "DaemonSet", "StatefulSet", "CronJob"}

// createWorkloads creates the workloads round-robin over the namespaces and images, with cfg.createWorkers
// parallel requests. The kinds other than Deployments each use their own mix of the images.
func createWorkloads(ctx context.Context, c *localCluster, cfg scaleConfig, namespaces []string) error {
	return createWorkloadsNamed(ctx, c, cfg, namespaces, "", func(kind string, i int) string {
		switch kind {
		case "DaemonSet":
			i = i*7 + 3
		case "StatefulSet":
			i = i*11 + 5
		case "CronJob":
			i = i*13 + 1
		}
		return scaleImage(i % cfg.images)
	})
}

// createWorkloadsNamed creates cfg's workloads round-robin over the namespaces, named prefix+"d-0000" and so
// on, the i-th of a kind with image(kind, i), with cfg.createWorkers parallel requests.
func createWorkloadsNamed(ctx context.Context, c *localCluster, cfg scaleConfig, namespaces []string, prefix string,
	image func(kind string, i int) string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.createWorkers)
	for i := range max(cfg.deployments, cfg.daemonSets, cfg.statefulSets, cfg.cronJobs) {
		ns := namespaces[i%len(namespaces)]
		if i < cfg.deployments {
			g.Go(func() error {
				d := scaleDeployment(ns, fmt.Sprintf("%sd-%04d", prefix, i), image("Deployment", i), cfg.replicas)
				_, err := c.client.AppsV1().Deployments(d.Namespace).Create(gctx, d, metav1.CreateOptions{})
				return err
			})
		}
		// The other kinds are interleaved with the first Deployments instead of created all at the end.
		if i < cfg.daemonSets {
			g.Go(func() error {
				ds := scaleDaemonSet(ns, fmt.Sprintf("%sds-%04d", prefix, i), image("DaemonSet", i))
				_, err := c.client.AppsV1().DaemonSets(ds.Namespace).Create(gctx, ds, metav1.CreateOptions{})
				return err
			})
		}
		if i < cfg.statefulSets {
			g.Go(func() error {
				s := scaleStatefulSet(ns, fmt.Sprintf("%ssts-%04d", prefix, i), image("StatefulSet", i), cfg.replicas)
				_, err := c.client.AppsV1().StatefulSets(s.Namespace).Create(gctx, s, metav1.CreateOptions{})
				return err
			})
		}
		if i < cfg.cronJobs {
			g.Go(func() error {
				cj := scaleCronJob(ns, fmt.Sprintf("%scj-%04d", prefix, i), image("CronJob", i))
				_, err := c.client.BatchV1().CronJobs(cj.Namespace).Create(gctx, cj, metav1.CreateOptions{})
				return err
			})
		}
	}
	return g.Wait()
}

func scalePodTemplate(app, image string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: image}},
		},
	}
}

func scaleDeployment(namespace, name, image string, replicas int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: scalePodTemplate(name, image),
		},
	}
}

func scaleDaemonSet(namespace, name, image string) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: scalePodTemplate(name, image),
		},
	}
}

// allPatched reports whether every kind has had as many patches as it has workloads.
func allPatched(patched map[string]float64, want map[string]int) bool {
	for kind, n := range want {
		if patched[kind] < float64(n) {
			return false
		}
	}
	return true
}

func scaleStatefulSet(namespace, name, image string, replicas int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: scalePodTemplate(name, image),
		},
	}
}

// scaleCronJob returns a suspended CronJob: the row measures its template, and the Jobs it would create at
// the top of the hour would only add pods that the controller leaves to the CronJob.
func scaleCronJob(namespace, name, image string) *batchv1.CronJob {
	template := scalePodTemplate(name, image)
	template.Spec.RestartPolicy = corev1.RestartPolicyNever
	suspend := true
	return &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: batchv1.CronJobSpec{
			Schedule:    "0 * * * *",
			Suspend:     &suspend,
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: template}},
		},
	}
}

// countPods returns how many pods the cluster has, from the API server's cache ("?" if the list fails).
func countPods(ctx context.Context, c *localCluster) string {
	pods, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return "?"
	}
	return strconv.Itoa(len(pods.Items))
}

// verifyPatched checks, from the API server, that every workload of every kind points at the backup registry.
func verifyPatched(ctx context.Context, c *localCluster, namespaces []string, cfg scaleConfig) error {
	prefix := c.backupRegistry() + "/"
	good := map[string]int{}
	var bad int
	var example string
	check := func(kind, name string, spec corev1.PodSpec) {
		if image := spec.Containers[0].Image; strings.HasPrefix(image, prefix) {
			good[kind]++
		} else {
			bad++
			example = kind + " " + name + " has " + image
		}
	}
	for _, ns := range namespaces {
		ds, err := c.client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, d := range ds.Items {
			check("Deployment", ns+"/"+d.Name, d.Spec.Template.Spec)
		}
		dss, err := c.client.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, d := range dss.Items {
			check("DaemonSet", ns+"/"+d.Name, d.Spec.Template.Spec)
		}
		sts, err := c.client.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, s := range sts.Items {
			check("StatefulSet", ns+"/"+s.Name, s.Spec.Template.Spec)
		}
		cjs, err := c.client.BatchV1().CronJobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, cj := range cjs.Items {
			check("CronJob", ns+"/"+cj.Name, cj.Spec.JobTemplate.Spec.Template.Spec)
		}
	}
	for kind, want := range cfg.kindCounts() {
		if bad > 0 || good[kind] != want {
			return fmt.Errorf("%d %ss point at the backup registry, want %d; %d workloads do not (e.g. %s)",
				good[kind], kind, want, bad, example)
		}
	}
	return nil
}

// --- row 5: restart ----------------------------------------------------------------------------------------

// blobHandlers are the distribution registry's handlers (the "handler" label of registry_http_requests_total)
// that serve blobs and blob uploads.
var blobHandlers = []string{"blob", "blob_upload", "blob_upload_chunk"}

func restartPhase(ctx context.Context, c *localCluster, cfg scaleConfig) ([]Result, error) {
	regBefore, err := c.backupRegistryMetrics(ctx)
	if err != nil {
		return nil, err
	}
	apiBefore, apiFailuresBefore := c.apiRequests()
	upstreamBefore := len(c.upstreamRequests())
	scaleLog("restarting the controller")
	start := time.Now()
	if err := c.restartController(ctx); err != nil {
		return nil, err
	}
	script := time.Since(start)
	pid, err := c.controllerPID()
	if err != nil {
		return nil, err
	}
	started, err := processStart(pid)
	if err != nil {
		return nil, err
	}
	var m metricstest.Samples
	err = scalePoll(ctx, 50*time.Millisecond, max(5*time.Minute, cfg.convergeTimeout/2), "every workload to be reconciled after the restart", func() (bool, error) {
		if m, err = c.controllerMetrics(ctx); err != nil {
			return false, err
		}
		for kind, n := range cfg.kindCounts() {
			if m.Sum("controller_runtime_reconcile_total", map[string]string{"controller": scaleController(kind)}) < float64(n) {
				return false, nil
			}
		}
		return controllersQuiet(m) && c.controllerReady(ctx), nil
	})
	steady := time.Since(started)
	if err != nil {
		return nil, fmt.Errorf("%w%s", err, c.controllerLogTail())
	}
	scaleLog("controller steady %s after it started (the restart script took %s)", steady.Round(10*time.Millisecond),
		script.Round(10*time.Millisecond))
	// Anything the reconciles set off (Events, copies) has a moment to reach the registry and the API server.
	time.Sleep(time.Second)
	regAfter, err := c.backupRegistryMetrics(ctx)
	if err != nil {
		return nil, err
	}
	m, err = c.controllerMetrics(ctx)
	if err != nil {
		return nil, err
	}
	rss, err := peakRSS(pid)
	if err != nil {
		return nil, err
	}
	handlers := scaleDelta(regBefore, regAfter, "registry_http_requests_total", "handler")
	var blobs float64
	for _, h := range blobHandlers {
		blobs += handlers[h]
	}
	requests := m.By("rest_client_requests_total", "method")
	reconciles := m.By("controller_runtime_reconcile_total", "controller")
	apiAfter, apiFailuresAfter := c.apiRequests()
	upstream := c.upstreamRequests()[upstreamBefore:]
	manifestGets := upstreamManifestGets(upstream)

	row := string(cfg.size) + " restart: " + cfg.describe() + ", all backed up"
	return []Result{
		{
			Row:     row,
			Measure: "seconds from process start to every workload reconciled (queues empty, ready)",
			Values:  map[string]float64{"ours": steady.Seconds()},
			Note: fmt.Sprintf("hack/local-up.sh --restart-controller took %.1f s (stop, start, /readyz); peak RSS %.0f MiB; "+
				"API requests since start: %s; by verb and resource: %s; not 2xx: %s; reconciles: %s; copy requests: %s",
				script.Seconds(), float64(rss)/(1<<20), scaleCounts(requests), listCounts(deltaCounts(apiBefore, apiAfter)),
				listCounts(deltaCounts(apiFailuresBefore, apiFailuresAfter)), scaleCounts(reconciles),
				scaleCounts(m.By("image_clone_copies_total", "result"))),
		},
		{
			Row:     row,
			Measure: "upstream manifest GETs (at the upstream registry's counting proxy)",
			Values:  map[string]float64{"ours": manifestGets},
			Target:  "= 0",
			Met:     scaleMet(manifestGets == 0),
			Note:    "all upstream requests: " + listCounts(upstreamByKind(upstream)),
		},
		{
			Row:     row,
			Measure: "blob requests at the backup registry (registry_http_requests_total, blob handlers)",
			Values:  map[string]float64{"ours": blobs},
			Target:  "= 0",
			Met:     scaleMet(blobs == 0),
			Note:    "all backup registry requests by handler: " + scaleCounts(handlers),
		},
	}, nil
}

// scaleController is the name of the controller of a workload kind (see internal/controller's setup.go).
func scaleController(kind string) string { return "image-clone-" + strings.ToLower(kind) }

// controllersQuiet reports whether every controller, the inventory's too, has an empty queue and no reconcile
// running.
func controllersQuiet(m metricstest.Samples) bool {
	ctrls := []string{inventoryController}
	for _, kind := range workload.KindNames {
		ctrls = append(ctrls, scaleController(kind))
	}
	for _, ctrl := range ctrls {
		if m.Sum("workqueue_depth", map[string]string{"name": ctrl}) != 0 ||
			m.Sum("controller_runtime_active_workers", map[string]string{"controller": ctrl}) != 0 {
			return false
		}
	}
	return true
}

// waitQuiet waits until the controllers have been quiet for two scrapes in a row.
func (c *localCluster) waitQuiet(ctx context.Context, timeout time.Duration) error {
	streak := 0
	return scalePoll(ctx, 100*time.Millisecond, timeout, "the controller's queues to drain", func() (bool, error) {
		m, err := c.controllerMetrics(ctx)
		if err != nil {
			return false, err
		}
		if controllersQuiet(m) {
			streak++
		} else {
			streak = 0
		}
		return streak >= 2, nil
	})
}

// --- row 6: overhead ---------------------------------------------------------------------------------------

// overheadPhase creates Deployments one at a time with an image that is already backed up (the first one,
// not counted, makes sure of that) and measures from the create request until a watch sees the patched image.
func overheadPhase(ctx context.Context, c *localCluster, cfg scaleConfig, where string) ([]Result, error) {
	const ns = "bench-overhead"
	if _, err := c.client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	image := scaleImage(overheadImageIndex % cfg.images)
	prefix := c.backupRegistry() + "/"

	w, err := c.client.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	type sighting struct {
		name string
		at   time.Time
	}
	seen := make(chan sighting, 64)
	go func() {
		defer close(seen)
		for ev := range w.ResultChan() {
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok || ev.Type == watch.Deleted || !strings.HasPrefix(d.Spec.Template.Spec.Containers[0].Image, prefix) {
				continue
			}
			select {
			case seen <- sighting{d.Name, time.Now()}:
			case <-ctx.Done():
				return
			}
		}
	}()

	profileDone := c.startCPUProfile(ctx, "overhead", cfg.profileSeconds(10))
	cpuBefore := c.componentCPU()
	var before, after metricstest.Samples
	// The first sample (not counted) runs before the metrics are read.
	scaleLog("measuring create → patched for %d Deployments with %s (already backed up)", cfg.overheadSamples, image)
	samples := make([]time.Duration, 0, cfg.overheadSamples)
	timings := map[string]*overheadTiming{}
	for i := range cfg.overheadSamples + 1 {
		d := scaleDeployment(ns, fmt.Sprintf("o-%04d", i), image, cfg.replicas)
		start := time.Now()
		if _, err := c.client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		t := &overheadTiming{start: start, created: time.Now()}
		timeout := time.After(30 * time.Second)
	wait:
		for {
			select {
			case s, ok := <-seen:
				if !ok {
					return nil, errors.New("the watch of the overhead namespace ended")
				}
				if s.name == d.Name {
					if i > 0 { // the first one makes sure the backup exists
						samples = append(samples, s.at.Sub(start))
						t.seen = s.at
						timings[d.Name] = t
					} else if before, err = c.controllerMetrics(ctx); err != nil {
						return nil, err
					}
					break wait
				}
			case <-timeout:
				return nil, fmt.Errorf("deployment %s/%s not patched within 30s%s", ns, d.Name, c.controllerLogTail())
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	cpu := c.componentCPU().minus(cpuBefore)
	// The bench's watch may see the last patch before the controller has counted its response.
	if err := c.waitQuiet(ctx, 10*time.Second); err != nil {
		return nil, err
	}
	if after, err = c.controllerMetrics(ctx); err != nil {
		return nil, err
	}
	<-profileDone
	breakdown, err := overheadBreakdown(ctx, c, ns, timings)
	if err != nil {
		return nil, err
	}

	slices.Sort(samples)
	p50, p99 := scalePercentile(samples, 50), scalePercentile(samples, 99)
	scaleLog("overhead p50 %s, p99 %s, max %s", p50, p99, samples[len(samples)-1])
	row := fmt.Sprintf("overhead: Deployment create → patched, backup exists (%d samples)", len(samples))
	note := fmt.Sprintf("%s; one at a time, create request to the patched object on a watch; %s; controller flags: %s",
		where, cfg.setup(), controllerFlags())
	return []Result{
		{
			Row:     row,
			Measure: "milliseconds, p50",
			Values:  map[string]float64{"ours": scaleMs(p50)},
			Note:    note,
		},
		{
			Row:     row,
			Measure: "milliseconds, p99",
			Values:  map[string]float64{"ours": scaleMs(p99)},
			Target:  fmt.Sprintf("< %d ms", targetOverheadP99.Milliseconds()),
			Met:     cfg.judge(p99 < targetOverheadP99),
			Note: fmt.Sprintf("min %.1f ms, slowest %s; p50/p99 of the legs: %s; in the controller (means over the "+
				"reconcile that patches and the one its patch sets off): wait in queue %s, reconcile %s; "+
				"API requests by the controller: %s; CPU seconds: %s", scaleMs(samples[0]), slowest(samples, 5), breakdown,
				meanSeconds(before, after, "workqueue_queue_duration_seconds"),
				meanSeconds(before, after, "controller_runtime_reconcile_time_seconds"),
				scaleCounts(scaleDelta(before, after, "rest_client_requests_total", "method")), cpu),
		},
	}, nil
}

// overheadTiming holds the moments of one overhead sample.
type overheadTiming struct {
	start, created, seen time.Time
	patched              time.Time // when the controller's patch returned: the eventTime of its ImagesBackedUp Event
}

// overheadBreakdown splits the samples into legs, using the ImagesBackedUp Event that the controller records
// right after its patch returns (eventTime has microseconds): the create request; from the create response to
// the controller's patch response (watch to the controller, queue, reconcile with its registry and patch
// requests); from there to the bench's watch seeing the patched object.
func overheadBreakdown(ctx context.Context, c *localCluster, ns string, timings map[string]*overheadTiming) (string, error) {
	err := scalePoll(ctx, 100*time.Millisecond, 10*time.Second, "the overhead Deployments' Events", func() (bool, error) {
		events, err := c.client.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		found := 0
		for _, ev := range events.Items {
			if t := timings[ev.Regarding.Name]; t != nil && ev.Reason == "ImagesBackedUp" {
				t.patched = ev.EventTime.Time
				found++
			}
		}
		return found == len(timings), nil
	})
	if err != nil {
		return "", err
	}
	var create, controller, delivery []time.Duration
	for _, t := range timings {
		create = append(create, t.created.Sub(t.start))
		controller = append(controller, t.patched.Sub(t.created))
		delivery = append(delivery, t.seen.Sub(t.patched))
	}
	leg := func(name string, d []time.Duration) string {
		slices.Sort(d)
		return fmt.Sprintf("%s %.1f/%.1f ms", name, scaleMs(scalePercentile(d, 50)), scaleMs(scalePercentile(d, 99)))
	}
	return strings.Join([]string{
		leg("create request", create),
		leg("create response → controller's patch response", controller),
		leg("→ bench's watch", delivery),
	}, ", "), nil
}

// slowest lists the n largest of sorted samples in milliseconds, largest first.
func slowest(sorted []time.Duration, n int) string {
	var parts []string
	for i := len(sorted) - 1; i >= 0 && i >= len(sorted)-n; i-- {
		parts = append(parts, fmt.Sprintf("%.1f", scaleMs(sorted[i])))
	}
	return strings.Join(parts, ", ") + " ms"
}

// scalePercentile returns the nearest-rank percentile p of sorted samples.
func scalePercentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func scaleMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// --- helpers -----------------------------------------------------------------------------------------------

func scaleMet(ok bool) *bool { return &ok }

// scaleDelta returns after - before for the samples of metric name, grouped by label.
func scaleDelta(before, after metricstest.Samples, name, label string) map[string]float64 {
	out := after.By(name, label)
	for k, v := range before.By(name, label) {
		out[k] -= v
	}
	return out
}

// meanSeconds returns the mean of histogram name between two scrapes, per controller where the histogram has a
// controller label, e.g. "image-clone-deployment=12ms image-clone-daemonset=9ms".
func meanSeconds(before, after metricstest.Samples, name string) string {
	sums, counts := scaleDelta(before, after, name+"_sum", "controller"), scaleDelta(before, after, name+"_count", "controller")
	keys := slices.Sorted(maps.Keys(counts))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		if !strings.HasPrefix(k, "image-clone-") && k != "" || counts[k] == 0 {
			continue
		}
		mean := time.Duration(sums[k] / counts[k] * float64(time.Second)).Round(100 * time.Microsecond)
		if k == "" {
			parts = append(parts, mean.String())
		} else {
			parts = append(parts, strings.TrimPrefix(k, "image-clone-")+" "+mean.String())
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// scaleCounts renders counts as "a=1 b=2", sorted by key, leaving out zeros.
func scaleCounts(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%s", k, strconv.FormatFloat(m[k], 'f', -1, 64))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func controllerFlags() string {
	if f := os.Getenv("SCALE_CONTROLLER_ARGS"); f != "" {
		return "defaults, --webhook=false, plus " + f
	}
	return "defaults, --webhook=false"
}

// componentCPU returns the CPU time used so far by each component of the cluster, by this process and by the
// whole machine.
func (c *localCluster) componentCPU() cpuSample {
	out := cpuSample{at: time.Now(), procs: map[string]time.Duration{}}
	entries, _ := os.ReadDir(filepath.Join(c.dir, "pids"))
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(c.dir, "pids", e.Name()))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			if t, err := scaleProcessCPU(pid); err == nil {
				out.procs[name] = t
			}
		}
	}
	if t, err := scaleProcessCPU(os.Getpid()); err == nil {
		out.procs["bench"] = t
	}
	out.machine, _ = machineBusy()
	return out
}

// cpuSample is the CPU time used so far by each component, and by the machine (all processes, also those of
// other users, which compete for the same cores).
type cpuSample struct {
	at      time.Time
	procs   map[string]time.Duration
	machine time.Duration
}

// minus returns the CPU time used between before and t.
func (t cpuSample) minus(before cpuSample) cpuUsage {
	out := cpuUsage{wall: t.at.Sub(before.at), procs: map[string]time.Duration{}, machine: t.machine - before.machine}
	for k, v := range t.procs {
		out.procs[k] = v - before.procs[k]
	}
	return out
}

// cpuUsage is the CPU time used in an interval of length wall.
type cpuUsage struct {
	wall    time.Duration
	procs   map[string]time.Duration
	machine time.Duration
}

// String lists the components, busiest first, and how busy the machine was.
func (t cpuUsage) String() string {
	keys := make([]string, 0, len(t.procs))
	var ours time.Duration
	for k, v := range t.procs {
		keys = append(keys, k)
		ours += v
	}
	sort.Slice(keys, func(i, j int) bool { return t.procs[keys[i]] > t.procs[keys[j]] })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, t.procs[k].Seconds()))
	}
	return fmt.Sprintf("%s; machine busy %.1f of %.1f core-seconds (%d cores), %.1f of it outside this benchmark",
		strings.Join(parts, ", "), t.machine.Seconds(), t.wall.Seconds()*float64(runtime.NumCPU()), runtime.NumCPU(),
		max(0, (t.machine-ours).Seconds()))
}

// machineBusy returns the CPU time all processes of the machine used so far (/proc/stat: user, nice, system,
// irq, softirq and steal; clock ticks assumed 100 Hz).
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, errors.New("unexpected /proc/stat")
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system (idle iowait) irq softirq steal
		n, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100, nil
}

// scaleProcessCPU returns the user plus system CPU time of process pid (clock ticks assumed 100 Hz).
func scaleProcessCPU(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	const utimeField = 14 - 3 // fields 14 (utime) and 15 (stime), counting from the state (field 3)
	if len(fields) <= utimeField+1 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	var ticks int64
	for _, f := range fields[utimeField : utimeField+2] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100, nil
}

// startCPUProfile starts a CPU profile of the controller, saved as <phase>.cpu.pprof in the profile directory
// when profiling is on; the returned channel is closed once the profile is saved (at once when profiling is off).
func (c *localCluster) startCPUProfile(ctx context.Context, phase string, seconds int) <-chan struct{} {
	done := make(chan struct{})
	dir := c.profileDir
	if dir == "" || c.pprofPort == 0 {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		file := filepath.Join(dir, phase+".cpu.pprof")
		if err := c.saveProfile(ctx, "profile", "seconds="+strconv.Itoa(seconds), file); err != nil {
			scaleLog("CPU profile for %s failed: %v", phase, err)
			return
		}
		scaleLog("saved %s", file)
	}()
	return done
}

// saveHeapProfile saves the controller's heap profile as <phase>.heap.pprof in the profile directory when
// profiling is on.
func (c *localCluster) saveHeapProfile(ctx context.Context, phase string) {
	dir := c.profileDir
	if dir == "" || c.pprofPort == 0 {
		return
	}
	file := filepath.Join(dir, phase+".heap.pprof")
	if err := c.saveProfile(ctx, "heap", "gc=1", file); err != nil {
		scaleLog("heap profile for %s failed: %v", phase, err)
		return
	}
	scaleLog("saved %s", file)
}
