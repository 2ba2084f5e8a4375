// Command bench measures the copy engine against its peers (crane, skopeo and a raw GET→PUT floor) on
// registries it starts on loopback, and the controller on private local clusters, and prints one table row
// per measure (make bench).
//
// Usage:
//
//	go run ./test/bench [-smoke] [-out bench-results.json] [-rows copy,shared,noop,parallel] [-cpuprofile DIR]
//
// Rows (-rows picks some, -h lists them all): copy, shared, noop, parallel and artifacts (copy.go,
// copy_artifacts.go) measure the copy engine; verify, memory and restore (inventory.go) the ImageBackup
// inventory in the controller: backup and upstream registry requests per backup in one verification pass
// over 2,000 copies, the controller's heap per 1,000 ImageBackups, and the time to restore 100 lost copies;
// scale and overhead (scale.go) the controller at scale; admission and rollouts (webhook.go) the webhook.
//
// Every contender of a row is measured in the same run, alternating, and the median of the iterations is
// reported. Rows register themselves in rows from init functions, so that more files can add theirs.
//
// The registries keep their storage in /dev/shm when it is a tmpfs (-tmpdir), so that the disk does not bound
// the copies; the temporary directory is removed at exit unless BENCH_KEEP_TMP is set. Our copier runs in a
// child process of the harness binary (copyonce.go), and every copying process is started through
// test/bench/launch, which reports its peak RSS.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

// row is one measure of the table. run measures every contender and returns the row's results (a row may
// return several results, e.g. time and bytes). Rows are run in registration order.
type row struct {
	name string
	run  func(ctx context.Context, env *benchEnv) ([]Result, error)
}

// rows holds every registered row; files add theirs in init().
var rows []row

