package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// localCluster is a private instance of the cluster of `make local-up` (hack/local-up.sh): its own state
// directory, free ports and a freshly built controller, so that it never collides with a cluster the user runs.
type localCluster struct {
	root   string // repository root
	dir    string // LOCAL_DIR
	binDir string // holds the controller binary
	env    []string
	ports  map[string]int // LOCAL_*_PORT values
	// pprofPort serves the controller's /debug/pprof when profileDir is set (0: off).
	pprofPort  int
	profileDir string
	client     kubernetes.Interface
	restConfig *rest.Config
	http       *http.Client
	// api counts the controller's requests to the API server, and upstream (a counting proxy in front of the
	// upstream registry, which the controller pulls docker.io through) its registry requests; both nil unless
	// clusterOptions.countRequests.
	api      *apiCounter
	upstream *registrytest.Registry
}

// portVars are the LOCAL_*_PORT tunables of hack/local-up.sh that the private cluster sets.
var portVars = []string{
	"LOCAL_APISERVER_PORT", "LOCAL_ETCD_PORT", "LOCAL_ETCD_PEER_PORT",
	"LOCAL_BACKUP_REGISTRY_PORT", "LOCAL_UPSTREAM_REGISTRY_PORT", "LOCAL_BACKUP_REGISTRY_DEBUG_PORT",
	"LOCAL_METRICS_PORT", "LOCAL_PROBE_PORT", "LOCAL_WEBHOOK_PORT", "LOCAL_KWOK_CONTROLLER_PORT",
}

// clusterOptions configure startLocalCluster.
type clusterOptions struct {
	nodes          int
	controllerArgs []string
	// webhook serves the admission webhook (LOCAL_WEBHOOK); without it the controller runs with --webhook=false
	// and the cluster has no webhook configuration, so only the reconciler points workloads at their copies.
	webhook bool
	// profileDir, when set, has the controller serve /debug/pprof for profiles saved there.
	profileDir string
	// countRequests puts counting proxies between the controller and the API server and between the controller
	// and the upstream registry (see apiCounter and localCluster.upstream).
	countRequests bool
}

// startLocalCluster builds the controller and starts the local cluster without seeding the upstream
// registry. The caller must call stop, also when this fails.
func startLocalCluster(ctx context.Context, opts clusterOptions) (*localCluster, error) {
	root, err := scaleRepoRoot()
	if err != nil {
		return nil, err
	}
	c := &localCluster{root: root, ports: map[string]int{}, http: &http.Client{Timeout: 10 * time.Second}, profileDir: opts.profileDir}
	if c.dir, err = os.MkdirTemp("", "bench-local-"); err != nil {
		return c, err
	}
	if c.binDir, err = os.MkdirTemp("", "bench-controller-"); err != nil {
		return c, err
	}
	names := slices.Clone(portVars)
	if opts.profileDir != "" {
		names = append(names, "pprof")
	}
	if opts.countRequests {
		names = append(names, "apicounter")
	}
	free, err := scaleFreePorts(ctx, len(names))
	if err != nil {
		return c, err
	}
	for i, v := range names {
		c.ports[v] = free[i]
	}
	args := slices.Clone(opts.controllerArgs)
	if opts.profileDir != "" {
		c.pprofPort = c.ports["pprof"]
		delete(c.ports, "pprof")
		args = append(args, fmt.Sprintf("--pprof-bind-address=127.0.0.1:%d", c.pprofPort))
	}
	if opts.countRequests {
		port := c.ports["apicounter"]
		delete(c.ports, "apicounter")
		if c.api, err = startAPICounter(ctx, port, filepath.Join(c.dir, "kubeconfig")); err != nil {
			return c, err
		}
		if err := c.api.writeKubeconfig(c.countedKubeconfig()); err != nil {
			return c, err
		}
		c.upstream = registrytest.Front(c.upstreamRegistry())
		// Both flags come after hack/local-up.sh's own: the last --kubeconfig wins, and so does the last mirror
		// of a registry.
		args = append(args, "--kubeconfig="+c.countedKubeconfig(), "--source-mirror=index.docker.io="+c.upstream.Host)
	}

	bin := filepath.Join(c.binDir, "image-clone-controller")
	scaleLog("building the controller")
	build := exec.CommandContext(ctx, scaleGoCommand(), "build", "-o", bin, "./cmd/image-clone-controller")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return c, fmt.Errorf("building the controller: %w\n%s", err, out)
	}

	c.env = append(os.Environ(),
		"LOCAL_DIR="+c.dir,
		"CONTROLLER_BIN="+bin,
		"LOCAL_SEED=false",
		"LOCAL_NODES="+strconv.Itoa(opts.nodes),
		"LOCAL_CONTROLLER_ARGS="+strings.Join(args, " "),
		"LOCAL_WEBHOOK="+strconv.FormatBool(opts.webhook),
	)
	for v, p := range c.ports {
		c.env = append(c.env, fmt.Sprintf("%s=%d", v, p))
	}
	scaleLog("starting a local cluster in %s (API server port %d)", c.dir, c.ports["LOCAL_APISERVER_PORT"])
	start := time.Now()
	if err := c.script(ctx, "hack/local-up.sh"); err != nil {
		return c, err
	}
	scaleLog("local cluster up in %s", time.Since(start).Round(100*time.Millisecond))

	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(c.dir, "kubeconfig"))
	if err != nil {
		return c, err
	}
	cfg.QPS, cfg.Burst = 2000, 4000
	if c.client, err = kubernetes.NewForConfig(cfg); err != nil {
		return c, err
	}
	c.restConfig = cfg
	// The registry's debug server may come up a moment after the registry itself.
	return c, scalePoll(ctx, 100*time.Millisecond, 30*time.Second, "the backup registry's metrics", func() (bool, error) {
		_, err := c.backupRegistryMetrics(ctx)
		return err == nil, nil
	})
}

