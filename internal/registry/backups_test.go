package registry_test

import (
	"errors"
	"net/http"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
)

// These specs cover what the inventory (internal/inventory) relies on: what a Copy tells Options.OnBackup,
// and the operations that keep a copy once made (Check, Verify, Restore, Delete).

var _ = Describe("telling the inventory what a copy found or did", func() {
	onEveryRegistryKind(func(r *registries) {
		var (
			seen   *observations
			copier *registry.Copier
		)

		BeforeEach(func() {
			seen = &observations{}
			copier = registry.New(registry.Options{OnBackup: seen.record})
		})

		It("reports a new copy Copying, then Copied with its media type, platforms and size; the next copy finds it Present", func(ctx SpecContext) {
			repo := uniqueRepo("observed")
			idx, repeated := buildxIndex()
			digest, err := r.upstream.WriteIndex(repo+":v1", idx)
			Expect(err).NotTo(HaveOccurred())
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")}
			size := totalSize(distinctBlobs(req.Source))
			Expect(size).To(BeNumerically("<", repeated), "the platforms share their base layer, which counts once")

			Expect(copier.Copy(withLogger(ctx), req)).To(Equal(digest))
			Expect(seen.take()).To(HaveExactElements(
				registry.Observation{Source: req.Source, Target: req.Target, State: registry.Copying, Digest: digest},
				registry.Observation{Source: req.Source, Target: req.Target, State: registry.Copied, Digest: digest, Details: &registry.Details{
					MediaType: types.OCIImageIndex,
					// The attestation manifests (unknown/unknown) run nowhere.
					Platforms: []string{"linux/amd64", "linux/arm64"},
					Size:      size,
				}},
			))

			Expect(copier.Copy(withLogger(ctx), req)).To(Equal(digest))
			Expect(seen.take()).To(HaveExactElements(
				registry.Observation{Source: req.Source, Target: req.Target, State: registry.Present, Digest: digest},
			))
		})

		It("reports the copy of a single image without platforms", func(ctx SpecContext) {
			repo := uniqueRepo("observed-image")
			digest := r.pushImage(repo + ":v1")
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")}

			Expect(copier.Copy(withLogger(ctx), req)).To(Equal(digest))
			obs := seen.take()
			Expect(obs).To(HaveLen(2))
			Expect(obs[1].State).To(Equal(registry.Copied))
			Expect(obs[1].Details).To(Equal(&registry.Details{MediaType: types.DockerManifestSchema2, Size: totalSize(blobsOf(req.Source))}))
		})

		It("reports a failed copy with its error, classed and explained as the Copy returns it", func(ctx SpecContext) {
			repo := uniqueRepo("observed-missing")
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")}

			_, err := copier.Copy(withLogger(ctx), req)
			Expect(err).To(HaveOccurred())
			Expect(registry.ClassOf(err)).To(Equal(registry.Permanent), "class of %q", err)
			obs := seen.take()
			Expect(obs).To(HaveExactElements(SatisfyAll(
				HaveField("Source", req.Source), HaveField("Target", req.Target), HaveField("State", registry.Failed),
				HaveField("Digest", v1.Hash{}), HaveField("Details", BeNil()),
				HaveField("Err", MatchError(err.Error())),
			)))
			// The inventory words its condition from the observed error alone.
			Expect(registry.ClassOf(obs[0].Err)).To(Equal(registry.Permanent), "class of the observed %q", obs[0].Err)
			Expect(registry.Explain(obs[0].Err)).To(And(Equal(registry.Explain(err)), Not(BeEmpty())))
		})

		It("reports a kept copy Present at its own digest, whatever the source's tag points to now", func(ctx SpecContext) {
			repo := uniqueRepo("observed-kept")
			old := r.pushIndex(repo + ":v1")
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1"), KeepExisting: true}
			Expect(copier.Copy(withLogger(ctx), req)).To(Equal(old))
			Expect(seen.take()).To(HaveLen(2))
			Expect(r.pushImage(repo + ":v1")).NotTo(Equal(old))

			Expect(copier.Copy(withLogger(ctx), req)).To(Equal(old))
			Expect(seen.take()).To(HaveExactElements(
				registry.Observation{Source: req.Source, Target: req.Target, State: registry.Present, Digest: old},
			))
		})

		It("tells nothing of lookups, found or not", func(ctx SpecContext) {
			repo := uniqueRepo("observed-lookup")
			digest := r.pushImage(repo + ":v1")
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")}

			_, err := copier.Lookup(ctx, req)
			Expect(err).To(MatchError(registry.ErrNotBackedUp))
			Expect(seen.take()).To(BeEmpty())

			Expect(copier.Copy(withLogger(ctx), req)).To(Equal(digest))
			Expect(seen.take()).To(HaveLen(2))
			Expect(copier.Lookup(ctx, req)).To(Equal(digest))
			req.KeepExisting = true
			Expect(copier.Lookup(ctx, req)).To(Equal(digest))
			Expect(seen.take()).To(BeEmpty())
		})
	})
})

