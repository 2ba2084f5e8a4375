package registry_test

import (
	"net/http"
	"strings"

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
)

// pushSignatureTag pushes a small image under cosign's tag for subject (sha256-<hex><suffix>) in repo.
func pushSignatureTag(repo name.Repository, subject v1.Hash, suffix string) v1.Hash {
	GinkgoHelper()
	img, err := random.Image(256, 1)
	Expect(err).NotTo(HaveOccurred())
	Expect(remote.Write(repo.Tag(subject.Algorithm+"-"+subject.Hex+suffix), img)).To(Succeed())
	digest, err := img.Digest()
	Expect(err).NotTo(HaveOccurred())
	return digest
}

// pushReferrer pushes an OCI artifact whose subject is subject (of media type mt) into repo, by digest, as
// oras attach does; go-containerregistry keeps the fallback tag index where the registry has no referrers API.
func pushReferrer(repo name.Repository, subject v1.Hash, mt types.MediaType, artifactType string) v1.Hash {
	GinkgoHelper()
	img, err := random.Image(256, 1)
	Expect(err).NotTo(HaveOccurred())
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.MediaType(artifactType))
	sub, err := remote.Head(repo.Digest(subject.String()))
	Expect(err).NotTo(HaveOccurred())
	withSubject := mutate.Subject(img, v1.Descriptor{MediaType: mt, Digest: subject, Size: sub.Size}).(v1.Image)
	digest, err := withSubject.Digest()
	Expect(err).NotTo(HaveOccurred())
	Expect(remote.Write(repo.Digest(digest.String()), withSubject)).To(Succeed())
	return digest
}

// referrersAt lists the referrers of subject in repo, through the API or the fallback tag.
func referrersAt(repo name.Repository, subject v1.Hash) []v1.Hash {
	GinkgoHelper()
	idx, err := remote.Referrers(repo.Digest(subject.String()))
	Expect(err).NotTo(HaveOccurred())
	m, err := idx.IndexManifest()
	Expect(err).NotTo(HaveOccurred())
	var digests []v1.Hash
	for _, d := range m.Manifests {
		digests = append(digests, d.Digest)
	}
	return digests
}

