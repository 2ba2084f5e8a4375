package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// restoreLayers and restoreLayerSize size the restore row's images: two-platform indexes with two 16 KiB layers
// per platform, 100 of them about 6.5 MiB of blobs.
const (
	restoreLayers    = 2
	restoreLayerSize = 16 << 10
)

// runRestore measures the restore row on a cluster of its own, whose controller verifies every copy every
// restoreInterval: cfg.restores copies are made, the backup registry loses its whole storage on disk (moved
// away in one rename, as a lost volume would be), and the row waits until every ImageBackup is Ready again
// from a restore and every backup tag resolves to its recorded digest.
func runRestore(ctx context.Context, env *benchEnv) ([]Result, error) {
	cfg := inventoryConfigFor(env)
	n := cfg.restores
	intervalArg := "--verify-interval=" + cfg.restoreInterval.String()
	ic, err := startInventoryCluster(ctx, env.cpuProfile, intervalArg)
	defer ic.stop(ctx)
	if err != nil {
		return nil, err
	}
	// Restores pull through the counting proxy from the start.
	if err := ic.restartWith(ctx, ic.upstreamArgs()...); err != nil {
		return nil, err
	}
	images, err := ic.pushImages(ctx, "lost", n, func() (remote.Taggable, error) {
		return registrytest.RandomIndex(restoreLayers, restoreLayerSize)
	})
	if err != nil {
		return nil, err
	}
	var lostBytes int64
	for _, img := range images {
		b, err := blobBytes(img.(v1.ImageIndex))
		if err != nil {
			return nil, err
		}
		lostBytes += b
	}
	setup, err := ic.backUp(ctx, cfg, "lost", "lost", n, 1)
	if err != nil {
		return nil, err
	}

	// Every lastCopied so far (whole seconds) is in an earlier second than the loss, so that a restore's stands out.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 100*time.Millisecond)))
	before, err := ic.controllerMetrics(ctx)
	if err != nil {
		return nil, err
	}
	regBefore, err := ic.backupRegistryMetrics(ctx)
	if err != nil {
		return nil, err
	}
	ic.upstream.ResetRequests()
	storage := filepath.Join(ic.dir, "registry", "backup", "data", "docker")
	if _, err := os.Stat(storage); err != nil {
		return nil, fmt.Errorf("the backup registry's storage: %w", err)
	}
	// Renamed away at once, since restores begin while a delete would still be under way; deleted afterwards.
	gone := storage + ".lost"
	lost := time.Now()
	lostSecond := lost.Truncate(time.Second)
	if err := os.Rename(storage, gone); err != nil {
		return nil, fmt.Errorf("losing the backup registry's storage: %w", err)
	}
	defer os.RemoveAll(gone)
	inventoryLog("restore: the backup registry lost its storage (%d copies, %s of blobs)", n, mib(lostBytes))

	var ready int
	var readyAt time.Time
	var regAfter metricstest.Samples
	err = scalePoll(ctx, 50*time.Millisecond, 2*time.Minute, "every lost copy to be restored", func() (bool, error) {
		list, err := ic.imageBackups(ctx)
		if err != nil {
			return false, err
		}
		ready = 0
		for i := range list {
			st := &list[i].Status
			if st.Phase == v1alpha1.PhaseReady && st.LastCopied != nil && !st.LastCopied.Time.Before(lostSecond) {
				ready++
			}
		}
		if ready < n || len(list) != n {
			return false, nil
		}
		// The registry's counts before the row's own requests below.
		if regAfter, err = ic.backupRegistryMetrics(ctx); err != nil {
			return false, err
		}
		if readyAt.IsZero() {
			readyAt = time.Now()
		}
		return tagsResolve(ctx, ic.http, list), nil
	})
	restored := time.Since(lost)
	if err != nil {
		return nil, fmt.Errorf("%d of %d restored: %w%s", ready, n, err, ic.controllerLogTail())
	}
	inventoryLog("restore: all %d copies Ready again and resolving %s after the loss", n, restored.Round(10*time.Millisecond))
	if err := ic.waitInventoryQuiet(ctx, cfg.quietTimeout); err != nil {
		return nil, err
	}
	after, err := ic.controllerMetrics(ctx)
	if err != nil {
		return nil, err
	}
	restores := scaleDelta(before, after, "image_clone_restores_total", "result")
	bytes := after.Sum("image_clone_restored_bytes_total", nil) - before.Sum("image_clone_restored_bytes_total", nil)
	lostFound := after.Sum(verificationsMetric, map[string]string{"result": "lost"}) - before.Sum(verificationsMetric, map[string]string{"result": "lost"})
	requests := scaleDelta(regBefore, regAfter, "registry_http_requests_total", "handler")
	upstream := ic.upstream.Requests()

	row := fmt.Sprintf("restore: %d copies lost at once (%s of blobs)", n, mib(lostBytes))
	where := fmt.Sprintf("the backup registry's whole storage moved away on disk at once; two-platform indexes, %d layers of %s per platform; %s; "+
		"controller flags: %s", restoreLayers, mib(restoreLayerSize), setup, ic.flags(ic.upstreamArgs()...))
	return []Result{
		{
			Row:     row,
			Measure: fmt.Sprintf("seconds from the loss to every ImageBackup Ready again and its tag resolving (--verify-interval %s)", cfg.restoreInterval),
			Values:  map[string]float64{"ours": restored.Seconds()},
			Note: fmt.Sprintf("a loss is found by each copy's next verification: up to --verify-interval plus a tenth after the loss; "+
				"done = every ImageBackup Ready with lastCopied after the loss (seen %.2f s after it), and a HEAD of each backup tag "+
				"answering its recorded digest, polled every 50 ms; verifications that found a copy lost: %.0f; backup registry requests by handler: %s; "+
				"upstream registry requests: %s; %s", readyAt.Sub(lost).Seconds(), lostFound, scaleCounts(requests), upstreamCounts(upstream), where),
		},
		{
			Row:     row,
			Measure: "restores (image_clone_restores_total)",
			Values:  map[string]float64{"ours": restores["restored"]},
			Target:  fmt.Sprintf("= %d", n),
			Met:     scaleMet(restores["restored"] == float64(n) && restores["failed"] == 0 && restores["unrecoverable"] == 0),
			Note:    "by result: " + scaleCounts(restores),
		},
		{
			Row:     row,
			Measure: "MiB restored (image_clone_restored_bytes_total)",
			Values:  map[string]float64{"ours": bytes / (1 << 20), "lost": float64(lostBytes) / (1 << 20)},
			Ratios:  map[string]float64{"ours/lost": ratio(bytes, float64(lostBytes))},
			Target:  "ours/lost = 1.00",
			Met:     scaleMet(bytes == float64(lostBytes)),
			Note:    "lost = the bytes of every config and layer blob of the images (manifests are not blobs)",
		},
	}, nil
}

