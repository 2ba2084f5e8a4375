package main

// Rows "verify", "memory" and "restore": the ImageBackup inventory (internal/inventory, the keeper) in the real
// controller binary, on private instances of the cluster of `make local-up` (see scale_cluster.go). Every copy
// is made by the controller itself, from Deployments whose images are in the upstream registry, so each
// ImageBackup is recorded the way it is in production.
//
//   - verify (inventory_verify.go): one verification pass over 2,000 intact backups. The controller is
//     restarted with a short --verify-interval once every copy is due, so that it verifies them all at once
//     (the pass duration); the next pass, driven by the interval alone, is counted: requests at the backup
//     registry (its own request metrics) and at the upstream registry (a counting proxy the controller pulls
//     through, as its --source-mirror), divided by the verifications it made (image_clone_verifications_total),
//     each backup exactly once.
//   - memory (this file): the controller's Go heap in use after a forced GC, with no ImageBackups and with
//     2,000 ImageBackups and their Deployments, ReplicaSets and Pods, and with the same objects under
//     --inventory=false: per 1,000 backups, the controller's growth and the keeper's share of it.
//   - restore (inventory_restore.go): 100 copies lost at once from the backup registry's storage, and the time
//     until all are Ready again at their recorded digests, with --verify-interval 2s (detection waits for the
//     next verification of each copy), and the bytes restored (image_clone_restored_bytes_total).
//
// verify and memory share one cluster when both run. Exact counts (requests per backup, upstream requests,
// restores, restored bytes) are judged with -smoke too; times and memory are only reported.
//
// With -cpuprofile DIR the memory row saves the controller's heap profiles there (go tool pprof -sample_index
// inuse_space -top FILE): memory.heap.pprof with the inventory, memory-no-inventory.heap.pprof without.
//
// Environment, for investigations:
//
//	INVENTORY_BACKUPS          backups of the verify and memory rows (default 2000)
//	INVENTORY_VERIFY_INTERVAL  --verify-interval of the verify row's passes (default 5m)
//	INVENTORY_CONTROLLER_ARGS  more controller flags for all three rows

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

func init() {
	rows = append(rows,
		row{name: "verify", run: runVerify},
		row{name: "memory", run: runMemory},
		row{name: "restore", run: runRestore},
	)
	// The ImageBackup client logs nothing the rows need; controller-runtime prints a stack trace when it has
	// no logger.
	ctrllog.SetLogger(logr.Discard())
}

// inventoryController is the name of the keeper's controller (its workqueue and reconcile metrics).
const inventoryController = "image-clone-inventory"

// inventoryConfig sizes the rows.
type inventoryConfig struct {
	smoke bool
	// backups is how many copies (one image, one Deployment each) the verify and memory rows keep, over
	// namespaces namespaces.
	backups, namespaces int
	// verifyInterval is the --verify-interval of the verify row's passes.
	verifyInterval time.Duration
	// restores is how many copies the restore row loses, checked every restoreInterval.
	restores        int
	restoreInterval time.Duration
	// setupTimeout bounds making the copies and the rollouts settling; quietTimeout a restarted controller's
	// reconciling everything once.
	setupTimeout, quietTimeout time.Duration
}

func inventoryConfigFor(env *benchEnv) inventoryConfig {
	// The verify row's interval must be longer than a restarted controller takes to reconcile every
	// Deployment and ImageBackup once, so that its second pass finds it quiet: minutes for 2,000 on a busy
	// 2-core machine, whose API server answers slowly.
	cfg := inventoryConfig{backups: 2000, namespaces: 20, verifyInterval: 5 * time.Minute, restores: 100,
		restoreInterval: 2 * time.Second, setupTimeout: 30 * time.Minute, quietTimeout: 15 * time.Minute}
	if env.smoke {
		cfg = inventoryConfig{smoke: true, backups: 20, namespaces: 2, verifyInterval: 5 * time.Second, restores: 5,
			restoreInterval: 2 * time.Second, setupTimeout: 3 * time.Minute, quietTimeout: 2 * time.Minute}
	}
	if n, err := strconv.Atoi(os.Getenv("INVENTORY_BACKUPS")); err == nil && n > 0 {
		cfg.backups = n
	}
	if d, err := time.ParseDuration(os.Getenv("INVENTORY_VERIFY_INTERVAL")); err == nil && d > 0 {
		cfg.verifyInterval = d
	}
	return cfg
}

