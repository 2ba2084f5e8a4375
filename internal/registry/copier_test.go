package registry_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

var _ = Describe("copying an image", func() {
	onEveryRegistryKind(func(r *registries) {
		var copier *registry.Copier

		BeforeEach(func() {
			copier = registry.New(registry.Options{})
		})

		It("copies every platform of an index with an identical digest", func(ctx SpecContext) {
			repo := uniqueRepo("multiarch")
			want := r.pushIndex(repo + ":v1")
			before := snapshotCopies()

			got, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))
			Expect(before.added("copied")).To(Equal(1.0))

			idx, err := remote.Index(r.dst("backup/" + repo + ":v1"))
			Expect(err).NotTo(HaveOccurred())
			Expect(idx.Digest()).To(Equal(want))
			Expect(validate.Index(idx)).To(Succeed(), "every child manifest and blob is fetchable with its digest")

			copied, err := idx.IndexManifest()
			Expect(err).NotTo(HaveOccurred())
			var platforms []string
			for _, child := range copied.Manifests {
				Expect(child.Platform).NotTo(BeNil())
				platforms = append(platforms, child.Platform.String())
			}
			Expect(platforms).To(ConsistOf("linux/amd64", "linux/arm64"))

			source, err := remote.Index(r.src(repo + ":v1"))
			Expect(err).NotTo(HaveOccurred())
			original, err := source.IndexManifest()
			Expect(err).NotTo(HaveOccurred())
			Expect(copied.Manifests).To(Equal(original.Manifests))
			Expect(blobsOf(r.dst("backup/" + repo + ":v1"))).To(Equal(blobsOf(r.src(repo + ":v1"))))
		})

		It("copies a single-platform image", func(ctx SpecContext) {
			repo := uniqueRepo("single")
			want := r.pushImage(repo + ":v1")

			got, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))

			img, err := remote.Image(r.dst("backup/" + repo + ":v1"))
			Expect(err).NotTo(HaveOccurred())
			Expect(img.Digest()).To(Equal(want))
			Expect(img.MediaType()).To(Equal(types.DockerManifestSchema2))
			Expect(validate.Image(img)).To(Succeed())
			Expect(blobsOf(r.dst("backup/" + repo + ":v1"))).To(Equal(blobsOf(r.src(repo + ":v1"))))
		})

		It("copies exactly the pinned manifest of a digest reference, even after the tag moved", func(ctx SpecContext) {
			repo := uniqueRepo("pinned")
			pinned := r.pushIndex(repo + ":v1")
			moved := r.pushIndex(repo + ":v1")
			Expect(moved).NotTo(Equal(pinned))
			Expect(headDigest(r.src(repo + ":v1"))).To(Equal(moved))

			got, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + "@" + pinned.String()), Target: r.dst("backup/" + repo + ":pinned")})
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(pinned))
			Expect(headDigest(r.dst("backup/" + repo + ":pinned"))).To(Equal(pinned))
			idx, err := remote.Index(r.dst("backup/" + repo + ":pinned"))
			Expect(err).NotTo(HaveOccurred())
			Expect(validate.Index(idx)).To(Succeed())
		})

		It("follows a moved source tag and moves the backup tag with it", func(ctx SpecContext) {
			repo := uniqueRepo("moving")
			first := r.pushIndex(repo + ":latest")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":latest"), Target: r.dst("backup/" + repo + ":latest")})).To(Equal(first))

			second := r.pushIndex(repo + ":latest")
			before := snapshotCopies()
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":latest"), Target: r.dst("backup/" + repo + ":latest")})).To(Equal(second))
			Expect(before.added("copied")).To(Equal(1.0))
			Expect(headDigest(r.dst("backup/" + repo + ":latest"))).To(Equal(second))
		})

		Context("when the backup registry already holds the digest", func() {
			DescribeTable("moves no blob and reports the copy as present",
				func(ctx SpecContext, again func(*registry.Copier) *registry.Copier) {
					repo := uniqueRepo("present")
					want := r.pushIndex(repo + ":v1")
					Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))

					second := again(copier)
					r.resetRequests()
					before := snapshotCopies()
					got, err := second.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
					Expect(err).NotTo(HaveOccurred())
					Expect(got).To(Equal(want))

					Expect(r.upstream.BlobRequests()).To(BeZero(), "blob requests to the source: %v", r.upstream.Requests())
					Expect(r.backup.BlobRequests()).To(BeZero(), "blob requests to the backup: %v", r.backup.Requests())
					Expect(requestsWith(r.backup, http.MethodPut, "/manifests/")).To(BeZero(), "manifests written to the backup")
					Expect(before.added("present")).To(Equal(1.0))
					Expect(before.added("copied")).To(BeZero())
				},
				Entry("with a freshly started copier", func(*registry.Copier) *registry.Copier {
					return registry.New(registry.Options{})
				}),
				Entry("with the same copier after Forget", func(c *registry.Copier) *registry.Copier {
					c.Forget()
					return c
				}),
			)
		})

		It("asks the backup registry again on every copy, with one manifest HEAD and no blob request", func(ctx SpecContext) {
			repo := uniqueRepo("again")
			want := r.pushIndex(repo + ":v1")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))

			r.resetRequests()
			before := snapshotCopies()
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
			Expect(r.backup.Requests()).To(HaveExactElements(
				HaveField("Method", http.MethodHead)), "one manifest HEAD at the backup: %v", r.backup.Requests())
			Expect(r.backup.Requests()[0].Path).To(HaveSuffix("/manifests/v1"))
			Expect(r.upstream.BlobRequests()).To(BeZero())
			Expect(requestsWith(r.upstream, http.MethodHead, "/manifests/")).To(Equal(1), "the source tag is resolved again")
			Expect(before.added("present")).To(Equal(1.0))
			Expect(before.added("copied")).To(BeZero())

			By("copying a digest-pinned source: the source needs no request, the backup still gets its HEAD")
			pinned := r.src(repo + "@" + want.String())
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: pinned, Target: r.dst("backup/" + repo + ":pinned")})).To(Equal(want))
			r.resetRequests()
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: pinned, Target: r.dst("backup/" + repo + ":pinned")})).To(Equal(want))
			Expect(r.upstream.Requests()).To(BeEmpty())
			Expect(r.backup.Requests()).To(HaveExactElements(HaveField("Method", http.MethodHead)))
		})

		DescribeTable("copies again, before reporting success, when the backup lost a copy it verified",
			func(ctx SpecContext, opts registry.Options) {
				copier = registry.New(opts)
				repo := uniqueRepo("lost")
				want := r.pushIndex(repo + ":v1")
				dst := r.dst("backup/" + repo + ":v1")
				Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})).To(Equal(want))

				Expect(r.backup.LoseRepository("backup/"+repo, "v1")).To(Succeed())
				_, err := remote.Head(dst)
				Expect(err).To(HaveOccurred(), "the backup no longer has the copy")

				before := snapshotCopies()
				Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})).To(Equal(want))
				Expect(before.added("copied")).To(Equal(1.0), "copied again, not answered from memory")
				Expect(before.added("present")).To(BeZero())
				idx, err := remote.Index(dst)
				Expect(err).NotTo(HaveOccurred())
				Expect(idx.Digest()).To(Equal(want))
				Expect(validate.Index(idx)).To(Succeed(), "every manifest and blob is back")
			},
			Entry("without a tag cache", registry.Options{}),
			Entry("with a tag cache that still remembers the source tag", registry.Options{TagCacheTTL: time.Hour}),
		)

		It("keeps an existing copy whatever its source says now, and restores it only when the backup lost it", func(ctx SpecContext) {
			repo := uniqueRepo("keep")
			first := r.pushImage(repo + ":v1")
			dst := r.dst("backup/" + repo + ":v1")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})).To(Equal(first))
			moved := r.pushImage(repo + ":v1")

			var credentialReads atomic.Int32
			creds := func(context.Context) (*registry.Credentials, error) {
				credentialReads.Add(1)
				return &registry.Credentials{Keychain: authn.NewMultiKeychain()}, nil
			}
			keep := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst, Credentials: creds, KeepExisting: true}
			r.resetRequests()
			Expect(copier.Copy(withLogger(ctx), keep)).To(Equal(first), "the copy workloads run from does not move with its tag")
			Expect(r.upstream.Requests()).To(BeEmpty())
			Expect(r.backup.Requests()).To(HaveExactElements(HaveField("Method", http.MethodHead)))
			Expect(credentialReads.Load()).To(BeZero(), "no credentials are read while the copy exists")

			By("failing, without reading credentials or asking the source, while the backup cannot be asked")
			r.backup.SetDown(true)
			r.upstream.ResetRequests()
			_, err := copier.Copy(withLogger(ctx), keep)
			Expect(err).To(HaveOccurred())
			Expect(registry.ClassOf(err)).To(Equal(registry.Transient))
			Expect(r.upstream.Requests()).To(BeEmpty())
			Expect(credentialReads.Load()).To(BeZero())
			r.backup.SetDown(false)

			By("proving the credentials' access to the source when asked to, and keeping the copy")
			prove := keep
			prove.ProveAccess = true
			Expect(copier.Copy(withLogger(ctx), prove)).To(Equal(first))
			Expect(credentialReads.Load()).To(BeEquivalentTo(1))
			Expect(requestsWith(r.upstream, http.MethodHead, "/manifests/v1")).To(Equal(1))
			credentialReads.Store(0)

			Expect(r.backup.LoseRepository("backup/"+repo, "v1")).To(Succeed())
			Expect(copier.Copy(withLogger(ctx), keep)).To(Equal(moved), "restored from what the source holds now")
			Expect(credentialReads.Load()).To(BeEquivalentTo(1))
			img, err := remote.Image(dst)
			Expect(err).NotTo(HaveOccurred())
			Expect(validate.Image(img)).To(Succeed())
		})

		It("reports a backup that loses its upload sessions as transient, not as an image that does not exist", func(ctx SpecContext) {
			repo := uniqueRepo("lost-upload")
			r.pushImage(repo + ":v1")
			faults := &registrytest.Faults{}
			r.backup.Use(faults.Middleware)
			faults.Set(registrytest.Fault{Name: "upload unknown", Match: func(req *http.Request) bool {
				return req.Method != http.MethodPost && registrytest.BlobUploads(req)
			}, Status: http.StatusNotFound})

			_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
			Expect(err).To(HaveOccurred())
			Expect(registry.ClassOf(err)).To(Equal(registry.Transient), "class of %q", err)
			Expect(registry.Explain(err)).NotTo(ContainSubstring("does not exist"))
		})

		Context("with a tag cache", func() {
			var clock *clocktesting.FakeClock

			BeforeEach(func() {
				clock = clocktesting.NewFakeClock(time.Now())
				copier = registry.New(registry.Options{TagCacheTTL: time.Minute, Clock: clock})
			})

			It("skips the source request within its TTL, never the backup's", func(ctx SpecContext) {
				repo := uniqueRepo("tagcache")
				want := r.pushImage(repo + ":v1")
				req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")}
				Expect(copier.Copy(withLogger(ctx), req)).To(Equal(want))

				r.resetRequests()
				Expect(copier.Copy(withLogger(ctx), req)).To(Equal(want))
				Expect(r.upstream.Requests()).To(BeEmpty(), "the tag is answered from the cache")
				Expect(r.backup.Requests()).To(HaveExactElements(HaveField("Method", http.MethodHead)))

				By("asking the source again once the TTL is over")
				moved := r.pushImage(repo + ":v1")
				clock.Step(time.Minute + time.Second)
				Expect(copier.Copy(withLogger(ctx), req)).To(Equal(moved))
			})

			It("keeps entries apart per set of credentials", func(ctx SpecContext) {
				repo := uniqueRepo("tagcache-creds")
				want := r.pushImage(repo + ":v1")
				dst := r.dst("backup/" + repo + ":v1")
				anonymous := &registry.Credentials{Keychain: authn.NewMultiKeychain(), ID: ""}
				other := &registry.Credentials{Keychain: authn.NewMultiKeychain(), ID: "other"}
				Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst, Credentials: registry.Static(anonymous)})).To(Equal(want))

				for _, creds := range []registry.CredentialSource{nil, registry.Static(other)} {
					r.resetRequests()
					Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst, Credentials: creds})).To(Equal(want))
					Expect(requestsWith(r.upstream, http.MethodHead, "/manifests/")).To(Equal(1), "credentials %v prove their own access", creds)
				}

				By("remembering digest references read with credentials, which prove access with a request")
				pinned := registry.CopyRequest{Source: r.src(repo + "@" + want.String()), Target: dst, Credentials: registry.Static(other)}
				Expect(copier.Copy(withLogger(ctx), pinned)).To(Equal(want))
				r.resetRequests()
				Expect(copier.Copy(withLogger(ctx), pinned)).To(Equal(want))
				Expect(r.upstream.Requests()).To(BeEmpty())
			})
		})

		It("uploads every blob once when the same copy is requested concurrently", func(ctx SpecContext) {
			const callers = 5
			repo := uniqueRepo("concurrent")
			want := r.pushIndex(repo + ":v1")
			blobs := blobsOf(r.src(repo + ":v1"))
			Expect(blobs).To(HaveLen(6), "two images of a config and two layers each")
			r.resetRequests()
			before := snapshotCopies()

			results := make([]v1.Hash, callers)
			errs := make([]error, callers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range callers {
				wg.Add(1)
				go func() {
					defer GinkgoRecover()
					defer wg.Done()
					<-start
					results[i], errs[i] = copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
				}()
			}
			close(start)
			wg.Wait()

			for i := range callers {
				Expect(errs[i]).NotTo(HaveOccurred())
				Expect(results[i]).To(Equal(want))
			}
			Expect(uploadsStarted(r.backup)).To(Equal(len(blobs)), "one upload per blob")
			Expect(r.backup.UploadedBytes()).To(Equal(totalSize(blobs)))
			Expect(before.added("copied")).To(Equal(1.0), "one transfer")
			Expect(before.added("joined")+before.added("present")).To(Equal(float64(callers-1)), "every request counted once")
			Expect(before.added("failed")).To(BeZero())
		})

		It("finishes a transfer that a late caller joined, whatever the deadline of the caller that started it", func(ctx SpecContext) {
			repo := uniqueRepo("joined")
			want := r.pushImage(repo + ":v1")
			gate := registrytest.NewGate(registrytest.BlobGets)
			r.upstream.Use(gate.Middleware)
			DeferCleanup(gate.Open)
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")}

			leaderCtx, cancel := context.WithTimeout(withLogger(ctx), 2*time.Second)
			defer cancel()
			leader := make(chan error, 1)
			go func() { _, err := copier.Copy(leaderCtx, req); leader <- err }()
			Eventually(gate.Held()).Should(BeClosed())

			joiner := make(chan error, 1)
			go func() {
				got, err := copier.Copy(withLogger(ctx), req)
				if err == nil && got != want {
					err = fmt.Errorf("digest %s, want %s", got, want)
				}
				joiner <- err
			}()
			// At least one HEAD each; a loaded machine may see the leader's repeated once (retryTransport).
			Eventually(func() int { return requestsWith(r.upstream, http.MethodHead, "/manifests/v1") }).Should(BeNumerically(">=", 2), "the joiner resolved the tag")
			Eventually(leader).Should(Receive(HaveOccurred()), "the caller that started the transfer gave up")
			gate.Open()
			Eventually(joiner).Should(Receive(Succeed()), "the transfer went on for the caller that joined it")
		})

		It("finishes a shared transfer when the caller that started it gives up", func(ctx SpecContext) {
			repo := uniqueRepo("abandoned")
			want := r.pushIndex(repo + ":v1")
			blobs := blobsOf(r.src(repo + ":v1"))
			r.resetRequests()

			gate := registrytest.NewGate(func(req *http.Request) bool { return req.Method == http.MethodPatch })
			DeferCleanup(gate.Open)
			r.backup.Use(gate.Middleware)
			type result struct {
				digest v1.Hash
				err    error
			}
			copyInBackground := func(ctx context.Context) chan result {
				done := make(chan result, 1)
				go func() {
					defer GinkgoRecover()
					d, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
					done <- result{d, err}
				}()
				return done
			}

			first, giveUp := context.WithCancel(ctx)
			defer giveUp()
			firstDone := copyInBackground(first)
			Eventually(gate.Held()).Should(BeClosed(), "the first upload reached the backup registry")
			secondDone := copyInBackground(ctx)

			giveUp()
			var res result
			Eventually(firstDone).Should(Receive(&res))
			Expect(res.err).To(MatchError(context.Canceled))

			gate.Open()
			Eventually(secondDone).Should(Receive(&res))
			Expect(res.err).NotTo(HaveOccurred())
			Expect(res.digest).To(Equal(want))
			Expect(headDigest(r.dst("backup/" + repo + ":v1"))).To(Equal(want))
			Expect(uploadsStarted(r.backup)).To(Equal(len(blobs)), "one upload per blob")
		})

		It("counts the blob bytes it uploads", func(ctx SpecContext) {
			repo := uniqueRepo("bytes")
			want := r.pushIndex(repo + ":v1")
			size := totalSize(blobsOf(r.src(repo + ":v1")))
			Expect(size).To(BeNumerically(">", 4*testLayerSize))
			r.resetRequests()
			bytesBefore, durationsBefore := copiedBytes(), copyDurations()

			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
			Expect(copiedBytes() - bytesBefore).To(Equal(float64(size)))
			Expect(r.backup.UploadedBytes()).To(Equal(size))
			Expect(copyDurations() - durationsBefore).To(Equal(uint64(1)))

			By("counting nothing for a copy the backup already holds")
			bytesBefore = copiedBytes()
			Expect(registry.New(registry.Options{}).Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
			Expect(copiedBytes()).To(Equal(bytesBefore))
		})

		It("never reports a copy whose blobs did not reach the backup as done", func(ctx SpecContext) {
			repo := uniqueRepo("lost-blobs")
			want := r.pushIndex(repo + ":v1")
			dst := r.dst("backup/" + repo + ":v1")
			var losing atomic.Bool
			losing.Store(true)
			r.backup.Use(registrytest.SwallowUploads(func(*http.Request) bool { return losing.Load() }))
			before := snapshotCopies()

			_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(dst.String()))
			Expect(registry.ClassOf(err)).To(Equal(registry.Transient), "class of %q", err)
			Expect(registry.Explain(err)).NotTo(ContainSubstring("does not exist"), "the source image exists")
			Expect(before.added("failed")).To(Equal(1.0))
			Expect(before.added("copied")).To(BeZero())

			losing.Store(false)
			got, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})
			// The registry refused the incomplete manifests, or (the in-process registry) kept them: either way the
			// next attempt, which writes the blobs of a copy that failed verification first, copies everything.
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))
			idx, err := remote.Index(dst)
			Expect(err).NotTo(HaveOccurred())
			Expect(validate.Index(idx)).To(Succeed(), "every blob is in the backup")
			Expect(before.added("present")).To(BeZero(), "an unverified copy is never taken for present")
		})

		DescribeTable("reports a missing source as permanent, naming the image",
			func(ctx SpecContext, source func(repo string) string) {
				repo := uniqueRepo("missing")
				r.pushImage(repo + ":v1")
				src := r.src(source(repo))
				before := snapshotCopies()

				_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: src, Target: r.dst("backup/" + repo + ":v2")})
				Expect(err).To(HaveOccurred())
				Expect(err.Error()).To(ContainSubstring(src.String()))
				Expect(registry.ClassOf(err)).To(Equal(registry.Permanent), "class of %q", err)
				Expect(before.added("failed")).To(Equal(1.0))
				Expect(r.backup.Requests()).NotTo(ContainElement(HaveField("Method", http.MethodPut)), "nothing was written")
			},
			Entry("a missing tag", func(repo string) string { return repo + ":v2" }),
			Entry("a missing repository", func(repo string) string { return repo + "-gone:v1" }),
			Entry("a missing digest", func(repo string) string {
				return repo + "@sha256:0000000000000000000000000000000000000000000000000000000000000000"
			}),
		)
	})

	// The counting proxy answers for an unavailable registry, so the registry behind it does not matter here.
	Context("when a registry is unavailable", func() {
		r := &registries{}
		var copier *registry.Copier

		BeforeEach(func() {
			*r = registryKinds[0].start()
			copier = registry.New(registry.Options{})
		})

		It("reports an unavailable backup registry as retryable and copies once it is back", func(ctx SpecContext) {
			repo := uniqueRepo("backup-down")
			want := r.pushIndex(repo + ":v1")
			dst := r.dst("backup/" + repo + ":v1")
			before := snapshotCopies()

			r.backup.SetDown(true)
			_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(dst.String()))
			Expect(registry.ClassOf(err)).To(Equal(registry.Transient), "class of %q", err)
			Expect(before.added("failed")).To(Equal(1.0))

			r.backup.SetDown(false)
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})).To(Equal(want))
			Expect(headDigest(dst)).To(Equal(want))
		})

		It("reports an unavailable source registry as retryable", func(ctx SpecContext) {
			repo := uniqueRepo("source-down")
			want := r.pushImage(repo + ":v1")
			src := r.src(repo + ":v1")

			r.upstream.SetDown(true)
			_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: src, Target: r.dst("backup/" + repo + ":v1")})
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(src.String()))
			Expect(registry.ClassOf(err)).To(Equal(registry.Transient), "class of %q", err)

			r.upstream.SetDown(false)
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: src, Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
		})
	})

	It("reports an unreachable backup registry as retryable", func(ctx SpecContext) {
		upstream := registrytest.NewInProcess()
		DeferCleanup(upstream.Close)
		_, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		dst := mustTag(closedAddress() + "/backup/app:v1")

		_, err = registry.New(registry.Options{}).Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(upstream.Host + "/app:v1"), Target: dst})
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(dst.String()))
		Expect(registry.ClassOf(err)).To(Equal(registry.Transient), "class of %q", err)
	})
})

