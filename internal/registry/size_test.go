package registry_test

import (
	"context"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// brokenCopyTimeout bounds the copies of broken images in these specs: each must fail on its own, well before.
const brokenCopyTimeout = 20 * time.Second

var _ = Describe("limiting the size of images", func() {
	onEveryRegistryKind(func(r *registries) {
		It("refuses an image over the limit before moving a blob, naming its size and the limit", func(ctx SpecContext) {
			repo := uniqueRepo("too-large")
			r.pushIndex(repo + ":v1")
			size := totalSize(blobsOf(r.src(repo + ":v1")))
			const limit = 64 << 10 // the layers alone are 64 KiB; the configs make the image larger
			Expect(size).To(BeNumerically(">", limit))
			copier := registry.New(registry.Options{MaxImageSize: limit})
			dst := r.dst("backup/" + repo + ":v1")
			r.resetRequests()
			before := snapshotCopies()

			_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})
			Expect(err).To(HaveOccurred())
			Expect(registry.ClassOf(err)).To(Equal(registry.TooLarge), "class of %q", err)
			Expect(err.Error()).To(ContainSubstring(r.src(repo + ":v1").String()))
			Expect(err.Error()).To(MatchRegexp(`is \d+(\.\d)? KiB \(%d bytes\), larger than --max-image-size allows \(64 KiB\)`, size))
			Expect(registry.Explain(err)).To(BeEmpty(), "the message speaks for itself")
			Expect(before.added("failed")).To(Equal(1.0))

			Expect(r.upstream.BlobRequests()).To(BeZero(), "blob requests to the source: %v", r.upstream.Requests())
			Expect(uploadsStarted(r.backup)).To(BeZero())
			Expect(r.backup.BlobRequests()).To(BeZero(), "blob requests to the backup: %v", r.backup.Requests())
			Expect(requestsWith(r.backup, http.MethodPut, "/manifests/")).To(BeZero(), "manifests written to the backup")
			Expect(tagExists(dst)).To(BeFalse())
		})

		DescribeTable("copies an image at or below the limit",
			func(ctx SpecContext, headroom int64) {
				repo := uniqueRepo("small-enough")
				want := r.pushIndex(repo + ":v1")
				size := totalSize(blobsOf(r.src(repo + ":v1")))
				copier := registry.New(registry.Options{MaxImageSize: size + headroom})

				Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
				idx, err := remote.Index(r.dst("backup/" + repo + ":v1"))
				Expect(err).NotTo(HaveOccurred())
				Expect(validate.Index(idx)).To(Succeed())
			},
			Entry("exactly at the limit", int64(0)),
			Entry("below the limit", int64(1<<20)),
		)

		// With a limit of one byte every image is refused, and the message gives the size the copier measured.
		DescribeTable("measures an image as the sum of its distinct blobs, on every platform",
			func(ctx SpecContext, push func(repoTag string) error) {
				repo := uniqueRepo("measured")
				Expect(push(repo + ":v1")).To(Succeed())
				want := totalSize(distinctBlobs(r.src(repo + ":v1")))
				copier := registry.New(registry.Options{MaxImageSize: 1})
				r.resetRequests()

				_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
				Expect(err).To(MatchError(ContainSubstring("(%d bytes), larger than --max-image-size allows (1 B)", want)))
				Expect(registry.ClassOf(err)).To(Equal(registry.TooLarge), "class of %q", err)
				Expect(r.upstream.BlobRequests()).To(BeZero(), "the sizes come from the manifests")
			},
			Entry("a single-platform image", func(repoTag string) error {
				_, err := r.upstream.PushImage(repoTag, testLayers, testLayerSize)
				return err
			}),
			Entry("a two-platform index, counting both platforms", func(repoTag string) error {
				_, err := r.upstream.PushIndex(repoTag, testLayers, testLayerSize)
				return err
			}),
			Entry("an index whose platforms share their layers, counting each layer once", func(repoTag string) error {
				_, err := r.upstream.WriteIndex(repoTag, sharedLayersIndex())
				return err
			}),
			Entry("an index of indexes, counting the platforms of each", func(repoTag string) error {
				_, err := r.upstream.WriteIndex(repoTag, indexOfIndexes())
				return err
			}),
		)

		It("reads each manifest of an index once, for measuring and copying alike", func(ctx SpecContext) {
			repo := uniqueRepo("read-once")
			want := r.pushIndex(repo + ":v1")
			manifests := 1 + len(childrenOf(r.src(repo+":v1")))
			copier := registry.New(registry.Options{MaxImageSize: 1 << 30})
			r.resetRequests()

			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
			Expect(requestsWith(r.upstream, http.MethodGet, "/manifests/sha256:")).To(Equal(manifests),
				"the index and each of its images: %v", r.upstream.Requests())
		})

		It("uses an image the backup already holds whatever its size, as nothing needs to be copied", func(ctx SpecContext) {
			repo := uniqueRepo("held")
			want := r.pushIndex(repo + ":v1")
			Expect(registry.New(registry.Options{}).Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))

			limited := registry.New(registry.Options{MaxImageSize: 1})
			Expect(limited.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
		})
	})

	DescribeTable("parses --max-image-size as a Kubernetes quantity of bytes",
		func(flag string, want int64) {
			Expect(registry.ParseMaxImageSize(flag)).To(Equal(want))
		},
		Entry("no limit", "0", int64(0)),
		Entry("gibibytes", "10Gi", int64(10<<30)),
		Entry("mebibytes", "500Mi", int64(500<<20)),
		Entry("a fraction of a larger unit", "1.5Gi", int64(1536<<20)),
		Entry("gigabytes", "2G", int64(2_000_000_000)),
		Entry("plain bytes", "123456", int64(123456)),
	)

	DescribeTable("refuses a --max-image-size that is not a size, with the reason",
		func(flag, reason string) {
			_, err := registry.ParseMaxImageSize(flag)
			Expect(err).To(MatchError(ContainSubstring(reason)))
			Expect(err.Error()).To(ContainSubstring(flag))
		},
		Entry("a negative size", "-1Gi", "is negative"),
		Entry("milli for mega", "100m", "not a whole number of bytes"),
		Entry("not a quantity", "ten gigs", "not a quantity of bytes"),
		Entry("a size no int64 holds", "9223372036854775808", "larger than any image"),
	)
})