// inventoryCluster is a private local cluster for the inventory rows: its controller serves /debug/pprof (to
// force a GC before the heap is read), and the upstream registry has a counting proxy in front, which the
// controller pulls through once restarted with upstreamArgs.
type inventoryCluster struct {
	*localCluster
	upstream *registrytest.Registry
	objects  client.Client
	// baseArgs are the controller's flags beyond local-up's, kept by every restart.
	baseArgs []string
	// backups is how many copies backupsCluster made; empty is the controller's memory before any existed.
	backups   int
	empty     memorySample
	setupNote string
	stopOnce  sync.Once
}

// startInventoryCluster starts a private local cluster with one kwok node, the controller without the
// webhook (these rows measure the keeper; with it the copies are made the same way) and with extra flags.
// The caller must call stop, also when this fails.
func startInventoryCluster(ctx context.Context, profileDir string, extraArgs ...string) (*inventoryCluster, error) {
	ports, err := scaleFreePorts(ctx, 1)
	if err != nil {
		return nil, err
	}
	pprofPort := ports[0]
	ic := &inventoryCluster{}
	ic.baseArgs = append([]string{fmt.Sprintf("--pprof-bind-address=127.0.0.1:%d", pprofPort)}, extraArgs...)
	ic.baseArgs = append(ic.baseArgs, strings.Fields(os.Getenv("INVENTORY_CONTROLLER_ARGS"))...)
	ic.localCluster, err = startLocalCluster(ctx, clusterOptions{nodes: 1, controllerArgs: ic.baseArgs, webhook: false})
	if err != nil {
		return ic, err
	}
	// The controller serves /debug/pprof anyway; with -cpuprofile the rows save its profiles too.
	ic.pprofPort, ic.profileDir = pprofPort, profileDir
	inventoryLog("controller log: %s (BENCH_KEEP_TMP=1 keeps it)", ic.controllerLog())
	ic.upstream = registrytest.Front(ic.upstreamRegistry())
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return ic, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return ic, err
	}
	ic.objects, err = client.New(ic.restConfig, client.Options{Scheme: scheme})
	return ic, err
}

// stop stops the cluster and the proxy; stopping twice is harmless.
func (ic *inventoryCluster) stop(ctx context.Context) {
	if ic == nil {
		return
	}
	ic.stopOnce.Do(func() {
		if ic.upstream != nil {
			ic.upstream.Close()
		}
		if ic.localCluster == nil {
			return
		}
		ic.localCluster.stop(ctx)
		// local-down may be cut short while it deletes the storage of thousands of copies.
		if ic.dir != "" {
			_ = os.RemoveAll(ic.dir)
		}
	})
}

// upstreamArgs make the controller pull the upstream registry's images (docker.io's, see local-up) through the
// counting proxy: a later --source-mirror for a registry replaces an earlier one.
func (ic *inventoryCluster) upstreamArgs() []string {
	return []string{"--source-mirror=index.docker.io=" + ic.upstream.Host}
}

// restartWith restarts the controller with its base flags plus args (LOCAL_CONTROLLER_ARGS), and returns once
// it is ready.
func (ic *inventoryCluster) restartWith(ctx context.Context, args ...string) error {
	all := append(slices.Clone(ic.baseArgs), args...)
	ic.env = slices.DeleteFunc(ic.env, func(kv string) bool { return strings.HasPrefix(kv, "LOCAL_CONTROLLER_ARGS=") })
	ic.env = append(ic.env, "LOCAL_CONTROLLER_ARGS="+strings.Join(all, " "))
	inventoryLog("restarting the controller with %s", strings.Join(all, " "))
	return ic.restartController(ctx)
}

