package registry

import (
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/utils/lru"
)

// blobHolders remembers, for blobs this process has verified in a backup registry, the repository that last
// received each. A registry stores a blob once but serves it only in the repositories it was uploaded or
// mounted to; copying an image whose blobs already sit in another repository of the backup registry (a shared
// base image, the same application under another name) then mounts them (POST ?mount=&from=) at the cost of
// one request instead of uploading them again. A mount the registry refuses (the blob was deleted there since)
// falls back to an upload.
//
// The index is shared by every copy of the process and holds up to a fixed number of digests, forgetting the
// least recently used first. Entries of one repository share its name's memory, so an entry costs about 200
// bytes.
type blobHolders struct{ repos *lru.Cache }

func newBlobHolders(maxDigests int) *blobHolders { return &blobHolders{repos: lru.New(maxDigests)} }

// add records that repo holds digests.
func (h *blobHolders) add(repo name.Repository, digests ...v1.Hash) {
	for _, d := range digests {
		h.repos.Add(d, repo)
	}
}

// holder returns a repository of dst's registry, other than dst, that holds digest.
func (h *blobHolders) holder(dst name.Repository, digest v1.Hash) (name.Repository, bool) {
	v, ok := h.repos.Get(digest)
	if !ok {
		return name.Repository{}, false
	}
	r := v.(name.Repository)
	if r.RegistryStr() != dst.RegistryStr() || r.RepositoryStr() == dst.RepositoryStr() {
		return name.Repository{}, false
	}
	return r, true
}

// reset forgets every digest.
func (h *blobHolders) reset() { h.repos.Clear() }
