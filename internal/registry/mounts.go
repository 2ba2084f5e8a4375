package registry

import (
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// blobHolders remembers, for blobs this process has verified in a backup registry, the repository that last
// received each. A registry stores a blob once but serves it only in the repositories it was uploaded or
// mounted to; copying an image whose blobs already sit in another repository of the backup registry (a shared
// base image, the same application under another name) then mounts them (POST ?mount=&from=) at the cost of
// one request instead of uploading them again. A mount the registry refuses (the blob was deleted there since)
// falls back to an upload.
//
// The index is shared by every copy of the process and holds up to a fixed number of digests, forgetting the
// oldest first. Entries of one repository share its name's memory, so an entry costs about 200 bytes.
type blobHolders struct {
	mu    sync.Mutex
	repos map[v1.Hash]name.Repository
	ring  []v1.Hash // insertion order; next is the slot of the oldest digest once the ring is full
	next  int
}

func newBlobHolders(maxDigests int) *blobHolders {
	return &blobHolders{repos: map[v1.Hash]name.Repository{}, ring: make([]v1.Hash, 0, maxDigests)}
}

// add records that repo holds digests.
func (h *blobHolders) add(repo name.Repository, digests ...v1.Hash) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range digests {
		if _, ok := h.repos[d]; ok || cap(h.ring) == 0 {
			if ok {
				h.repos[d] = repo
			}
			continue
		}
		h.repos[d] = repo
		if len(h.ring) < cap(h.ring) {
			h.ring = append(h.ring, d)
			continue
		}
		delete(h.repos, h.ring[h.next])
		h.ring[h.next] = d
		h.next = (h.next + 1) % len(h.ring)
	}
}

// holder returns a repository of dst's registry, other than dst, that holds digest.
func (h *blobHolders) holder(dst name.Repository, digest v1.Hash) (name.Repository, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.repos[digest]
	if !ok || r.RegistryStr() != dst.RegistryStr() || r.RepositoryStr() == dst.RepositoryStr() {
		return name.Repository{}, false
	}
	return r, true
}

// reset forgets every digest.
func (h *blobHolders) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.repos = map[v1.Hash]name.Repository{}
	h.ring = h.ring[:0]
	h.next = 0
}