// flags describes the controller's flags beyond local-up's for the notes, with args of the phase measured.
func (ic *inventoryCluster) flags(args ...string) string {
	var shown []string
	for _, a := range append(slices.Clone(ic.baseArgs), args...) {
		if !strings.HasPrefix(a, "--pprof-bind-address") {
			shown = append(shown, a)
		}
	}
	if len(shown) == 0 {
		return "defaults, --webhook=false"
	}
	return "defaults, --webhook=false, " + strings.Join(shown, " ")
}

// inventoryImage is the image of the i-th backup, a Docker Hub library image that local-up's controller pulls
// from the upstream registry.
func inventoryImage(prefix string, i int) string { return fmt.Sprintf("%s-%04d:1", prefix, i) }

// pushImages pushes n images prefix-0000:1 ... to the upstream registry, each made by build, and returns them.
func (ic *inventoryCluster) pushImages(ctx context.Context, prefix string, n int, build func() (remote.Taggable, error)) ([]remote.Taggable, error) {
	start := time.Now()
	images := make([]remote.Taggable, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			ref, err := name.ParseReference(ic.upstream.Backend+"/library/"+inventoryImage(prefix, i), name.Insecure)
			if err != nil {
				return err
			}
			img, err := build()
			if err != nil {
				return err
			}
			switch t := img.(type) {
			case v1.ImageIndex:
				err = remote.WriteIndex(ref, t, remote.WithContext(gctx))
			case v1.Image:
				err = remote.Write(ref, t, remote.WithContext(gctx))
			default:
				err = fmt.Errorf("cannot push a %T", img)
			}
			if err != nil {
				return fmt.Errorf("pushing %s: %w", ref, err)
			}
			images[i] = img
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	inventoryLog("pushed %d images to the upstream registry in %s", n, time.Since(start).Round(10*time.Millisecond))
	return images, nil
}

// tinyImage is a single-platform image with one 1 KiB layer: the verify and memory rows never read content.
func tinyImage() (remote.Taggable, error) { return random.Image(1024, 1) }

// backUp creates one Deployment (1 replica) per image prefix-0000:1 ... over namespaces nsPrefix-00 ..., and
// waits until the controller has copied each, recorded it Ready and pointed the Deployment at it, and the
// rollouts have settled: every Deployment has its one updated pod, and no old pod is left.
func (ic *inventoryCluster) backUp(ctx context.Context, cfg inventoryConfig, nsPrefix, prefix string, n, namespaces int) (string, error) {
	for i := range namespaces {
		if err := createNamespace(ctx, ic.localCluster, fmt.Sprintf("%s-%02d", nsPrefix, i)); err != nil {
			return "", err
		}
	}
	inventoryLog("creating %d Deployments in %d namespaces", n, namespaces)
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			d := scaleDeployment(fmt.Sprintf("%s-%02d", nsPrefix, i%namespaces), fmt.Sprintf("inv-%04d", i), inventoryImage(prefix, i), 1)
			_, err := ic.client.AppsV1().Deployments(d.Namespace).Create(gctx, d, metav1.CreateOptions{})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return "", err
	}
	var ready float64
	lastReport := time.Now()
	err := scalePoll(ctx, 250*time.Millisecond, cfg.setupTimeout, "every copy to be Ready", func() (bool, error) {
		m, err := ic.controllerMetrics(ctx)
		if err != nil {
			return false, err
		}
		ready = m.Sum("image_clone_backups", map[string]string{"phase": string(v1alpha1.PhaseReady)})
		if time.Since(lastReport) >= 10*time.Second {
			lastReport = time.Now()
			inventoryLog("%4.0fs: %.0f of %d copies Ready, %.0f Deployments patched", time.Since(start).Seconds(), ready, n,
				m.Sum("image_clone_workloads_patched_total", map[string]string{"kind": "Deployment"}))
		}
		return ready >= float64(n), nil
	})
	if err != nil {
		return "", fmt.Errorf("%.0f of %d copies Ready: %w%s", ready, n, err, ic.controllerLogTail())
	}
	copied := time.Since(start)
	inventoryLog("%d copies Ready %s after the first create", n, copied.Round(10*time.Millisecond))

	var settled, pods int
	err = scalePoll(ctx, 2*time.Second, cfg.setupTimeout, "the rollouts to settle", func() (bool, error) {
		if settled, err = ic.settledDeployments(ctx, nsPrefix); err != nil {
			return false, err
		}
		if pods, err = ic.podCount(ctx, nsPrefix); err != nil {
			return false, err
		}
		if time.Since(lastReport) >= 10*time.Second {
			lastReport = time.Now()
			inventoryLog("%4.0fs: %d of %d Deployments settled, %d pods", time.Since(start).Seconds(), settled, n, pods)
		}
		return settled == n && pods == n, nil
	})
	if err != nil {
		return "", fmt.Errorf("%d of %d Deployments settled, %d pods: %w", settled, n, pods, err)
	}
	if err := ic.waitInventoryQuiet(ctx, cfg.quietTimeout); err != nil {
		return "", err
	}
	list, err := ic.imageBackups(ctx)
	if err != nil {
		return "", err
	}
	if ready := countPhase(list, v1alpha1.PhaseReady); len(list) != n || ready != n {
		return "", fmt.Errorf("%d ImageBackups, %d Ready, want %d of each", len(list), ready, n)
	}
	inventoryLog("rollouts settled %s after the first create", time.Since(start).Round(10*time.Millisecond))
	return fmt.Sprintf("%d Deployments (1 replica, 1 kwok node) in %d namespaces, one image each, copied by the controller "+
		"in %.0f s; rollouts settled in %.0f s", n, namespaces, copied.Seconds(), time.Since(start).Seconds()), nil
}