var _ = Describe("pulling through a source mirror", func() {
	onEveryRegistryKind(func(r *registries) {
		mirrored := func(flag string) *registry.Copier {
			GinkgoHelper()
			from, mirror, err := registry.ParseMirror(flag)
			Expect(err).NotTo(HaveOccurred())
			return registry.New(registry.Options{Mirrors: map[string]registry.Mirror{from: mirror}})
		}

		It("pulls a Docker Hub image from the root of the mirror", func(ctx SpecContext) {
			want := r.pushIndex("library/nginx:1.23")
			copier := registry.New(registry.Options{Mirrors: map[string]registry.Mirror{
				"index.docker.io": {Registry: r.upstream.Host},
			}})
			r.resetRequests()

			got, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef("index.docker.io/library/nginx:1.23"), Target: r.dst("index_docker_io/library/nginx:1.23")})
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))
			Expect(headDigest(r.dst("index_docker_io/library/nginx:1.23"))).To(Equal(want))
			Expect(r.upstream.Requests()).To(ContainElement(HaveField("Path", "/v2/library/nginx/manifests/1.23")))
		})

		It("applies a mirror given for docker.io to short Docker Hub names", func(ctx SpecContext) {
			repo := uniqueRepo("library/short")
			want := r.pushImage(repo + ":v1")
			copier := mirrored("docker.io=" + r.upstream.Host)

			short := mustRef(repo[len("library/"):] + ":v1")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: short, Target: r.dst("index_docker_io/" + repo + ":v1")})).To(Equal(want))
		})

		It("pulls from below the path prefix of the mirror", func(ctx SpecContext) {
			want := r.pushIndex("ghcr/a/b:v")
			copier := registry.New(registry.Options{Mirrors: map[string]registry.Mirror{
				"ghcr.io": {Registry: r.upstream.Host, Prefix: "ghcr"},
			}})
			r.resetRequests()

			got, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef("ghcr.io/a/b:v"), Target: r.dst("ghcr_io/a/b:v")})
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))
			Expect(headDigest(r.dst("ghcr_io/a/b:v"))).To(Equal(want))
			Expect(r.upstream.Requests()).To(ContainElement(HaveField("Path", "/v2/ghcr/a/b/manifests/v")))
		})

		It("pulls a digest-pinned image from the mirror by digest", func(ctx SpecContext) {
			repo := uniqueRepo("pinned")
			want := r.pushImage("cache/ghcr/team/" + repo + ":v1")
			r.pushImage("cache/ghcr/team/" + repo + ":v1") // the tag moves on; the digest must still be copied
			copier := mirrored("ghcr.io=" + r.upstream.Host + "/cache/ghcr")
			r.resetRequests()

			src := mustRef("ghcr.io/team/" + repo + "@" + want.String())
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: src, Target: r.dst("ghcr_io/team/" + repo + ":pinned")})).To(Equal(want))
			Expect(headDigest(r.dst("ghcr_io/team/" + repo + ":pinned"))).To(Equal(want))
			Expect(r.upstream.Requests()).To(ContainElement(HaveField("Path", "/v2/cache/ghcr/team/"+repo+"/manifests/"+want.String())))
		})

		DescribeTable("names the mirror when the image is missing there",
			func(ctx SpecContext, source string) {
				copier := mirrored("docker.io=" + r.upstream.Host)
				src := mustRef(source)

				_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: src, Target: r.dst("index_docker_io/library/absent:v1")})
				Expect(err).To(HaveOccurred())
				Expect(err.Error()).To(ContainSubstring(src.String()))
				Expect(err.Error()).To(ContainSubstring("via mirror " + r.upstream.Host + "/library/absent"))
				Expect(registry.ClassOf(err)).To(Equal(registry.Permanent), "class of %q", err)
			},
			Entry("by tag", "index.docker.io/library/absent:v1"),
			Entry("by digest", "index.docker.io/library/absent@sha256:0000000000000000000000000000000000000000000000000000000000000000"),
		)

		It("pulls registries without a mirror directly", func(ctx SpecContext) {
			repo := uniqueRepo("direct")
			want := r.pushImage(repo + ":v1")
			copier := mirrored("ghcr.io=" + closedAddress())

			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
		})
	})
})

var _ = Describe("copy metrics", func() {
	It("are registered with the controller-runtime metrics registry", func(ctx SpecContext) {
		upstream, backup := registrytest.NewInProcess(), registrytest.NewInProcess()
		DeferCleanup(upstream.Close)
		DeferCleanup(backup.Close)
		_, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		_, err = registry.New(registry.Options{}).Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(upstream.Host + "/app:v1"), Target: mustTag(backup.Host + "/app:v1")})
		Expect(err).NotTo(HaveOccurred())

		for _, name := range []string{"image_clone_copies_total", "image_clone_copy_duration_seconds", "image_clone_copied_bytes_total"} {
			Expect(testutil.GatherAndCount(metrics.Registry, name)).NotTo(BeZero(), name)
		}
	})
})

// closedAddress returns 127.0.0.1:PORT where nothing listens.
func closedAddress() string {
	GinkgoHelper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	addr := l.Addr().String()
	Expect(l.Close()).To(Succeed())
	return addr
}