var _ = Describe("checking the tag of a copy", func() {
	onEveryRegistryKind(func(r *registries) {
		var copier *registry.Copier

		BeforeEach(func() {
			copier = registry.New(registry.Options{})
		})

		It("returns the digest the tag resolves to, with one request to the backup registry and none to the source", func(ctx SpecContext) {
			repo := uniqueRepo("check")
			digest := r.pushIndex(repo + ":v1")
			target := r.dst("backup/" + repo + ":v1")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: target})).To(Equal(digest))
			r.resetRequests()

			Expect(copier.Check(ctx, target)).To(Equal(digest))
			Expect(r.backup.Requests()).To(HaveExactElements(SatisfyAll(
				HaveField("Method", http.MethodHead), HaveField("Path", "/v2/backup/"+repo+"/manifests/v1"))))
			Expect(r.upstream.Requests()).To(BeEmpty())
		})

		It("wraps ErrNotBackedUp for a tag the backup registry does not have", func(ctx SpecContext) {
			repo := uniqueRepo("check-missing")
			r.pushImage(repo + ":v1")
			target := r.dst("backup/" + repo + ":v1")

			_, err := copier.Check(ctx, target)
			Expect(err).To(MatchError(registry.ErrNotBackedUp))
			Expect(err.Error()).To(ContainSubstring(target.String()))

			By("finding a copy that was made and lost since as missing too")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: target})).Error().NotTo(HaveOccurred())
			Expect(r.backup.LoseRepository("backup/"+repo, "v1")).To(Succeed())
			_, err = copier.Check(ctx, target)
			Expect(err).To(MatchError(registry.ErrNotBackedUp))
		})

		It("fails transiently, and not as a lost copy, while the backup registry is down", func(ctx SpecContext) {
			repo := uniqueRepo("check-down")
			digest := r.pushImage(repo + ":v1")
			target := r.dst("backup/" + repo + ":v1")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: target})).To(Equal(digest))
			r.backup.SetDown(true)
			DeferCleanup(r.backup.SetDown, false)

			_, err := copier.Check(ctx, target)
			Expect(err).To(HaveOccurred())
			Expect(errors.Is(err, registry.ErrNotBackedUp)).To(BeFalse(), "not knowing is not a lost copy: %v", err)
			var classed *registry.Error
			Expect(errors.As(err, &classed)).To(BeTrue(), "%T is classed", err)
			Expect(classed.Class).To(Equal(registry.Transient))
			Expect(err.Error()).To(ContainSubstring("503"))

			r.backup.SetDown(false)
			Expect(copier.Check(ctx, target)).To(Equal(digest))
		})
	})
})