// settledDeployments counts the Deployments of the namespaces nsPrefix-* that run their one updated replica
// from the backup registry.
func (ic *inventoryCluster) settledDeployments(ctx context.Context, nsPrefix string) (int, error) {
	list, err := ic.client.AppsV1().Deployments("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	prefix := ic.backupRegistry() + "/"
	n := 0
	for i := range list.Items {
		d := &list.Items[i]
		if strings.HasPrefix(d.Namespace, nsPrefix+"-") && onBackup(d, prefix) && isObserved(d) &&
			d.Status.UpdatedReplicas == 1 && d.Status.Replicas == 1 && d.Status.AvailableReplicas == 1 {
			n++
		}
	}
	return n, nil
}

// podCount counts the pods of the namespaces nsPrefix-*, terminating ones included.
func (ic *inventoryCluster) podCount(ctx context.Context, nsPrefix string) (int, error) {
	list, err := ic.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range list.Items {
		if strings.HasPrefix(p.Namespace, nsPrefix+"-") {
			n++
		}
	}
	return n, nil
}

// objectCounts describes how many objects of the kinds the controller caches the cluster holds.
func (ic *inventoryCluster) objectCounts(ctx context.Context) string {
	opts := metav1.ListOptions{ResourceVersion: "0"}
	count := func(n int, err error) string {
		if err != nil {
			return "?"
		}
		return strconv.Itoa(n)
	}
	backups, err := ic.imageBackups(ctx)
	ibs := count(len(backups), err)
	deployments, err := ic.client.AppsV1().Deployments("").List(ctx, opts)
	ds := count(len(deployments.Items), err)
	replicaSets, err := ic.client.AppsV1().ReplicaSets("").List(ctx, opts)
	rs := count(len(replicaSets.Items), err)
	pods, err := ic.client.CoreV1().Pods("").List(ctx, opts)
	ps := count(len(pods.Items), err)
	return fmt.Sprintf("%s ImageBackups, %s Deployments, %s ReplicaSets, %s Pods", ibs, ds, rs, ps)
}

// imageBackups lists every ImageBackup from the API server.
func (ic *inventoryCluster) imageBackups(ctx context.Context) ([]v1alpha1.ImageBackup, error) {
	var list v1alpha1.ImageBackupList
	if err := ic.objects.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing ImageBackups: %w", err)
	}
	return list.Items, nil
}