// benchEnv is what rows share: the flags, a temporary directory removed at exit, the tools to compare with,
// and the source registry with the generated images.
type benchEnv struct {
	// smoke selects tiny images and a single iteration, to prove that the harness works (CI).
	smoke bool
	// iterations is how many times each contender is measured per row (the median is reported).
	iterations int
	// tmp is a directory for registries and tool state, removed at exit.
	tmp string
	// self is the harness binary, run as a child process to measure our copier (see copyonce.go).
	self string
	// registryBinary is the distribution registry; crane and skopeo are the peers' binaries ("" if absent).
	registryBinary, crane, skopeo string
	// launcher runs the copying processes and reports their peak RSS (test/bench/launch).
	launcher string
	// cpuProfile, when set, makes our copy processes write CPU profiles and request timelines into this directory.
	cpuProfile string
	// layerJobs is how many blobs of an image our copier and the raw floor move at a time; maxCopies how many
	// images our copier copies at a time (0: the copier's default).
	layerJobs, maxCopies int

	// source is the registry the images are copied from, started on first use; images are the images pushed
	// there so far by pusher.
	source  *server
	pusher  *pusher
	images  map[string]pushedImage
	cleanup []func()
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == copyOnceFlag {
		if err := copyOnce(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "copy-once:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		smoke      = flag.Bool("smoke", false, "tiny images and one iteration: checks that the harness works")
		out        = flag.String("out", "bench-results.json", "write the results as JSON to this file (empty: don't)")
		only       = flag.String("rows", "", "comma-separated rows to run (default: all of "+strings.Join(rowNames(), ",")+")")
		iterations = flag.Int("iterations", 5, "measurements per contender and row (median reported; -smoke uses 1)")
		crane      = flag.String("crane", "", "crane binary (default: bin/crane, else crane on PATH)")
		skopeo     = flag.String("skopeo", "", `skopeo binary (default: skopeo on PATH; "none" leaves it out, as if absent)`)
		regBinary  = flag.String("registry", os.Getenv("REGISTRY_BINARY"), "distribution registry binary (default $REGISTRY_BINARY)")
		cpuProfile = flag.String("cpuprofile", "", "directory for CPU profiles (NAME-N.pprof) and HTTP request timelines (NAME-N.requests) of our copy processes")
		tmpRoot    = flag.String("tmpdir", defaultTmpRoot(), "where registries keep their storage (default: /dev/shm if it is a tmpfs, so that disk writeback does not bound the copies)")
		layerJobs  = flag.Int("layer-jobs", 0, "blobs our copier (and the raw floor) move at a time (default: the copier's default)")
		maxCopies  = flag.Int("max-copies", 0, "images our copier copies at a time (default: the copier's default)")
	)
	flag.Parse()

	selected, err := selectRows(*only)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(*tmpRoot, "bench-")
	if err != nil {
		return err
	}
	env := &benchEnv{
		smoke:          *smoke,
		iterations:     max(1, *iterations),
		tmp:            tmp,
		self:           self,
		registryBinary: *regBinary,
		crane:          findTool(*crane, "bin/crane", "crane"),
		skopeo:         findTool(*skopeo, "", "skopeo"),
		cpuProfile:     *cpuProfile,
		layerJobs:      cmp.Or(*layerJobs, registry.DefaultLayerJobs),
		maxCopies:      *maxCopies,
	}
	if env.smoke {
		env.iterations = 1
	}
	if *skopeo == "none" {
		env.skopeo = ""
	}
	defer env.close()
	if env.registryBinary == "" {
		return errors.New("no distribution registry: pass -registry or set REGISTRY_BINARY (make bench does)")
	}
	if env.crane == "" {
		return errors.New("no crane binary: pass -crane or run make crane (make bench does)")
	}
	if env.cpuProfile != "" {
		if err := os.MkdirAll(env.cpuProfile, 0o750); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if env.launcher, err = buildLauncher(ctx, env.tmp); err != nil {
		return err
	}

	start := time.Now()
	var results []Result
	for _, r := range selected {
		fmt.Fprintf(os.Stderr, "bench: row %s...\n", r.name)
		rowStart := time.Now()
		res, err := r.run(ctx, env)
		if err != nil {
			if len(results) > 0 {
				fmt.Println()
				writeTable(os.Stdout, results)
			}
			return fmt.Errorf("row %s: %w", r.name, err)
		}
		fmt.Fprintf(os.Stderr, "bench: row %s took %s\n", r.name, time.Since(rowStart).Round(time.Millisecond))
		results = append(results, res...)
	}
	fmt.Println()
	writeTable(os.Stdout, results)
	fmt.Printf("\n%d rows in %s (%s)\n", len(results), time.Since(start).Round(time.Second), env.describe())
	if *out != "" {
		if err := writeJSON(*out, results); err != nil {
			return err
		}
	}
	return nil
}

func rowNames() []string {
	names := make([]string, 0, len(rows))
	for _, r := range rows {
		names = append(names, r.name)
	}
	return names
}

func selectRows(only string) ([]row, error) {
	if only == "" {
		return rows, nil
	}
	var selected []row
	for _, n := range strings.Split(only, ",") {
		i := slices.IndexFunc(rows, func(r row) bool { return r.name == strings.TrimSpace(n) })
		if i < 0 {
			return nil, fmt.Errorf("unknown row %q (have %s)", n, strings.Join(rowNames(), ","))
		}
		selected = append(selected, rows[i])
	}
	return selected, nil
}

// defaultTmpRoot returns /dev/shm if it is a writable tmpfs with room for the images, else the system's
// temporary directory.
func defaultTmpRoot() string {
	const shm = "/dev/shm"
	var st syscall.Statfs_t
	if err := syscall.Statfs(shm, &st); err != nil || st.Type != 0x01021994 /* TMPFS_MAGIC */ {
		return os.TempDir()
	}
	if free := float64(st.Bavail) * float64(st.Bsize); free < 4<<30 || syscall.Access(shm, 0o2 /* W_OK */) != nil {
		return os.TempDir()
	}
	return shm
}

// findTool returns flagValue if set, else local if it exists, else name on PATH, else "".
func findTool(flagValue, local, name string) string {
	if flagValue != "" {
		return flagValue
	}
	if local != "" {
		if abs, err := filepath.Abs(local); err == nil {
			if _, err := os.Stat(abs); err == nil {
				return abs
			}
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return ""
}

func (env *benchEnv) describe() string {
	mode := fmt.Sprintf("median of %d", env.iterations)
	if env.smoke {
		mode = "smoke: tiny images, 1 iteration, targets not judged"
	}
	skopeo := "skopeo absent"
	if env.skopeo != "" {
		skopeo = "skopeo " + toolVersion(env.skopeo, "--version")
	}
	return fmt.Sprintf("%s; crane %s; %s", mode, toolVersion(env.crane, "version"), skopeo)
}

func toolVersion(bin string, args ...string) string {
	out, err := exec.CommandContext(context.Background(), bin, args...).Output()
	if err != nil {
		return "?"
	}
	v := strings.TrimSpace(string(out))
	return strings.TrimPrefix(v, "skopeo version ")
}

// onClose registers f to run when the harness exits, latest first.
func (env *benchEnv) onClose(f func()) { env.cleanup = append(env.cleanup, f) }

func (env *benchEnv) close() {
	for i := len(env.cleanup) - 1; i >= 0; i-- {
		env.cleanup[i]()
	}
	if os.Getenv("BENCH_KEEP_TMP") == "" {
		_ = os.RemoveAll(env.tmp)
	}
}