var _ = Describe("verifying a copy", func() {
	onEveryRegistryKind(func(r *registries) {
		var (
			seen   *observations
			copier *registry.Copier
		)

		BeforeEach(func() {
			seen = &observations{}
			copier = registry.New(registry.Options{OnBackup: seen.record})
		})

		// copyBuildx copies a buildx-style index into backup/<repo>:v1 and returns the target, its digest and the
		// details the copy was reported with.
		copyBuildx := func(ctx SpecContext, repo string) (name.Tag, v1.Hash, registry.Details) {
			GinkgoHelper()
			idx, _ := buildxIndex()
			digest, err := r.upstream.WriteIndex(repo+":v1", idx)
			Expect(err).NotTo(HaveOccurred())
			target := r.dst("backup/" + repo + ":v1")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: target})).To(Equal(digest))
			obs := seen.take()
			Expect(obs).To(ContainElement(HaveField("State", registry.Copied)))
			return target, digest, *obs[len(obs)-1].Details
		}

		It("returns the details of the copy as it was made, asking only the backup registry", func(ctx SpecContext) {
			target, digest, details := copyBuildx(ctx, uniqueRepo("verify"))
			var blobs []string
			for d := range distinctBlobs(target) {
				blobs = append(blobs, "/v2/"+target.RepositoryStr()+"/blobs/"+d.String())
			}
			fresh := registry.New(registry.Options{})
			r.resetRequests()

			Expect(fresh.Verify(ctx, target, digest)).To(Equal(details))
			Expect(r.upstream.Requests()).To(BeEmpty())
			var checked []string
			for _, req := range r.backup.Requests() {
				Expect(req.Method).To(BeElementOf(http.MethodGet, http.MethodHead), "verifying writes nothing: %v", req)
				if req.Method == http.MethodHead {
					checked = append(checked, req.Path)
				}
			}
			Expect(checked).To(ContainElements(blobs), "every blob is checked")
			Expect(checked).To(HaveEach(BeElementOf(blobs)), "and nothing else is")
		})

		It("finds a copy that lost a blob incomplete, though its tag stands", func(ctx SpecContext) {
			repo := uniqueRepo("verify-blob")
			target, digest, _ := copyBuildx(ctx, repo)
			layer := firstLayer(target)
			Expect(r.backup.DeleteBlob("backup/"+repo, layer)).To(Succeed())

			_, err := copier.Verify(ctx, target, digest)
			Expect(err).To(MatchError(registry.ErrNotBackedUp))
			Expect(err.Error()).To(ContainSubstring(layer.String()))
			Expect(copier.Check(ctx, target)).To(Equal(digest), "a HEAD of the tag cannot tell")
		})

		It("finds a copy that lost one of its images incomplete", func(ctx SpecContext) {
			repo := uniqueRepo("verify-child")
			target, digest, _ := copyBuildx(ctx, repo)
			child := childrenOf(target)[1]
			Expect(r.backup.Delete("backup/" + repo + "@" + child.String())).To(Succeed())

			_, err := copier.Verify(ctx, target, digest)
			Expect(err).To(MatchError(registry.ErrNotBackedUp))
			Expect(err.Error()).To(ContainSubstring(child.String()))
		})

		It("fails transiently, and not as a lost copy, while the backup registry is down", func(ctx SpecContext) {
			target, digest, _ := copyBuildx(ctx, uniqueRepo("verify-down"))
			r.backup.SetDown(true)
			DeferCleanup(r.backup.SetDown, false)

			_, err := copier.Verify(ctx, target, digest)
			Expect(err).To(HaveOccurred())
			Expect(errors.Is(err, registry.ErrNotBackedUp)).To(BeFalse(), "not knowing is not a lost copy: %v", err)
			Expect(registry.ClassOf(err)).To(Equal(registry.Transient))
		})
	})
})