func countPhase(list []v1alpha1.ImageBackup, phase v1alpha1.Phase) int {
	n := 0
	for i := range list {
		if list[i].Status.Phase == phase {
			n++
		}
	}
	return n
}

// inventoryQuiet reports whether the keeper and the workload reconcilers have nothing queued or running (items
// waiting for their next verification are not queued yet).
func inventoryQuiet(m metricstest.Samples) bool {
	return controllersQuiet(m) &&
		m.Sum("workqueue_depth", map[string]string{"name": inventoryController}) == 0 &&
		m.Sum("controller_runtime_active_workers", map[string]string{"controller": inventoryController}) == 0
}

// waitInventoryQuiet waits until the controller has been quiet for two scrapes in a row, reporting the queues
// every 10 s.
func (ic *inventoryCluster) waitInventoryQuiet(ctx context.Context, timeout time.Duration) error {
	streak := 0
	start, lastReport := time.Now(), time.Now()
	err := scalePoll(ctx, 100*time.Millisecond, timeout, "the controller's queues to drain", func() (bool, error) {
		m, err := ic.controllerMetrics(ctx)
		if err != nil {
			return false, err
		}
		if inventoryQuiet(m) {
			streak++
		} else {
			streak = 0
		}
		if time.Since(lastReport) >= 10*time.Second {
			lastReport = time.Now()
			inventoryLog("%4.0fs: waiting for the queues to drain: %s", time.Since(start).Seconds(), queueDepths(m))
		}
		return streak >= 2, nil
	})
	if err != nil {
		return fmt.Errorf("%w%s", err, ic.controllerLogTail())
	}
	return nil
}

// queueDepths renders the controllers' queue depths and reconciles so far, e.g.
// "image-clone-deployment=12/2000 image-clone-inventory=0/2410".
func queueDepths(m metricstest.Samples) string {
	depths := m.By("workqueue_depth", "name")
	reconciles := m.By("controller_runtime_reconcile_total", "controller")
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(reconciles)) {
		if reconciles[name] > 0 || depths[name] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%.0f/%.0f", name, depths[name], reconciles[name]))
		}
	}
	return "queued/reconciled " + strings.Join(parts, " ")
}

// waitStarted waits until a restarted controller has reconciled every one of n ImageBackups and Deployments
// at least once (the initial lists of its caches), and is quiet again.
func (ic *inventoryCluster) waitStarted(ctx context.Context, n int, inventory bool, timeout time.Duration) error {
	err := scalePoll(ctx, 100*time.Millisecond, timeout, "the restarted controller to reconcile everything", func() (bool, error) {
		m, err := ic.controllerMetrics(ctx)
		if err != nil {
			return false, err
		}
		done := m.Sum("controller_runtime_reconcile_total", map[string]string{"controller": scaleController("Deployment")}) >= float64(n)
		if inventory {
			done = done && m.Sum("controller_runtime_reconcile_total", map[string]string{"controller": inventoryController}) >= float64(n)
		}
		return done, nil
	})
	if err != nil {
		return fmt.Errorf("%w%s", err, ic.controllerLogTail())
	}
	return ic.waitInventoryQuiet(ctx, timeout)
}

// --- the shared cluster of verify and memory ---------------------------------------------------------------

// keptBackups is the cluster of the verify and memory rows, set up by the first of them that runs and stopped
// by the last.
var keptBackups struct {
	sync.Mutex
	cluster *inventoryCluster
	smoke   bool
}

