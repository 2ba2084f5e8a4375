package controller_test

import (
	"errors"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// pushIncompleteIndex pushes a two-platform index to the upstream registry at repoTag, as pushUpstream does,
// then deletes the manifest of one of its platforms and returns that manifest's digest. The upstream registry,
// like most, refuses an index whose children it does not have, so the child has to go afterwards, as it does
// when a registry's garbage collection or a careless cleanup removes it.
func pushIncompleteIndex(repoTag string) (missing v1.Hash) {
	GinkgoHelper()
	pushUpstream(repoTag)
	ref, err := name.ParseReference(upstream.Host + "/" + repoTag)
	Expect(err).NotTo(HaveOccurred())
	idx, err := remote.Index(ref)
	Expect(err).NotTo(HaveOccurred())
	m, err := idx.IndexManifest()
	Expect(err).NotTo(HaveOccurred())
	Expect(m.Manifests).NotTo(BeEmpty())
	missing = m.Manifests[len(m.Manifests)-1].Digest
	Expect(remote.Delete(ref.Context().Digest(missing.String()))).To(Succeed())
	return missing
}

// pushNestedIndex pushes an image wrapped in levels indexes, each listing the next, to the upstream registry at
// repoTag.
func pushNestedIndex(repoTag string, levels int) {
	GinkgoHelper()
	idx, err := registrytest.NestedIndex(levels)
	Expect(err).NotTo(HaveOccurred())
	_, err = upstream.WriteIndex(repoTag, idx)
	Expect(err).NotTo(HaveOccurred())
}

// inBackup reports whether the backup registry holds the copy of image that the controller would write.
func inBackup(image string) bool {
	GinkgoHelper()
	ref, err := name.ParseReference(backupOf(image))
	Expect(err).NotTo(HaveOccurred())
	_, err = remote.Head(ref)
	if terr := (*transport.Error)(nil); errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return false
	}
	Expect(err).NotTo(HaveOccurred())
	return true
}