var _ = Describe("restoring a copy at its recorded digest", func() {
	onEveryRegistryKind(func(r *registries) {
		var (
			seen   *observations
			copier *registry.Copier
		)

		BeforeEach(func() {
			seen = &observations{}
			copier = registry.New(registry.Options{OnBackup: seen.record})
		})

		// copied copies <repo>:v1, an index the spec pushed, into backup/<repo>:v1 and returns the request and the
		// copy's details.
		copied := func(ctx SpecContext, repo string, digest v1.Hash) (registry.RestoreRequest, registry.Details) {
			GinkgoHelper()
			req := registry.RestoreRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1"), Digest: digest}
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: req.Source, Target: req.Target})).To(Equal(digest))
			obs := seen.take()
			Expect(obs).To(ContainElement(HaveField("State", registry.Copied)))
			return req, *obs[len(obs)-1].Details
		}

		It("copies the recorded digest, not what the source's tag points to now, and the copy verifies", func(ctx SpecContext) {
			repo := uniqueRepo("restore")
			old := r.pushIndex(repo + ":v1")
			req, details := copied(ctx, repo, old)
			Expect(r.backup.LoseRepository("backup/"+repo, "v1")).To(Succeed())
			Expect(r.pushIndex(repo + ":v1")).NotTo(Equal(old))
			r.resetRequests()

			done, err := copier.Restore(withLogger(ctx), req)
			Expect(err).NotTo(HaveOccurred())
			Expect(done.Details).To(Equal(details))
			Expect(done.Bytes).To(Equal(r.backup.UploadedBytes()))
			if r.linksBlobs {
				Expect(done.Bytes).To(Equal(totalSize(distinctBlobs(r.src(repo+"@"+old.String())))), "the repository lost every blob")
			}
			Expect(requestsWith(r.upstream, http.MethodGet, "/manifests/v1")+requestsWith(r.upstream, http.MethodHead, "/manifests/v1")).
				To(BeZero(), "the source's tag is never asked: %v", r.upstream.Requests())
			Expect(headDigest(req.Target)).To(Equal(old))
			Expect(copier.Verify(ctx, req.Target, old)).To(Equal(details))
			Expect(seen.take()).To(BeEmpty(), "the inventory learns of a restore from its result")
		})

		It("repairs a copy whose manifests survived but lost a blob, uploading only that blob", func(ctx SpecContext) {
			repo := uniqueRepo("restore-blob")
			digest := r.pushIndex(repo + ":v1")
			req, details := copied(ctx, repo, digest)
			layer := firstLayer(req.Target)
			Expect(r.backup.DeleteBlob("backup/"+repo, layer)).To(Succeed())

			By("finding that a Copy would not repair it: the tag is at the source's digest")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: req.Source, Target: req.Target})).To(Equal(digest))
			Expect(seen.take()).To(HaveExactElements(HaveField("State", registry.Present)))
			Expect(copier.Verify(ctx, req.Target, digest)).Error().To(MatchError(registry.ErrNotBackedUp))

			r.resetRequests()
			done, err := copier.Restore(withLogger(ctx), req)
			Expect(err).NotTo(HaveOccurred())
			Expect(done.Details).To(Equal(details))
			Expect(done.Bytes).To(Equal(distinctBlobs(req.Target)[layer]), "only the lost blob is uploaded")
			Expect(r.backup.UploadedBytes()).To(Equal(done.Bytes))
			Expect(copier.Verify(ctx, req.Target, digest)).To(Equal(details))
		})

		It("repairs an index whose own manifest was lost while its images survived without a blob", func(ctx SpecContext) {
			repo := uniqueRepo("restore-orphans")
			digest := r.pushIndex(repo + ":v1")
			req, details := copied(ctx, repo, digest)
			layer := firstLayer(req.Target)
			Expect(r.backup.DeleteBlob("backup/"+repo, layer)).To(Succeed())
			Expect(r.backup.Delete("backup/" + repo + ":v1")).To(Succeed())
			Expect(r.backup.Delete("backup/" + repo + "@" + digest.String())).To(Succeed())
			_, err := copier.Check(ctx, req.Target)
			Expect(err).To(MatchError(registry.ErrNotBackedUp))

			done, err := copier.Restore(withLogger(ctx), req)
			Expect(err).NotTo(HaveOccurred())
			Expect(done.Details).To(Equal(details))
			Expect(headDigest(req.Target)).To(Equal(digest))
			Expect(copier.Verify(ctx, req.Target, digest)).To(Equal(details))
		})

		It("uploads nothing for a copy that is intact", func(ctx SpecContext) {
			repo := uniqueRepo("restore-intact")
			digest := r.pushIndex(repo + ":v1")
			req, details := copied(ctx, repo, digest)
			r.resetRequests()

			done, err := copier.Restore(withLogger(ctx), req)
			Expect(err).NotTo(HaveOccurred())
			Expect(done).To(Equal(registry.Restored{Details: details}))
			Expect(uploadsStarted(r.backup)).To(BeZero())
			Expect(r.upstream.BlobRequests()).To(BeZero())
			Expect(headDigest(req.Target)).To(Equal(digest))
		})

		It("reports a source that no longer has the digest as ErrSourceLost, permanently, and writes nothing", func(ctx SpecContext) {
			repo := uniqueRepo("restore-gone")
			digest := r.pushIndex(repo + ":v1")
			req, _ := copied(ctx, repo, digest)
			Expect(r.backup.LoseRepository("backup/"+repo, "v1")).To(Succeed())
			Expect(r.upstream.Delete(repo + "@" + digest.String())).To(Succeed())
			r.resetRequests()

			_, err := copier.Restore(withLogger(ctx), req)
			Expect(err).To(MatchError(registry.ErrSourceLost))
			Expect(registry.ClassOf(err)).To(Equal(registry.Permanent), "class of %q", err)
			Expect(err.Error()).To(ContainSubstring(digest.String()))
			Expect(uploadsStarted(r.backup)).To(BeZero())
			Expect(requestsWith(r.backup, http.MethodPut, "/manifests/")).To(BeZero())
		})

		It("does not take a source registry that is down for one that lost the image", func(ctx SpecContext) {
			repo := uniqueRepo("restore-down")
			digest := r.pushIndex(repo + ":v1")
			req, _ := copied(ctx, repo, digest)
			Expect(r.backup.LoseRepository("backup/"+repo, "v1")).To(Succeed())
			r.upstream.SetDown(true)
			DeferCleanup(r.upstream.SetDown, false)

			_, err := copier.Restore(withLogger(ctx), req)
			Expect(err).To(HaveOccurred())
			Expect(errors.Is(err, registry.ErrSourceLost)).To(BeFalse(), "%v", err)
			Expect(registry.ClassOf(err)).To(Equal(registry.Transient), "class of %q", err)
		})
	})
})