// backupsCluster returns the cluster with cfg.backups copies, setting it up (and measuring the controller's
// memory before anything exists) unless an earlier row did.
func backupsCluster(ctx context.Context, env *benchEnv, cfg inventoryConfig) (*inventoryCluster, error) {
	keptBackups.Lock()
	defer keptBackups.Unlock()
	if keptBackups.cluster != nil && keptBackups.smoke == cfg.smoke {
		return keptBackups.cluster, nil
	}
	ic, err := startInventoryCluster(ctx, env.cpuProfile)
	if ic != nil {
		env.onClose(func() { ic.stop(context.Background()) })
	}
	if err != nil {
		ic.stop(ctx)
		return nil, err
	}
	if err := ic.waitInventoryQuiet(ctx, time.Minute); err != nil {
		ic.stop(ctx)
		return nil, err
	}
	if ic.empty, err = ic.memory(ctx); err != nil {
		ic.stop(ctx)
		return nil, err
	}
	inventoryLog("controller with no ImageBackups: %s", ic.empty)
	if _, err := ic.pushImages(ctx, "inv", cfg.backups, tinyImage); err != nil {
		ic.stop(ctx)
		return nil, err
	}
	if ic.setupNote, err = ic.backUp(ctx, cfg, "inv", "inv", cfg.backups, cfg.namespaces); err != nil {
		ic.stop(ctx)
		return nil, err
	}
	ic.backups = cfg.backups
	keptBackups.cluster, keptBackups.smoke = ic, cfg.smoke
	return ic, nil
}

// releaseBackupsCluster stops the shared cluster unless a row still to run needs it: later is that row.
func releaseBackupsCluster(ctx context.Context, later string) {
	keptBackups.Lock()
	defer keptBackups.Unlock()
	if later != "" && rowSelected(later) {
		return
	}
	keptBackups.cluster.stop(ctx)
	keptBackups.cluster = nil
}

// --- row: memory -------------------------------------------------------------------------------------------

// memorySample is the controller's memory once it is quiet: the Go heap in use and allocated right after a
// GC (go_memstats_heap_inuse_bytes, go_memstats_heap_alloc_bytes) and its resident set (VmRSS).
type memorySample struct{ heapInuse, heapAlloc, rss float64 }

func (s memorySample) String() string {
	return fmt.Sprintf("heap in use %.1f MiB, live heap %.1f MiB, RSS %.1f MiB", s.heapInuse/(1<<20), s.heapAlloc/(1<<20), s.rss/(1<<20))
}

// memory samples the controller's memory three times, each right after a GC it is made to run
// (/debug/pprof/heap?gc=1), and returns the medians.
func (ic *inventoryCluster) memory(ctx context.Context) (memorySample, error) {
	var inuse, alloc, rss []float64
	for i := range 3 {
		if i > 0 {
			time.Sleep(time.Second)
		}
		if err := ic.forceGC(ctx); err != nil {
			return memorySample{}, err
		}
		m, err := ic.controllerMetrics(ctx)
		if err != nil {
			return memorySample{}, err
		}
		pid, err := ic.controllerPID()
		if err != nil {
			return memorySample{}, err
		}
		r, err := residentBytes(pid)
		if err != nil {
			return memorySample{}, err
		}
		inuse = append(inuse, m.Sum("go_memstats_heap_inuse_bytes", nil))
		alloc = append(alloc, m.Sum("go_memstats_heap_alloc_bytes", nil))
		rss = append(rss, float64(r))
	}
	return memorySample{heapInuse: median(inuse), heapAlloc: median(alloc), rss: median(rss)}, nil
}