// stop runs hack/local-down.sh, which also deletes the state directory, and removes the controller binary.
// With BENCH_KEEP_TMP set, the components' logs are copied elsewhere first. It keeps working when ctx is
// already cancelled.
func (c *localCluster) stop(ctx context.Context) {
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if os.Getenv("BENCH_KEEP_TMP") != "" && c.dir != "" {
		c.keepLogs(ctx)
	}
	if c.env != nil {
		if err := c.script(ctx, "hack/local-down.sh"); err != nil {
			scaleLog("stopping the local cluster failed: %v", err)
		}
	} else if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
	if c.binDir != "" {
		_ = os.RemoveAll(c.binDir)
	}
	c.api.close()
	if c.upstream != nil {
		c.upstream.Close()
	}
}

// keepLogs copies the cluster's logs directory into a new temporary directory, which outlives the cluster.
func (c *localCluster) keepLogs(ctx context.Context) {
	kept, err := os.MkdirTemp("", "bench-local-logs-")
	if err == nil {
		err = exec.CommandContext(ctx, "cp", "-r", filepath.Join(c.dir, "logs"), kept).Run()
	}
	if err != nil {
		scaleLog("keeping the logs of %s failed: %v", c.dir, err)
		return
	}
	scaleLog("kept the cluster's logs in %s", filepath.Join(kept, "logs"))
}

// restartController runs hack/local-up.sh --restart-controller, which returns once the new controller is ready.
func (c *localCluster) restartController(ctx context.Context) error {
	return c.script(ctx, "hack/local-up.sh", "--restart-controller")
}

// setWebhook restarts the controller with the admission webhook on or off (LOCAL_WEBHOOK): off, the controller
// runs with --webhook=false and the script deletes the webhook configuration; on, it applies it again.
func (c *localCluster) setWebhook(ctx context.Context, on bool) error {
	c.env = slices.DeleteFunc(c.env, func(kv string) bool { return strings.HasPrefix(kv, "LOCAL_WEBHOOK=") })
	c.env = append(c.env, "LOCAL_WEBHOOK="+strconv.FormatBool(on))
	return c.restartController(ctx)
}

// script runs one of the hack/local-*.sh scripts in the cluster's environment; its output is returned with
// an error, with the tail of the controller's log if there is one.
func (c *localCluster) script(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.root, name), args...)
	cmd.Dir = c.root
	cmd.Env = c.env
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s%s", name, strings.Join(args, " "), err, out, c.controllerLogTail())
	}
	return nil
}

// controllerLogTail returns the last lines of the controller's log, for error messages.
func (c *localCluster) controllerLogTail() string {
	b, err := os.ReadFile(c.controllerLog())
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return "--- last lines of the controller's log:\n" + strings.Join(lines[max(0, len(lines)-20):], "\n") + "\n"
}

func (c *localCluster) backupRegistry() string {
	return fmt.Sprintf("127.0.0.1:%d", c.ports["LOCAL_BACKUP_REGISTRY_PORT"])
}

func (c *localCluster) upstreamRegistry() string {
	return fmt.Sprintf("127.0.0.1:%d", c.ports["LOCAL_UPSTREAM_REGISTRY_PORT"])
}

// controllerLog is the controller's log file.
func (c *localCluster) controllerLog() string { return filepath.Join(c.dir, "logs", "controller.log") }

