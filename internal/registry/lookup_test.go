package registry_test

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

var _ = Describe("looking a copy up without copying", func() {
	onEveryRegistryKind(func(r *registries) {
		var copier *registry.Copier

		BeforeEach(func() {
			copier = registry.New(registry.Options{TagCacheTTL: time.Minute})
		})

		It("finds nothing for an image that was never copied, and writes nothing", func(ctx SpecContext) {
			repo := uniqueRepo("lookup-missing")
			r.pushIndex(repo + ":v1")
			before := snapshotCopies()
			r.resetRequests()

			_, err := copier.Lookup(ctx, registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
			Expect(err).To(MatchError(registry.ErrNotBackedUp))
			// A 404 to an anonymous HEAD is asked again with credentials, once per registry (see session.head).
			Expect(r.backup.Requests()).To(HaveEach(Or(
				And(HaveField("Method", http.MethodHead), HaveField("Path", HaveSuffix("/manifests/v1"))),
				And(HaveField("Method", http.MethodGet), HaveField("Path", "/v2/")))),
				"manifest HEADs at the backup and no write: %v", r.backup.Requests())
			Expect(r.upstream.BlobRequests()).To(BeZero())
			Expect(before.added("copied")+before.added("present")+before.added("failed")).To(BeZero(), "a lookup is not a copy")
		})

		It("finds a copy at the digest the source has now, with one request per registry (none at the source from the tag cache)", func(ctx SpecContext) {
			repo := uniqueRepo("lookup-present")
			want := r.pushIndex(repo + ":v1")
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")}
			_, err := copier.Copy(ctx, req)
			Expect(err).NotTo(HaveOccurred())
			r.resetRequests()

			got, err := copier.Lookup(ctx, req)
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))
			Expect(r.backup.Requests()).To(HaveExactElements(HaveField("Method", http.MethodHead)))
			Expect(r.upstream.Requests()).To(BeEmpty(), "the tag cache answers for the source")

			By("asking the source when a new Copier has no tag cache entry")
			fresh := registry.New(registry.Options{TagCacheTTL: time.Minute})
			r.resetRequests()
			got, err = fresh.Lookup(ctx, req)
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))
			Expect(r.upstream.Requests()).To(HaveExactElements(HaveField("Method", http.MethodHead)))
		})

		It("finds no copy once the upstream tag moved, unless the caller keeps the existing copy", func(ctx SpecContext) {
			repo := uniqueRepo("lookup-moved")
			old := r.pushIndex(repo + ":v1")
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")}
			_, err := copier.Copy(ctx, req)
			Expect(err).NotTo(HaveOccurred())
			r.pushImage(repo + ":v1")
			fresh := registry.New(registry.Options{})

			_, err = fresh.Lookup(ctx, req)
			Expect(err).To(MatchError(registry.ErrNotBackedUp))
			Expect(headDigest(req.Target)).To(Equal(old), "nothing was copied")

			r.resetRequests()
			req.KeepExisting = true
			got, err := fresh.Lookup(ctx, req)
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(old))
			Expect(r.upstream.Requests()).To(BeEmpty(), "a kept copy needs no source request")
		})

		It("finds no copy that the backup lost, and does not restore it", func(ctx SpecContext) {
			repo := uniqueRepo("lookup-lost")
			r.pushImage(repo + ":v1")
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1"), KeepExisting: true}
			_, err := copier.Copy(ctx, req)
			Expect(err).NotTo(HaveOccurred())
			Expect(r.backup.LoseRepository("backup/"+repo, "v1")).To(Succeed())
			r.resetRequests()

			_, err = copier.Lookup(ctx, req)
			Expect(err).To(MatchError(registry.ErrNotBackedUp))
			Expect(r.upstream.BlobRequests()).To(BeZero())
		})

		It("gives up when its context ends, without waiting for a slow backup registry", func(ctx SpecContext) {
			repo := uniqueRepo("lookup-slow")
			r.pushImage(repo + ":v1")
			gate := registrytest.NewGate(func(req *http.Request) bool { return req.Method == http.MethodHead })
			r.backup.Use(gate.Middleware)
			DeferCleanup(gate.Open)

			budget, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			_, err := copier.Lookup(budget, registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})
			Expect(err).To(HaveOccurred())
			Expect(errors.Is(err, registry.ErrNotBackedUp)).To(BeFalse(), "not knowing is not a missing copy: %v", err)
			Expect(registry.ClassOf(err)).To(Equal(registry.Transient))
		})
	})

	It("proves that the caller's credentials can read the source", func(ctx SpecContext) {
		upstream, backup := registrytest.NewInProcess(), registrytest.NewInProcess()
		DeferCleanup(upstream.Close)
		DeferCleanup(backup.Close)
		private := requireBasicAuth(upstream.Host, "tenant", "tenant-s3cr3t")
		_, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		tenant := registry.Credentials{Keychain: pullSecretKeychain(private, "tenant", "tenant-s3cr3t"), ID: "tenant"}
		stranger := registry.Credentials{Keychain: authn.NewMultiKeychain()}
		copier := registry.New(registry.Options{TagCacheTTL: time.Minute})
		req := registry.CopyRequest{Source: mustRef(private + "/app:v1"), Target: mustTag(backup.Host + "/app:v1"), Credentials: registry.Static(&tenant)}
		want, err := copier.Copy(ctx, req)
		Expect(err).NotTo(HaveOccurred())

		got, err := copier.Lookup(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(want))

		req.Credentials = registry.Static(&stranger)
		_, err = copier.Lookup(ctx, req)
		Expect(registry.ClassOf(err)).To(Equal(registry.AccessDenied), "%v", err)
		req.KeepExisting, req.ProveAccess = true, true
		_, err = copier.Lookup(ctx, req)
		Expect(registry.ClassOf(err)).To(Equal(registry.AccessDenied), "%v", err)
		Expect(got).NotTo(Equal(v1.Hash{}))
	})
})