// tagsResolve reports whether every ImageBackup's backup tag resolves to its recorded digest: one manifest
// HEAD each, eight at a time, so that the check adds little to the time measured.
func tagsResolve(ctx context.Context, hc *http.Client, list []v1alpha1.ImageBackup) bool {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range list {
		g.Go(func() error {
			ref, err := name.NewTag(list[i].Spec.Backup, name.Insecure)
			if err != nil {
				return err
			}
			u := fmt.Sprintf("http://%s/v2/%s/manifests/%s", ref.RegistryStr(), ref.RepositoryStr(), ref.TagStr())
			req, err := http.NewRequestWithContext(gctx, http.MethodHead, u, nil)
			if err != nil {
				return err
			}
			req.Header.Set("Accept", strings.Join([]string{string(types.OCIImageIndex), string(types.OCIManifestSchema1),
				string(types.DockerManifestList), string(types.DockerManifestSchema2)}, ","))
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode != http.StatusOK || got != list[i].Status.Digest {
				return fmt.Errorf("%s: %s, digest %q", ref, resp.Status, got)
			}
			return nil
		})
	}
	return g.Wait() == nil
}

// blobBytes sums the config and layer sizes of every image of idx.
func blobBytes(idx v1.ImageIndex) (int64, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, desc := range m.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return 0, err
		}
		im, err := img.Manifest()
		if err != nil {
			return 0, err
		}
		total += im.Config.Size
		for _, l := range im.Layers {
			total += l.Size
		}
	}
	return total, nil
}
