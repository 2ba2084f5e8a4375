package main

// Row "pull-budget": what backing up workloads costs the pull budget of the source registry. Docker Hub counts
// a pull for every manifest GET (HEAD requests are free), and so do the registries that copy its limits, so
// the promise is: exactly one manifest GET per manifest a copy must read (an image: 1; an index: 1 plus its
// manifests; a signature or referrer: its manifest, and the fallback tag index where the registry has no
// referrers API), none for workloads whose images are backed up already, and none when the controller
// restarts. The requests are counted by method and path at a counting proxy in front of the upstream registry
// of a private local cluster (registrytest.Front, see scale_cluster.go), through which the controller pulls
// docker.io. The counts are exact, so they are judged with -smoke too, and a broken promise fails the row.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

func init() {
	rows = append(rows, row{name: "pull-budget", run: runPullBudget})
}

// budgetImage is one image of the row, pushed to the upstream registry as docker.io/library/<repo>:1.
type budgetImage struct {
	repo string
	what string
	// push pushes the image to ref and returns how many manifests a copy of it must read.
	push func(ref name.Tag) (int, error)
}

var budgetImages = []budgetImage{
	{repo: "budget-image", what: "single-platform image", push: func(ref name.Tag) (int, error) {
		img, err := random.Image(1024, 2)
		if err != nil {
			return 0, err
		}
		return 1, remote.Write(ref, img)
	}},
	{repo: "budget-index-2", what: "2-platform index", push: func(ref name.Tag) (int, error) {
		idx, err := registrytest.RandomIndex(2, 1024)
		if err != nil {
			return 0, err
		}
		return 3, remote.WriteIndex(ref, idx)
	}},
	{repo: "budget-index-4", what: "4-platform index", push: func(ref name.Tag) (int, error) {
		idx, err := platformIndex(4)
		if err != nil {
			return 0, err
		}
		return 5, remote.WriteIndex(ref, idx)
	}},
	{repo: "budget-nested", what: "index of an index of an image", push: func(ref name.Tag) (int, error) {
		idx, err := registrytest.NestedIndex(2)
		if err != nil {
			return 0, err
		}
		return 3, remote.WriteIndex(ref, idx)
	}},
	{repo: "budget-signed", what: "2-platform index with a cosign .sig tag and a referrer", push: func(ref name.Tag) (int, error) {
		idx, err := registrytest.RandomIndex(2, 1024)
		if err != nil {
			return 0, err
		}
		if err := remote.WriteIndex(ref, idx); err != nil {
			return 0, err
		}
		digest, err := idx.Digest()
		if err != nil {
			return 0, err
		}
		if _, err := pushSignatureTag(ref.Context(), digest.Algorithm+"-"+digest.Hex+".sig"); err != nil {
			return 0, err
		}
		if _, err := pushReferrer(ref.Context(), digest, types.OCIImageIndex, "application/spdx+json"); err != nil {
			return 0, err
		}
		// The index, its 2 images, the signature and the referrer; and the fallback tag index that lists the
		// referrer where the registry has no referrers API (go-containerregistry then pushed one).
		n := 5
		tags, err := remote.List(ref.Context())
		if err != nil {
			return 0, err
		}
		if slices.Contains(tags, digest.Algorithm+"-"+digest.Hex) {
			n++
		}
		return n, nil
	}},
}

// platformIndex builds an OCI index of n random single-layer images for n platforms.
func platformIndex(n int) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for i := range n {
		img, err := random.Image(1024, 1)
		if err != nil {
			return nil, err
		}
		p := v1.Platform{OS: "linux", Architecture: []string{"amd64", "arm64", "ppc64le", "s390x", "riscv64", "386"}[i%6]}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return idx, nil
}

// pullBudgetConfig sizes the row: how many workloads of each kind use each image in each phase.
type pullBudgetConfig struct {
	perKind    int
	namespaces int
}

func pullBudgetConfigFor(env *benchEnv) pullBudgetConfig {
	if env.smoke {
		return pullBudgetConfig{perKind: 1, namespaces: 2}
	}
	return pullBudgetConfig{perKind: 10, namespaces: 4}
}

