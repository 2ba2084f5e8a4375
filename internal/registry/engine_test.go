package registry_test

import (
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

var _ = Describe("the copy engine", func() {
	onEveryRegistryKind(func(r *registries) {
		var copier *registry.Copier

		BeforeEach(func() {
			copier = registry.New(registry.Options{})
		})

		// pushSharing pushes a base index and an index built on it (one more layer per platform) to the source and
		// returns the source names of both and the bytes of the second that the first does not have.
		pushSharing := func(repo string) (base, derived string, newBytes int64) {
			GinkgoHelper()
			baseIdx, err := registrytest.RandomIndex(testLayers, testLayerSize)
			Expect(err).NotTo(HaveOccurred())
			derivedIdx, err := registrytest.ExtendIndex(baseIdx, 1, testLayerSize)
			Expect(err).NotTo(HaveOccurred())
			_, err = r.upstream.WriteIndex(repo+"-base:v1", baseIdx)
			Expect(err).NotTo(HaveOccurred())
			_, err = r.upstream.WriteIndex(repo+"-app:v1", derivedIdx)
			Expect(err).NotTo(HaveOccurred())
			baseBlobs := blobsOf(r.src(repo + "-base:v1"))
			for d, size := range blobsOf(r.src(repo + "-app:v1")) {
				if _, shared := baseBlobs[d]; !shared {
					newBytes += size
				}
			}
			Expect(newBytes).To(BeNumerically(">", 0))
			return repo + "-base", repo + "-app", newBytes
		}

		It("mounts the blobs another backup repository holds and uploads only the new bytes", func(ctx SpecContext) {
			base, app, newBytes := pushSharing(uniqueRepo("shared"))
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(base + ":v1"), Target: r.dst("backup/" + base + ":v1")})).Error().NotTo(HaveOccurred())
			r.resetRequests()

			want := headDigest(r.src(app + ":v1"))
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(app + ":v1"), Target: r.dst("backup/" + app + ":v1")})).To(Equal(want))
			Expect(r.backup.UploadedBytes()).To(Equal(newBytes), "only the blobs the base image lacks are uploaded")
			if r.linksBlobs {
				shared := len(platformsOf(r.src(app+":v1"))) * testLayers
				Expect(r.backup.Mounts("backup/"+app)).To(Equal(shared), "every shared layer is mounted from the base repository")
				Expect(r.backup.Requests()).To(ContainElement(SatisfyAll(
					HaveField("Method", http.MethodPost), HaveField("Query", ContainSubstring("from=backup%2F"+strings.ReplaceAll(base, "/", "%2F")))),
				))
			}
			idx, err := remote.Index(r.dst("backup/" + app + ":v1"))
			Expect(err).NotTo(HaveOccurred())
			Expect(validate.Index(idx)).To(Succeed())
			Expect(blobsOf(r.dst("backup/" + app + ":v1"))).To(Equal(blobsOf(r.src(app + ":v1"))))
		})

		It("uploads a blob again when the repository it would mount it from no longer holds it", func(ctx SpecContext) {
			if !r.linksBlobs {
				Skip("this registry serves every blob in every repository")
			}
			base, app, _ := pushSharing(uniqueRepo("unlinked"))
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(base + ":v1"), Target: r.dst("backup/" + base + ":v1")})).Error().NotTo(HaveOccurred())
			for d := range blobsOf(r.dst("backup/" + base + ":v1")) {
				Expect(r.backup.DeleteBlob("backup/"+base, d)).To(Succeed())
			}
			r.resetRequests()

			want := headDigest(r.src(app + ":v1"))
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(app + ":v1"), Target: r.dst("backup/" + app + ":v1")})).To(Equal(want))
			Expect(r.backup.Mounts("")).To(BeZero())
			Expect(r.backup.UploadedBytes()).To(Equal(totalSize(blobsOf(r.src(app + ":v1")))))
			idx, err := remote.Index(r.dst("backup/" + app + ":v1"))
			Expect(err).NotTo(HaveOccurred())
			Expect(validate.Index(idx)).To(Succeed())
		})

		It("mounts nothing for a copier that has not verified the blobs itself", func(ctx SpecContext) {
			base, app, _ := pushSharing(uniqueRepo("forgotten"))
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(base + ":v1"), Target: r.dst("backup/" + base + ":v1")})).Error().NotTo(HaveOccurred())
			copier.Forget()
			r.resetRequests()

			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(app + ":v1"), Target: r.dst("backup/" + app + ":v1")})).Error().NotTo(HaveOccurred())
			Expect(r.backup.Mounts("")).To(BeZero())
		})

		It("never copies a blob whose bytes do not match its digest", func(ctx SpecContext) {
			repo := uniqueRepo("corrupt")
			want := r.pushIndex(repo + ":v1")
			dst := r.dst("backup/" + repo + ":v1")
			corrupt := &registrytest.Faults{}
			r.upstream.Use(corrupt.Middleware)
			corrupt.Set(registrytest.Fault{Name: "corrupt blobs", Match: registrytest.BlobGets, Corrupt: true})
			before := snapshotCopies()

			_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})
			Expect(err).To(HaveOccurred(), "the backup registry refuses content that does not match the digest")
			Expect(registry.ClassOf(err)).To(Equal(registry.Transient), "class of %q", err)
			Expect(corrupt.Hits()).To(BeNumerically(">", 0))
			Expect(before.added("failed")).To(Equal(1.0))
			Expect(before.added("copied")).To(BeZero())

			corrupt.Clear()
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})).To(Equal(want))
			idx, err := remote.Index(dst)
			Expect(err).NotTo(HaveOccurred())
			Expect(validate.Index(idx)).To(Succeed())
		})

		It("reads at most LayerJobs blobs of an image at a time, and that many in parallel", func(ctx SpecContext) {
			repo := uniqueRepo("jobs")
			digest, err := r.upstream.PushIndex(repo+":v1", 4, testLayerSize)
			Expect(err).NotTo(HaveOccurred())
			reads := &registrytest.Concurrency{Match: registrytest.BlobGets, Delay: 30 * time.Millisecond}
			r.upstream.Use(reads.Middleware)
			copier = registry.New(registry.Options{LayerJobs: 2})

			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(digest))
			Expect(reads.Total()).To(BeEquivalentTo(10), "two images of a config and four layers")
			Expect(reads.Most()).To(BeEquivalentTo(2))
		})

		It("checks a tag it has not verified with one request to each registry, both at the same time", func(ctx SpecContext) {
			repo := uniqueRepo("check")
			want := r.pushIndex(repo + ":v1")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
			r.resetRequests()
			before := snapshotCopies()

			// Each manifest check waits for the other: checking one registry after the other would time out.
			meet := registrytest.NewRendezvous(manifestHeads, "source", "backup")
			r.upstream.Use(meet.At("source"))
			r.backup.Use(meet.At("backup"))
			fresh := registry.New(registry.Options{})
			Expect(fresh.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
			Expect(meet.Met()).To(BeTrue())
			Expect(before.added("present")).To(Equal(1.0))
			for _, reg := range []*registrytest.Registry{r.upstream, r.backup} {
				Expect(reg.Requests()).To(ConsistOf(SatisfyAll(
					HaveField("Method", http.MethodHead), HaveField("Path", ContainSubstring("/manifests/v1")))),
				)
			}
		})

		It("moves the backup tag back when the source tag returns to an image copied before", func(ctx SpecContext) {
			repo := uniqueRepo("returning")
			first := r.pushIndex(repo + ":latest")
			dst := r.dst("backup/" + repo + ":latest")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":latest"), Target: dst})).To(Equal(first))
			second := r.pushIndex(repo + ":latest")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":latest"), Target: dst})).To(Equal(second))

			desc, err := remote.Get(r.src(repo + "@" + first.String()))
			Expect(err).NotTo(HaveOccurred())
			Expect(remote.Tag(mustTag(r.upstream.Host+"/"+repo+":latest"), desc)).To(Succeed())
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":latest"), Target: dst})).To(Equal(first))
			Expect(headDigest(dst)).To(Equal(first), "the backup tag follows the source tag")
		})
	})

	Describe("reading from a registry that hands out anonymous tokens", func() {
		It("gets a token after the first refusal and asks for one straight away afterwards", func(ctx SpecContext) {
			upstream, backup := registrytest.NewInProcess(), registrytest.NewInProcess()
			DeferCleanup(upstream.Close)
			DeferCleanup(backup.Close)
			want, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
			Expect(err).NotTo(HaveOccurred())
			// Like Docker Hub, the registry serves anonymous reads only with a token from its realm.
			tokens := registrytest.Front(upstream.Host, registrytest.TokenRealm("anonymous-token"))
			DeferCleanup(tokens.Close)
			copier := registry.New(registry.Options{})

			for _, tag := range []string{"v1", "v1-again"} {
				Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(tokens.Host + "/app:v1"), Target: mustTag(backup.Host + "/backup/app:" + tag)})).To(Equal(want))
			}
			refusedManifests := 0
			for _, req := range tokens.Requests() {
				if strings.Contains(req.Path, "/manifests/") && req.Status == http.StatusUnauthorized {
					refusedManifests++
				}
			}
			Expect(refusedManifests).To(BeEquivalentTo(1), "only the first check was tried without a token")
		})
	})
})

// platformsOf returns the platforms of the index at ref.
func platformsOf(ref name.Reference) []string {
	GinkgoHelper()
	idx, err := remote.Index(ref)
	Expect(err).NotTo(HaveOccurred())
	m, err := idx.IndexManifest()
	Expect(err).NotTo(HaveOccurred())
	var platforms []string
	for _, child := range m.Manifests {
		platforms = append(platforms, child.Platform.String())
	}
	return platforms
}

// manifestHeads matches the manifest HEADs with which the copier checks a tag.
func manifestHeads(req *http.Request) bool {
	return req.Method == http.MethodHead && registrytest.Manifests(req)
}