var _ = Describe("deleting a copy", func() {
	onEveryRegistryKind(func(r *registries) {
		var copier *registry.Copier

		BeforeEach(func() {
			copier = registry.New(registry.Options{})
		})

		It("deletes the tag, then the manifest by digest", func(ctx SpecContext) {
			repo := uniqueRepo("delete")
			digest := r.pushIndex(repo + ":v1")
			target := r.dst("backup/" + repo + ":v1")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: target})).To(Equal(digest))
			byDigest := target.Context().Digest(digest.String())

			Expect(copier.Delete(ctx, target)).To(Succeed())
			Expect(tagExists(target)).To(BeFalse())
			Expect(headDigest(byDigest)).To(Equal(digest), "only the tag was deleted")
			_, err := copier.Check(ctx, target)
			Expect(err).To(MatchError(registry.ErrNotBackedUp))

			Expect(copier.Delete(ctx, byDigest)).To(Succeed())
			Expect(manifestStatus(byDigest)).To(Equal(http.StatusNotFound))
			Expect(headDigest(r.src(repo+":v1"))).To(Equal(digest), "the source is untouched")
		})

		It("removes the tags of a manifest deleted by digest where the registry does, as the distribution registry does", func(ctx SpecContext) {
			repo := uniqueRepo("delete-digest")
			digest := r.pushImage(repo + ":v1")
			target := r.dst("backup/" + repo + ":v1")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: target})).To(Equal(digest))
			byDigest := target.Context().Digest(digest.String())

			Expect(copier.Delete(ctx, byDigest)).To(Succeed())
			Expect(manifestStatus(byDigest)).To(Equal(http.StatusNotFound))
			if r.untagsDeleted {
				Expect(manifestStatus(target)).To(Equal(http.StatusNotFound))
			} else {
				// go-containerregistry's in-memory registry keeps the tag, which goes on serving the manifest: the
				// inventory deletes the tag first for such registries.
				Expect(headDigest(target)).To(Equal(digest))
			}
		})

		It("is not an error for a reference that does not exist", func(ctx SpecContext) {
			repo := uniqueRepo("delete-missing")
			digest := r.pushImage(repo + ":v1")
			target := r.dst("backup/" + repo + ":v1")
			Expect(copier.Delete(ctx, target)).To(Succeed(), "a repository that does not exist")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: target})).To(Equal(digest))

			Expect(copier.Delete(ctx, target.Context().Tag("v2"))).To(Succeed(), "a tag that does not exist")
			Expect(copier.Delete(ctx, target.Context().Digest(r.pushImage(uniqueRepo("elsewhere")+":v1").String()))).To(Succeed(),
				"a manifest that does not exist")
			Expect(headDigest(target)).To(Equal(digest))
		})
	})

	It("is refused, permanently, by a distribution registry started without deletes, and the copy stays", func(ctx SpecContext) {
		binary, err := testbin.RegistryBinary()
		Expect(err).NotTo(HaveOccurred())
		backup := startDistribution(binary, registrytest.WithoutDeletes())
		upstream := registrytest.NewInProcess()
		DeferCleanup(upstream.Close)
		digest, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		copier := registry.New(registry.Options{})
		target := mustTag(backup.Host + "/backup/app:v1")
		Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(upstream.Host + "/app:v1"), Target: target})).To(Equal(digest))

		for _, ref := range []name.Reference{target, target.Context().Digest(digest.String())} {
			err := copier.Delete(ctx, ref)
			Expect(err).To(MatchError(registry.ErrDeleteRefused), "deleting %s", ref)
			Expect(registry.ClassOf(err)).To(Equal(registry.Permanent), "class of %q", err)
			Expect(err.Error()).To(ContainSubstring(ref.String()))
		}
		Expect(headDigest(target)).To(Equal(digest))
		Expect(copier.Verify(ctx, target, digest)).Error().NotTo(HaveOccurred())
	})
})