func runPullBudget(ctx context.Context, env *benchEnv) ([]Result, error) {
	cfg := pullBudgetConfigFor(env)
	c, err := startLocalCluster(ctx, clusterOptions{nodes: 1, countRequests: true})
	defer c.stop(ctx)
	if err != nil {
		return nil, err
	}
	want := map[string]float64{}
	var wantTotal float64
	var images []string
	for _, img := range budgetImages {
		ref, err := name.NewTag(c.upstreamRegistry()+"/library/"+img.repo+":1", name.Insecure)
		if err != nil {
			return nil, err
		}
		n, err := img.push(ref)
		if err != nil {
			return nil, fmt.Errorf("pushing %s: %w", ref, err)
		}
		want["library/"+img.repo], wantTotal = float64(n), wantTotal+float64(n)
		images = append(images, img.repo+":1")
	}
	namespaces := make([]string, cfg.namespaces)
	for i := range namespaces {
		namespaces[i] = fmt.Sprintf("budget-%d", i)
		if err := createNamespace(ctx, c, namespaces[i]); err != nil {
			return nil, err
		}
	}
	perPhase := len(images) * cfg.perKind * 4
	what := fmt.Sprintf("%d images (%s), %d workloads of each of 4 kinds per image over %d namespaces",
		len(images), budgetDescribe(), cfg.perKind, cfg.namespaces)

	// Cold: every image is copied once, however many workloads use it at once.
	cold, err := budgetPhase(ctx, c, cfg, "cold", images, func() error {
		return createBudgetWorkloads(ctx, c, cfg, "a", images, namespaces)
	})
	if err != nil {
		return nil, err
	}
	// Warm: as many new workloads again, on the images that are backed up now.
	warm, err := budgetPhase(ctx, c, cfg, "warm", images, func() error {
		return createBudgetWorkloads(ctx, c, cfg, "b", images, namespaces)
	})
	if err != nil {
		return nil, err
	}
	restart, err := budgetPhase(ctx, c, cfg, "restart", images, func() error { return c.restartController(ctx) })
	if err != nil {
		return nil, err
	}

	coldGets := upstreamManifestGets(cold.requests)
	byRepo := budgetGetsByRepo(cold.requests)
	var wrongRepos []string
	for repo, n := range want {
		if byRepo[repo] != n {
			wrongRepos = append(wrongRepos, fmt.Sprintf("%s: %.0f, want %.0f", repo, byRepo[repo], n))
		}
	}
	sort.Strings(wrongRepos)
	warmGets, restartGets := upstreamManifestGets(warm.requests), upstreamManifestGets(restart.requests)
	row := "pull-budget: " + what
	results := []Result{
		{
			Row:     row,
			Measure: fmt.Sprintf("upstream manifest GETs while %d new workloads back up the images", perPhase),
			Values:  map[string]float64{"ours": coldGets},
			Target:  fmt.Sprintf("= %.0f, one per manifest of each copy, per image as listed", wantTotal),
			Met:     scaleMet(coldGets == wantTotal && len(wrongRepos) == 0),
			Note: fmt.Sprintf("manifest GETs by repository: %s; all upstream requests: %s; %s", listCounts(byRepo),
				listCounts(upstreamByKind(cold.requests)), cold.note),
		},
		{
			Row:     row,
			Measure: fmt.Sprintf("upstream manifest GETs for %d more workloads on the backed-up images", perPhase),
			Values:  map[string]float64{"ours": warmGets},
			Target:  "= 0",
			Met:     scaleMet(warmGets == 0),
			Note:    fmt.Sprintf("all upstream requests: %s; %s", listCounts(upstreamByKind(warm.requests)), warm.note),
		},
		{
			Row:     row,
			Measure: fmt.Sprintf("upstream manifest GETs when the controller restarts with %d workloads backed up", 2*perPhase),
			Values:  map[string]float64{"ours": restartGets},
			Target:  "= 0",
			Met:     scaleMet(restartGets == 0),
			Note:    fmt.Sprintf("all upstream requests: %s; %s", listCounts(upstreamByKind(restart.requests)), restart.note),
		},
	}
	var broken []string
	for _, r := range results {
		if r.Met != nil && !*r.Met {
			broken = append(broken, fmt.Sprintf("%s: %.0f, want %s (%s)", r.Measure, r.Values["ours"], r.Target, r.Note))
		}
	}
	if len(wrongRepos) > 0 {
		broken = append(broken, "by repository: "+strings.Join(wrongRepos, "; "))
	}
	if len(broken) > 0 {
		return results, fmt.Errorf("the pull budget is broken:\n  %s", strings.Join(broken, "\n  "))
	}
	return results, nil
}