// controllerPID returns the pid of the running controller from its pid file.
func (c *localCluster) controllerPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, "pids", "controller.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// controllerMetrics scrapes the controller's /metrics.
func (c *localCluster) controllerMetrics(ctx context.Context) (metricstest.Samples, error) {
	return metricstest.Scrape(ctx, c.http, fmt.Sprintf("http://127.0.0.1:%d/metrics", c.ports["LOCAL_METRICS_PORT"]))
}

// apiserverMetrics scrapes the API server's /metrics.
func (c *localCluster) apiserverMetrics(ctx context.Context) (metricstest.Samples, error) {
	client, err := rest.HTTPClientFor(c.restConfig)
	if err != nil {
		return nil, err
	}
	defer client.CloseIdleConnections()
	return metricstest.Scrape(ctx, client, strings.TrimSuffix(c.restConfig.Host, "/")+"/metrics")
}

// backupRegistryMetrics scrapes the backup registry's debug server.
func (c *localCluster) backupRegistryMetrics(ctx context.Context) (metricstest.Samples, error) {
	return metricstest.Scrape(ctx, c.http, fmt.Sprintf("http://127.0.0.1:%d/metrics", c.ports["LOCAL_BACKUP_REGISTRY_DEBUG_PORT"]))
}

// controllerReady reports whether the controller's /readyz succeeds.
func (c *localCluster) controllerReady(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/readyz", c.ports["LOCAL_PROBE_PORT"]), nil)
	if err != nil {
		return false
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// saveProfile fetches /debug/pprof/<kind> from the controller into file (no-op when profiling is off).
func (c *localCluster) saveProfile(ctx context.Context, kind, query, file string) error {
	if c.pprofPort == 0 {
		return nil
	}
	u := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s?%s", c.pprofPort, kind, query)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// peakRSS returns VmHWM, the peak resident set size of process pid, in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// rssParts describes the current resident memory of process pid: anonymous (heap, stacks) and file-backed
// (the binary's pages), from /proc/<pid>/status.
func rssParts(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	var parts []string
	for line := range strings.SplitSeq(string(b), "\n") {
		for _, field := range []string{"RssAnon", "RssFile"} {
			if rest, ok := strings.CutPrefix(line, field+":"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64); err == nil {
					parts = append(parts, fmt.Sprintf("%s %.0f MiB", field, float64(kb)/1024))
				}
			}
		}
	}
	return strings.Join(parts, ", ")
}

// processStart returns when process pid started, to the clock tick (assumed 100 Hz, as on every Linux build
// that matters here).
func processStart(pid int) (time.Time, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, err
	}
	// Fields after the command name, which is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return time.Time{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	const startTimeField = 22 - 3 // field 22 of stat, counting from the state (field 3)
	if len(fields) <= startTimeField {
		return time.Time{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ticks, err := strconv.ParseInt(fields[startTimeField], 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	procStat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for line := range strings.SplitSeq(string(procStat), "\n") {
		if rest, ok := strings.CutPrefix(line, "btime "); ok {
			boot, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			const hz = 100
			return time.Unix(boot, 0).Add(time.Duration(ticks) * time.Second / hz), nil
		}
	}
	return time.Time{}, errors.New("no btime in /proc/stat")
}

// scaleFreePorts returns n distinct ports that were free on 127.0.0.1 a moment ago. With BENCH_MIN_PORT set,
// none is below it: on a machine where other work binds fixed ports of a lower range later, the private
// cluster stays out of their way.
func scaleFreePorts(ctx context.Context, n int) ([]int, error) {
	minPort := 0
	if v := os.Getenv("BENCH_MIN_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 60000 {
			return nil, fmt.Errorf("BENCH_MIN_PORT=%q: want a port number up to 60000", v)
		}
		minPort = p
	}
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	// The kernel hands out ports of its ephemeral range; those below the floor are held open (so that it
	// does not hand them out again) and skipped.
	for attempts := 0; len(ports) < n; attempts++ {
		if attempts > 100*n {
			return nil, fmt.Errorf("no %d free ports above BENCH_MIN_PORT=%d", n, minPort)
		}
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		if port := l.Addr().(*net.TCPAddr).Port; port >= minPort {
			ports = append(ports, port)
		}
	}
	return ports, nil
}

// scaleRepoRoot finds the repository root from the working directory upwards.
func scaleRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "local-up.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("hack/local-up.sh not found above the working directory: run from the repository")
		}
		dir = parent
	}
}

func scaleGoCommand() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// scalePoll calls cond every interval until it returns true, fails, or timeout passes.
func scalePoll(ctx context.Context, interval, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// scaleLog reports what the rows are doing on stderr.
func scaleLog(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: scale: "+format+"\n", args...)
}