// observations records what a Copier tells Options.OnBackup, which it calls from the goroutines of its
// transfers.
type observations struct {
	mu  sync.Mutex
	all []registry.Observation
}

func (o *observations) record(obs registry.Observation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all = append(o.all, obs)
}

// take returns the observations recorded since the last take.
func (o *observations) take() []registry.Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	all := o.all
	o.all = nil
	return all
}

// buildxIndex is a two-platform index as docker buildx pushes one: both images are built on the same base
// layer, and each has a build attestation beside it (a manifest of platform unknown/unknown). It also returns
// the bytes of its blobs counted once for every image that has them.
func buildxIndex() (v1.ImageIndex, int64) {
	GinkgoHelper()
	base, err := random.Layer(testLayerSize, types.DockerLayer)
	Expect(err).NotTo(HaveOccurred())
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var repeated int64
	for _, p := range registrytest.Platforms {
		img, err := random.Image(testLayerSize, 1)
		Expect(err).NotTo(HaveOccurred())
		img, err = mutate.AppendLayers(img, base)
		Expect(err).NotTo(HaveOccurred())
		cf, err := img.ConfigFile()
		Expect(err).NotTo(HaveOccurred())
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = p.OS, p.Architecture
		img, err = mutate.ConfigFile(img, cf)
		Expect(err).NotTo(HaveOccurred())
		digest, err := img.Digest()
		Expect(err).NotTo(HaveOccurred())
		attestation, err := random.Image(256, 1)
		Expect(err).NotTo(HaveOccurred())
		for _, i := range []v1.Image{img, attestation} {
			m, err := i.Manifest()
			Expect(err).NotTo(HaveOccurred())
			repeated += m.Config.Size
			for _, l := range m.Layers {
				repeated += l.Size
			}
		}
		idx = mutate.AppendManifests(idx,
			mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}},
			mutate.IndexAddendum{Add: attestation, Descriptor: v1.Descriptor{
				Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
				Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": digest.String()},
			}})
	}
	return idx, repeated
}

// firstLayer returns the first layer of the first image of the index at ref.
func firstLayer(ref name.Reference) v1.Hash {
	GinkgoHelper()
	idx, err := remote.Index(ref)
	Expect(err).NotTo(HaveOccurred())
	img, err := idx.Image(childrenOf(ref)[0])
	Expect(err).NotTo(HaveOccurred())
	m, err := img.Manifest()
	Expect(err).NotTo(HaveOccurred())
	return m.Layers[0].Digest
}

// manifestStatus returns the status of a HEAD of ref's manifest, read directly (not through the copier).
func manifestStatus(ref name.Reference) int {
	GinkgoHelper()
	_, err := remote.Head(ref)
	if err == nil {
		return http.StatusOK
	}
	var terr *transport.Error
	Expect(errors.As(err, &terr)).To(BeTrue(), "asking for %s: %v", ref, err)
	return terr.StatusCode
}