func budgetDescribe() string {
	parts := make([]string, len(budgetImages))
	for i, img := range budgetImages {
		parts[i] = img.what
	}
	return strings.Join(parts, ", ")
}

// budgetPhaseResult is what the upstream registry received in one phase of the row.
type budgetPhaseResult struct {
	requests []registrytest.Request
	note     string
}

// budgetPhase runs act (which creates workloads or restarts the controller), waits until the controller has
// patched or reconciled every workload and is quiet, and returns the upstream requests made meanwhile.
func budgetPhase(ctx context.Context, c *localCluster, cfg pullBudgetConfig, phase string, images []string,
	act func() error) (budgetPhaseResult, error) {
	from := len(c.upstreamRequests())
	before, err := c.controllerMetrics(ctx)
	if err != nil {
		return budgetPhaseResult{}, err
	}
	restart := phase == "restart"
	if restart {
		before = nil // a new process counts from zero
	}
	start := time.Now()
	if err := act(); err != nil {
		return budgetPhaseResult{}, err
	}
	// Every workload of the phase patched (or, after the restart, every workload reconciled) and the queues
	// empty: then nothing more reads the upstream registry.
	want := map[string]int{}
	for _, kind := range scaleKinds {
		want[kind] = len(images) * cfg.perKind
		if restart {
			want[kind] *= 2 // both batches
		}
	}
	var m metricstest.Samples
	err = scalePoll(ctx, 100*time.Millisecond, 3*time.Minute, "the "+phase+" phase's workloads", func() (bool, error) {
		if m, err = c.controllerMetrics(ctx); err != nil {
			return false, err
		}
		for kind, n := range want {
			metric, labels := "image_clone_workloads_patched_total", map[string]string{"kind": kind}
			if restart {
				metric, labels = "controller_runtime_reconcile_total", map[string]string{"controller": scaleController(kind)}
			}
			if m.Sum(metric, labels)-before.Sum(metric, labels) < float64(n) {
				return false, nil
			}
		}
		return controllersQuiet(m), nil
	})
	if err != nil {
		return budgetPhaseResult{}, fmt.Errorf("pull-budget %s phase: %w%s", phase, err, c.controllerLogTail())
	}
	if err := c.waitQuiet(ctx, time.Minute); err != nil {
		return budgetPhaseResult{}, err
	}
	if m, err = c.controllerMetrics(ctx); err != nil {
		return budgetPhaseResult{}, err
	}
	scaleLog("pull-budget %s phase settled in %s", phase, time.Since(start).Round(10*time.Millisecond))
	copies := scaleDelta(before, m, "image_clone_copies_total", "result")
	return budgetPhaseResult{
		requests: c.upstreamRequests()[from:],
		note:     fmt.Sprintf("copy requests: %s; settled in %.1f s", scaleCounts(copies), time.Since(start).Seconds()),
	}, nil
}

// createBudgetWorkloads creates cfg.perKind workloads of each kind per image, named after batch, spread over
// the namespaces, all at once (16 at a time).
func createBudgetWorkloads(ctx context.Context, c *localCluster, cfg pullBudgetConfig, batch string, images, namespaces []string) error {
	sc := scaleConfig{deployments: cfg.perKind * len(images), daemonSets: cfg.perKind * len(images),
		statefulSets: cfg.perKind * len(images), cronJobs: cfg.perKind * len(images), createWorkers: 16, replicas: 1}
	return createWorkloadsNamed(ctx, c, sc, namespaces, batch+"-", func(_ string, i int) string { return images[i%len(images)] })
}