var _ = Describe("copying broken image indexes", func() {
	onEveryRegistryKind(func(r *registries) {
		// expectNothingCopied checks that a failed copy moved no blob and created no backup tag, so nothing can
		// refer to it.
		expectNothingCopied := func(dst name.Tag) {
			GinkgoHelper()
			Expect(r.upstream.BlobRequests()).To(BeZero(), "blob requests to the source: %v", r.upstream.Requests())
			Expect(uploadsStarted(r.backup)).To(BeZero(), "blob uploads to the backup")
			Expect(tagExists(dst)).To(BeFalse(), "the backup tag %s exists", dst)
		}

		DescribeTable("reports an index that references a manifest the registry does not have, as permanent",
			func(ctx SpecContext, publish func(repo string) v1.Hash) {
				repo := uniqueRepo("incomplete")
				missing := publish(repo)
				index := headDigest(r.src(repo + ":v1"))
				dst := r.dst("backup/" + repo + ":v1")
				copier := registry.New(registry.Options{CopyTimeout: brokenCopyTimeout})
				r.resetRequests()
				before := snapshotCopies()

				_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})
				Expect(err).To(MatchError(ContainSubstring("the image index at %s@%s references manifest %s, which the registry does not have",
					r.src(repo+":v1").Context(), index, missing)))
				Expect(err.Error()).To(ContainSubstring(r.src(repo + ":v1").String()))
				Expect(registry.ClassOf(err)).To(Equal(registry.Permanent), "class of %q", err)
				Expect(registry.Explain(err)).To(ContainSubstring("the image index is incomplete in the source registry"))
				Expect(registry.Explain(err)).NotTo(ContainSubstring("does not exist"), "the image the user named exists")
				Expect(before.added("failed")).To(Equal(1.0))
				expectNothingCopied(dst)
			},
			// Both registries refuse an index whose children they do not have, so the child goes after the index.
			Entry("a child image deleted after the index was published", func(repo string) v1.Hash {
				r.pushIndex(repo + ":v1")
				children := childrenOf(r.src(repo + ":v1"))
				Expect(r.upstream.Delete(repo + "@" + children[1].String())).To(Succeed())
				return children[1]
			}),
			Entry("a child index deleted after the index was published", func(repo string) v1.Hash {
				_, err := r.upstream.WriteIndex(repo+":v1", indexOfIndexes())
				Expect(err).NotTo(HaveOccurred())
				children := childrenOf(r.src(repo + ":v1"))
				Expect(r.upstream.Delete(repo + "@" + children[0].String())).To(Succeed())
				return children[0]
			}),
		)

		// An index cannot list itself: its digest would have to be part of its own content. For the same reason
		// no index can list another that lists the first. What a broken (or hostile) registry can do is answer
		// the request for a child with the index itself, which a copier that trusted it would follow forever.
		It("refuses an index that the registry serves in place of its own child", func(ctx SpecContext) {
			repo := uniqueRepo("self")
			index := r.pushIndex(repo + ":v1")
			child := childrenOf(r.src(repo + ":v1"))[0]
			dst := r.dst("backup/" + repo + ":v1")
			r.upstream.Use(registrytest.ServeManifest(repo, child, index))
			copier := registry.New(registry.Options{CopyTimeout: brokenCopyTimeout})
			r.resetRequests()

			_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})
			Expect(err).To(MatchError(ContainSubstring("reading manifest %s, listed in the image index at %s@%s", child, r.src(repo+":v1").Context(), index)))
			Expect(err).To(MatchError(ContainSubstring("does not match requested digest")), "go-containerregistry checks the digest")
			Expect(err).NotTo(MatchError(context.DeadlineExceeded))
			// Like a blob whose bytes do not match its digest, this may be a proxy's fault rather than the
			// registry's, and is retried.
			Expect(registry.ClassOf(err)).To(Equal(registry.Transient), "class of %q", err)
			expectNothingCopied(dst)
		})

		It("refuses indexes nested 50 levels deep after reading a few, without copying anything", func(ctx SpecContext) {
			repo := uniqueRepo("nested")
			_, err := r.upstream.WriteIndex(repo+":v1", nestedIndex(50))
			Expect(err).NotTo(HaveOccurred())
			dst := r.dst("backup/" + repo + ":v1")
			copier := registry.New(registry.Options{CopyTimeout: brokenCopyTimeout})
			r.resetRequests()

			_, err = copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})
			Expect(err).To(MatchError(ContainSubstring("image indexes nest more than 8 levels deep")))
			Expect(err.Error()).To(ContainSubstring(r.src(repo + ":v1").String()))
			Expect(registry.ClassOf(err)).To(Equal(registry.Permanent), "class of %q", err)
			Expect(requestsWith(r.upstream, http.MethodGet, "/manifests/sha256:")).To(BeNumerically("<=", 9),
				"the copier stops reading at the limit: %v", r.upstream.Requests())
			expectNothingCopied(dst)
		})

		It("copies indexes nested as deep as it allows, and verifies the copy", func(ctx SpecContext) {
			repo := uniqueRepo("nested-ok")
			want, err := r.upstream.WriteIndex(repo+":v1", nestedIndex(8))
			Expect(err).NotTo(HaveOccurred())

			Expect(registry.New(registry.Options{}).Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
			idx, err := remote.Index(r.dst("backup/" + repo + ":v1"))
			Expect(err).NotTo(HaveOccurred())
			Expect(validate.Index(idx)).To(Succeed())
		})
	})
})