// forceGC makes the controller collect garbage: its heap profile handler runs a GC first when asked.
func (ic *inventoryCluster) forceGC(ctx context.Context) error {
	u := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", ic.pprofPort)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := ic.http.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

// residentBytes returns VmRSS, the resident set size of process pid now, in bytes.
func residentBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// runMemory measures the controller's memory per 1,000 ImageBackups: the heap after a GC with none (measured
// before the copies were made), with every copy and its Deployment after a restart, and after another restart
// with --inventory=false, which leaves out the keeper with its caches (ImageBackups, and the Pods and
// ReplicaSets only it reads).
func runMemory(ctx context.Context, env *benchEnv) ([]Result, error) {
	cfg := inventoryConfigFor(env)
	ic, err := backupsCluster(ctx, env, cfg)
	if err != nil {
		return nil, err
	}
	defer releaseBackupsCluster(ctx, "")
	n := ic.backups

	if err := ic.restartWith(ctx); err != nil {
		return nil, err
	}
	if err := ic.waitStarted(ctx, n, true, cfg.quietTimeout); err != nil {
		return nil, err
	}
	objects := ic.objectCounts(ctx)
	with, err := ic.memory(ctx)
	if err != nil {
		return nil, err
	}
	ic.saveHeapProfile(ctx, "memory")
	inventoryLog("controller with %d ImageBackups: %s (%s)", n, with, objects)

	if err := ic.restartWith(ctx, "--inventory=false"); err != nil {
		return nil, err
	}
	if err := ic.waitStarted(ctx, n, false, cfg.quietTimeout); err != nil {
		return nil, err
	}
	without, err := ic.memory(ctx)
	if err != nil {
		return nil, err
	}
	ic.saveHeapProfile(ctx, "memory-no-inventory")
	inventoryLog("controller with --inventory=false: %s", without)

	perThousand := func(a, b float64) float64 { return (a - b) / float64(n) * 1000 / (1 << 20) }
	row := fmt.Sprintf("memory: %d ImageBackups and their Deployments", n)
	setup := fmt.Sprintf("%s; each figure a median of 3 samples of a quiet controller after a restart, "+
		"each sample right after a GC (/debug/pprof/heap?gc=1); controller flags: %s", ic.setupNote, ic.flags())
	return []Result{
		{
			Row:     row,
			Measure: "MiB of Go heap in use after a GC (go_memstats_heap_inuse_bytes) per 1,000 ImageBackups",
			Values: map[string]float64{
				"controller": perThousand(with.heapInuse, ic.empty.heapInuse),
				"keeper":     perThousand(with.heapInuse, without.heapInuse),
			},
			Note: fmt.Sprintf("controller: growth from no objects to %d ImageBackups with their workloads; keeper: the same "+
				"cluster with the inventory on minus --inventory=false (ImageBackups and the Pod and ReplicaSet caches only the "+
				"keeper reads); heap in use with nothing: %.1f MiB, with %d: %.1f MiB, with %d and --inventory=false: %.1f MiB; "+
				"live heap per 1,000: controller %.2f MiB, keeper %.2f MiB; at the measure the cluster held %s; %s",
				n, ic.empty.heapInuse/(1<<20), n, with.heapInuse/(1<<20), n, without.heapInuse/(1<<20),
				perThousand(with.heapAlloc, ic.empty.heapAlloc), perThousand(with.heapAlloc, without.heapAlloc), objects, setup),
		},
		{
			Row:     row,
			Measure: "controller RSS after a GC, MiB (VmRSS)",
			Values: map[string]float64{
				"none":                               ic.empty.rss / (1 << 20),
				strconv.Itoa(n):                      with.rss / (1 << 20),
				strconv.Itoa(n) + " inventory=false": without.rss / (1 << 20),
			},
			Note: fmt.Sprintf("per 1,000 ImageBackups: controller %.2f MiB, keeper %.2f MiB; the Go runtime returns freed "+
				"pages lazily, so RSS says less than the heap", perThousand(with.rss, ic.empty.rss), perThousand(with.rss, without.rss)),
		},
	}, nil
}

// inventoryLog reports what the rows are doing on stderr.
func inventoryLog(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: inventory: "+format+"\n", args...)
}
