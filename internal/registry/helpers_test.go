package registry_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// Small images keep the suite fast: two layers of 16 KiB per image.
const (
	testLayers    = 2
	testLayerSize = 16 << 10
)

// registries are the source and backup registries of one spec.
type registries struct {
	upstream, backup *registrytest.Registry
	// linksBlobs is set when the registry serves a blob only in the repositories it was uploaded or mounted to,
	// as the distribution registry does; go-containerregistry's in-memory registry serves every blob everywhere.
	linksBlobs bool
	// untagsDeleted is set when deleting a manifest by digest removes the tags that point to it, as the
	// distribution registry does; go-containerregistry's in-memory registry keeps them.
	untagsDeleted bool
}

// registryKind is a registry implementation the copier is tested against.
type registryKind struct {
	name  string
	start func() registries
}

var registryKinds = []registryKind{
	{
		name: "in-process registry",
		start: func() registries {
			r := registries{upstream: registrytest.NewInProcess(), backup: registrytest.NewInProcess()}
			DeferCleanup(r.upstream.Close)
			DeferCleanup(r.backup.Close)
			return r
		},
	},
	{
		name: "distribution registry",
		start: func() registries {
			r := registries{upstream: distUpstream, backup: distBackup, linksBlobs: true, untagsDeleted: true}
			for _, reg := range []*registrytest.Registry{r.upstream, r.backup} {
				reg.SetDown(false)
				reg.ResetMiddleware()
				reg.ResetRequests()
				DeferCleanup(reg.SetDown, false)
				DeferCleanup(reg.ResetMiddleware)
			}
			return r
		},
	},
}

// onEveryRegistryKind declares the specs of body once for every registry implementation; the registries are
// ready before each spec runs.
func onEveryRegistryKind(body func(r *registries)) {
	for _, kind := range registryKinds {
		Context("on the "+kind.name, func() {
			r := &registries{}
			BeforeEach(func() { *r = kind.start() })
			body(r)
		})
	}
}

var repoSeq atomic.Int64

// uniqueRepo returns a repository name no other spec uses, so that specs sharing a registry do not interfere.
func uniqueRepo(base string) string {
	return fmt.Sprintf("%s-%d", base, repoSeq.Add(1))
}

func mustRef(s string) name.Reference {
	GinkgoHelper()
	ref, err := name.ParseReference(s)
	Expect(err).NotTo(HaveOccurred())
	return ref
}

func mustTag(s string) name.Tag {
	GinkgoHelper()
	tag, err := name.NewTag(s)
	Expect(err).NotTo(HaveOccurred())
	return tag
}

// src names repoRef (repo:tag or repo@digest) on the upstream registry.
func (r *registries) src(repoRef string) name.Reference {
	return mustRef(r.upstream.Host + "/" + repoRef)
}

// dst names repo:tag on the backup registry.
func (r *registries) dst(repoTag string) name.Tag { return mustTag(r.backup.Host + "/" + repoTag) }

func (r *registries) pushIndex(repoTag string) v1.Hash {
	GinkgoHelper()
	digest, err := r.upstream.PushIndex(repoTag, testLayers, testLayerSize)
	Expect(err).NotTo(HaveOccurred())
	return digest
}

func (r *registries) pushImage(repoTag string) v1.Hash {
	GinkgoHelper()
	digest, err := r.upstream.PushImage(repoTag, testLayers, testLayerSize)
	Expect(err).NotTo(HaveOccurred())
	return digest
}

func (r *registries) resetRequests() {
	r.upstream.ResetRequests()
	r.backup.ResetRequests()
}

// withLogger makes the copier's log lines part of the spec's output, shown when the spec fails.
func withLogger(ctx context.Context) context.Context {
	return logr.NewContext(ctx, GinkgoLogr)
}

// headDigest returns the digest ref resolves to, read directly (not through the copier).
func headDigest(ref name.Reference) v1.Hash {
	GinkgoHelper()
	desc, err := remote.Head(ref)
	Expect(err).NotTo(HaveOccurred())
	return desc.Digest
}

// blobsOf lists the blobs (configs and layers) of the image or every image of the index at ref, with sizes.
func blobsOf(ref name.Reference) map[v1.Hash]int64 {
	GinkgoHelper()
	desc, err := remote.Get(ref)
	Expect(err).NotTo(HaveOccurred())
	blobs := map[v1.Hash]int64{}
	add := func(img v1.Image) {
		m, err := img.Manifest()
		Expect(err).NotTo(HaveOccurred())
		blobs[m.Config.Digest] = m.Config.Size
		for _, l := range m.Layers {
			blobs[l.Digest] = l.Size
		}
	}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		Expect(err).NotTo(HaveOccurred())
		add(img)
		return blobs
	}
	idx, err := desc.ImageIndex()
	Expect(err).NotTo(HaveOccurred())
	im, err := idx.IndexManifest()
	Expect(err).NotTo(HaveOccurred())
	for _, child := range im.Manifests {
		img, err := idx.Image(child.Digest)
		Expect(err).NotTo(HaveOccurred())
		add(img)
	}
	return blobs
}

func totalSize(blobs map[v1.Hash]int64) int64 {
	var n int64
	for _, size := range blobs {
		n += size
	}
	return n
}

// uploadsStarted counts the blob uploads a registry was asked to start (one POST per blob).
func uploadsStarted(reg *registrytest.Registry) int {
	n := 0
	for _, req := range reg.Requests() {
		if req.Method == http.MethodPost && strings.Contains(req.Path, "/blobs/uploads/") {
			n++
		}
	}
	return n
}

// requestsWith counts the requests with method whose path contains part.
func requestsWith(reg *registrytest.Registry, method, part string) int {
	n := 0
	for _, req := range reg.Requests() {
		if req.Method == method && strings.Contains(req.Path, part) {
			n++
		}
	}
	return n
}

// copies returns image_clone_copies_total{result=result}.
func copies(result string) float64 {
	return testutil.ToFloat64(registry.CopiesTotal.WithLabelValues(result))
}

// copiedBytes returns image_clone_copied_bytes_total.
func copiedBytes() float64 { return testutil.ToFloat64(registry.CopiedBytesTotal) }

// copyDurations returns how many copies image_clone_copy_duration_seconds observed.
func copyDurations() uint64 {
	GinkgoHelper()
	samples, err := metricstest.Gather(metrics.Registry)
	Expect(err).NotTo(HaveOccurred())
	return uint64(samples.Sum("image_clone_copy_duration_seconds_count", nil))
}

// metricsSnapshot records copies by result so that a spec can assert on what it added.
type metricsSnapshot map[string]float64

func snapshotCopies() metricsSnapshot {
	GinkgoHelper()
	s := metricsSnapshot{}
	for _, result := range []string{"copied", "joined", "present", "failed"} {
		s[result] = copies(result)
	}
	return s
}

// added returns how much copies_total{result} grew since the snapshot.
func (s metricsSnapshot) added(result string) float64 {
	GinkgoHelper()
	return copies(result) - s[result]
}
