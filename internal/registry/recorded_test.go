package registry_test

import (
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

var _ = Describe("restoring a kept copy at its recorded digest", func() {
	onEveryRegistryKind(func(r *registries) {
		It("copies a lost kept copy at the digest recorded for it, not at what the source tag points to now", func(ctx SpecContext) {
			repo := uniqueRepo("recorded")
			old := r.pushIndex(repo + ":v1")
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1"), KeepExisting: true}
			copier := registry.New(registry.Options{RecordedDigest: func(t name.Tag) (v1.Hash, bool) {
				return old, t.String() == req.Target.String()
			}})
			_, err := copier.Copy(ctx, req)
			Expect(err).NotTo(HaveOccurred())

			r.pushIndex(repo + ":v1") // the tag moves upstream
			Expect(r.backup.LoseRepository("backup/"+repo, "v1")).To(Succeed())

			got, err := copier.Copy(ctx, req)
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(old))
			desc, err := remote.Head(r.dst("backup/" + repo + ":v1"))
			Expect(err).NotTo(HaveOccurred())
			Expect(desc.Digest).To(Equal(old))
		})

		It("copies what the tag points to now when the source no longer has the recorded digest", func(ctx SpecContext) {
			repo := uniqueRepo("recorded-gone")
			r.pushIndex(repo + ":v1")
			req := registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1"), KeepExisting: true}
			gone := v1.Hash{Algorithm: "sha256", Hex: "0000000000000000000000000000000000000000000000000000000000000000"}
			copier := registry.New(registry.Options{RecordedDigest: func(name.Tag) (v1.Hash, bool) { return gone, true }})
			now := r.pushIndex(repo + ":v1")

			got, err := copier.Copy(ctx, req)
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(now))
		})
	})
})