// childrenOf returns the digests of the manifests the index at ref lists.
func childrenOf(ref name.Reference) []v1.Hash {
	GinkgoHelper()
	idx, err := remote.Index(ref)
	Expect(err).NotTo(HaveOccurred())
	m, err := idx.IndexManifest()
	Expect(err).NotTo(HaveOccurred())
	var digests []v1.Hash
	for _, child := range m.Manifests {
		digests = append(digests, child.Digest)
	}
	return digests
}

// distinctBlobs lists the blobs (configs and layers) of the image at ref, or of every image an index at ref
// lists, directly or through other indexes, with their sizes.
func distinctBlobs(ref name.Reference) map[v1.Hash]int64 {
	GinkgoHelper()
	desc, err := remote.Get(ref)
	Expect(err).NotTo(HaveOccurred())
	blobs := map[v1.Hash]int64{}
	var addImage func(v1.Image)
	var addIndex func(v1.ImageIndex)
	addImage = func(img v1.Image) {
		m, err := img.Manifest()
		Expect(err).NotTo(HaveOccurred())
		for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			blobs[b.Digest] = b.Size
		}
	}
	addIndex = func(idx v1.ImageIndex) {
		m, err := idx.IndexManifest()
		Expect(err).NotTo(HaveOccurred())
		for _, child := range m.Manifests {
			if child.MediaType.IsIndex() {
				sub, err := idx.ImageIndex(child.Digest)
				Expect(err).NotTo(HaveOccurred())
				addIndex(sub)
				continue
			}
			img, err := idx.Image(child.Digest)
			Expect(err).NotTo(HaveOccurred())
			addImage(img)
		}
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		Expect(err).NotTo(HaveOccurred())
		addIndex(idx)
	} else {
		img, err := desc.Image()
		Expect(err).NotTo(HaveOccurred())
		addImage(img)
	}
	return blobs
}

// tagExists reports whether tag resolves to a manifest.
func tagExists(tag name.Tag) bool {
	GinkgoHelper()
	_, err := remote.Head(tag)
	if err != nil {
		Expect(err).To(MatchError(ContainSubstring("404")), "asking for %s", tag)
		return false
	}
	return true
}

// sharedLayersIndex is a two-platform index whose images have the same layers and differ in their configs.
func sharedLayersIndex() v1.ImageIndex {
	GinkgoHelper()
	base, err := random.Image(testLayerSize, testLayers)
	Expect(err).NotTo(HaveOccurred())
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range registrytest.Platforms {
		cf, err := base.ConfigFile()
		Expect(err).NotTo(HaveOccurred())
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = p.OS, p.Architecture
		img, err := mutate.ConfigFile(base, cf)
		Expect(err).NotTo(HaveOccurred())
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return idx
}

// indexOfIndexes is an index that lists two two-platform indexes.
func indexOfIndexes() v1.ImageIndex {
	GinkgoHelper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for range 2 {
		child, err := registrytest.RandomIndex(testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: child})
	}
	return idx
}

// nestedIndex is an image wrapped in levels indexes, each listing the next.
func nestedIndex(levels int) v1.ImageIndex {
	GinkgoHelper()
	idx, err := registrytest.NestedIndex(levels)
	Expect(err).NotTo(HaveOccurred())
	return idx
}