var _ = Describe("copying signatures, attestations and referrers along", func() {
	onEveryRegistryKind(func(r *registries) {
		var copier *registry.Copier
		BeforeEach(func() { copier = registry.New(registry.Options{Artifacts: true}) })

		It("brings cosign tags and referrers of the index and of a child platform manifest", func(ctx SpecContext) {
			repo := uniqueRepo("signed")
			digest := r.pushIndex(repo + ":v1")
			src, dst := mustRef(r.upstream.Host+"/"+repo).Context(), mustTag(r.backup.Host+"/backup/"+repo+":v1").Context()
			idx, err := remote.Index(src.Digest(digest.String()))
			Expect(err).NotTo(HaveOccurred())
			children, err := idx.IndexManifest()
			Expect(err).NotTo(HaveOccurred())
			child := children.Manifests[0]

			sig := pushSignatureTag(src, digest, ".sig")
			att := pushSignatureTag(src, digest, ".att")
			childSig := pushSignatureTag(src, child.Digest, ".sig")
			sbom := pushReferrer(src, digest, types.OCIImageIndex, "application/spdx+json")
			sbomSig := pushReferrer(src, sbom, types.OCIManifestSchema1, "application/vnd.dev.cosign.artifact.sig.v1+json")
			childProvenance := pushReferrer(src, child.Digest, child.MediaType, "application/vnd.in-toto+json")

			got, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(digest))

			for tag, want := range map[string]v1.Hash{
				"sha256-" + digest.Hex + ".sig":       sig,
				"sha256-" + digest.Hex + ".att":       att,
				"sha256-" + child.Digest.Hex + ".sig": childSig,
			} {
				Expect(headDigest(dst.Tag(tag))).To(Equal(want), tag)
			}
			Expect(referrersAt(dst, digest)).To(ConsistOf(sbom))
			Expect(referrersAt(dst, sbom)).To(ConsistOf(sbomSig), "a signature on the SBOM follows it")
			Expect(referrersAt(dst, child.Digest)).To(ConsistOf(childProvenance))
			for _, d := range []v1.Hash{sbom, sbomSig, childProvenance} {
				Expect(headDigest(dst.Digest(d.String()))).To(Equal(d))
			}
		})

		It("costs at most two requests per manifest, and no blob request, for an image without artifacts", func(ctx SpecContext) {
			plain := registry.New(registry.Options{})
			measure := func(c *registry.Copier, repo string) (requests, blobs int) {
				r.pushIndex(repo + ":v1")
				r.resetRequests()
				_, err := c.Copy(ctx, registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
				Expect(err).NotTo(HaveOccurred())
				all := r.upstream.SettledRequests()
				for _, req := range all {
					if req.IsBlob() {
						blobs++
					}
				}
				return len(all), blobs
			}
			without, blobsWithout := measure(plain, uniqueRepo("plain"))
			with, blobsWith := measure(copier, uniqueRepo("plain"))
			const manifests = 3 // the index and its two platforms
			Expect(with-without).To(BeNumerically("<=", 2*manifests), "source requests: %d with artifacts, %d without", with, without)
			Expect(blobsWith).To(Equal(blobsWithout))

			By("asking nothing more on the no-op path")
			repo := uniqueRepo("noop")
			r.pushIndex(repo + ":v1")
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")}
			_, err := copier.Copy(ctx, req)
			Expect(err).NotTo(HaveOccurred())
			r.resetRequests()
			_, err = copier.Copy(ctx, req)
			Expect(err).NotTo(HaveOccurred())
			Expect(r.backup.Requests()).To(HaveExactElements(HaveField("Method", http.MethodHead)))
			Expect(r.upstream.Requests()).To(HaveExactElements(HaveField("Method", http.MethodHead)))
		})

		It("follows referrers of referrers three levels deep and copies at most 64 artifacts", func(ctx SpecContext) {
			repo := uniqueRepo("chain")
			digest := r.pushImage(repo + ":v1")
			src, dst := mustRef(r.upstream.Host+"/"+repo).Context(), mustTag(r.backup.Host+"/backup/"+repo+":v1").Context()
			chain := []v1.Hash{digest}
			for range 4 {
				chain = append(chain, pushReferrer(src, chain[len(chain)-1], types.OCIManifestSchema1, "application/example"))
			}
			_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
			Expect(err).NotTo(HaveOccurred())
			for level := 1; level <= 3; level++ {
				Expect(referrersAt(dst, chain[level-1])).To(ConsistOf(chain[level]), "level %d", level)
			}
			Expect(referrersAt(dst, chain[3])).To(BeEmpty(), "the fourth level is not followed")

			By("stopping at 64 artifacts of one image")
			many := uniqueRepo("many")
			subject := r.pushImage(many + ":v1")
			manySrc, manyDst := mustRef(r.upstream.Host+"/"+many).Context(), mustTag(r.backup.Host+"/backup/"+many+":v1").Context()
			for range 70 {
				pushReferrer(manySrc, subject, types.OCIManifestSchema1, "application/example")
			}
			_, err = copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(many + ":v1"), Target: r.dst("backup/" + many + ":v1")})
			Expect(err).NotTo(HaveOccurred())
			Expect(referrersAt(manyDst, subject)).To(HaveLen(64))
		})

		It("copies a buildx-style index with its attestation manifests (platform unknown/unknown)", func(ctx SpecContext) {
			repo := uniqueRepo("buildx")
			app, err := random.Image(512, 1)
			Expect(err).NotTo(HaveOccurred())
			attestation, err := random.Image(256, 1)
			Expect(err).NotTo(HaveOccurred())
			appDigest, err := app.Digest()
			Expect(err).NotTo(HaveOccurred())
			idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
				mutate.IndexAddendum{Add: app, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
				mutate.IndexAddendum{Add: attestation, Descriptor: v1.Descriptor{
					Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
					Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": appDigest.String()},
				}})
			digest, err := r.upstream.WriteIndex(repo+":v1", idx)
			Expect(err).NotTo(HaveOccurred())

			_, err = copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
			Expect(err).NotTo(HaveOccurred())
			copied, err := remote.Index(r.dst("backup/" + repo + ":v1"))
			Expect(err).NotTo(HaveOccurred())
			Expect(copied.Digest()).To(Equal(digest))
			m, err := copied.IndexManifest()
			Expect(err).NotTo(HaveOccurred())
			Expect(m.Manifests).To(ContainElement(HaveField("Platform.OS", "unknown")))
			for _, child := range m.Manifests {
				img, err := remote.Image(r.dst("backup/" + repo + ":v1").Context().Digest(child.Digest.String()))
				Expect(err).NotTo(HaveOccurred())
				Expect(validate.Image(img)).To(Succeed(), "%s (%s) and its blobs are in the copy", child.Digest, child.Platform)
			}
		})

		It("brings a signature made after the copy when the copy is made again", func(ctx SpecContext) {
			repo := uniqueRepo("later")
			digest := r.pushImage(repo + ":v1")
			src, dst := mustRef(r.upstream.Host+"/"+repo).Context(), mustTag(r.backup.Host+"/backup/"+repo+":v1").Context()
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1"), KeepExisting: true}
			_, err := copier.Copy(withLogger(ctx), req)
			Expect(err).NotTo(HaveOccurred())
			sig := pushSignatureTag(src, digest, ".sig")
			_, err = remote.Head(dst.Tag("sha256-" + digest.Hex + ".sig"))
			Expect(err).To(HaveOccurred(), "not there yet: the copy was made before the signature")

			Expect(r.backup.LoseRepository("backup/"+repo, "v1")).To(Succeed())
			_, err = copier.Copy(withLogger(ctx), req)
			Expect(err).NotTo(HaveOccurred())
			Expect(headDigest(dst.Tag("sha256-" + digest.Hex + ".sig"))).To(Equal(sig))
		})

		Context("when the source's referrers cannot be read", func() {
			BeforeEach(func() {
				r.upstream.Use(func(next http.Handler) http.Handler {
					return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
						if strings.Contains(req.URL.Path, "/referrers/") {
							http.Error(w, "injected", http.StatusInternalServerError)
							return
						}
						next.ServeHTTP(w, req)
					})
				})
				DeferCleanup(r.upstream.ResetMiddleware)
			})

			It("does not tag the copy, so that no workload runs it without its signatures", func(ctx SpecContext) {
				repo := uniqueRepo("unreadable")
				r.pushImage(repo + ":v1")
				_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
				Expect(err).To(MatchError(ContainSubstring("signatures and attestations")))
				Expect(registry.ClassOf(err)).To(Equal(registry.Transient))
				_, err = remote.Head(r.dst("backup/" + repo + ":v1"))
				Expect(err).To(HaveOccurred(), "the backup tag is written only with the artifacts")
			})

			It("tags the copy and reports it incomplete when artifacts are optional", func(ctx SpecContext) {
				optional := registry.New(registry.Options{Artifacts: true, ArtifactsOptional: true})
				repo := uniqueRepo("optional")
				want := r.pushImage(repo + ":v1")
				got, err := optional.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
				Expect(registry.ClassOf(err)).To(Equal(registry.Incomplete), "%v", err)
				Expect(got).To(Equal(want))
				Expect(headDigest(r.dst("backup/" + repo + ":v1"))).To(Equal(want))
			})
		})
	})
})

var _ = Describe("a source whose referrers API answers garbage", func() {
	onEveryRegistryKind(func(r *registries) {
		It("fails the copy with an error that says so, and tags nothing", func(ctx SpecContext) {
			r.upstream.Use(func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
					if strings.Contains(req.URL.Path, "/referrers/") {
						w.Header().Set("Content-Type", string(types.OCIImageIndex))
						_, _ = w.Write([]byte("<html>not an index</html>"))
						return
					}
					next.ServeHTTP(w, req)
				})
			})
			DeferCleanup(r.upstream.ResetMiddleware)
			repo := uniqueRepo("garbage")
			r.pushImage(repo + ":v1")
			_, err := registry.New(registry.Options{Artifacts: true}).Copy(withLogger(ctx),
				registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
			Expect(err).To(MatchError(ContainSubstring("are not an image index")))
			_, err = remote.Head(r.dst("backup/" + repo + ":v1"))
			Expect(err).To(HaveOccurred())
		})
	})
})
