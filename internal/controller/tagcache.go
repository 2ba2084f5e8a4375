package controller

import (
	"context"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

// tagCacheMaxEntries bounds the tag cache; when it is full, expired entries are dropped, and if that is not
// enough, all of them (it is only a cache).
const tagCacheMaxEntries = 10000

// tagCache remembers for a while the digest that a tagged image was backed up at, so that the other workloads
// using the same tag within that time are patched without any registry request: the copier itself remembers
// verified copies, but must still ask the source registry what the tag points to now. Only successful copies
// are remembered. Within the TTL a tag that moved upstream is therefore not noticed, which matches what backups
// promise anyway: a tag is copied as it was when first seen.
//
// Entries are kept per set of pull credentials (registry.SourceAuth.ID), so a workload never reuses what
// another workload's credentials were allowed to read. With such credentials digest references are
// remembered too, as the copier asks the source registry whether the credentials can read them; without,
// they go straight to the copier, which needs no request to resolve them.
type tagCache struct {
	next ImageCopier
	ttl  time.Duration
	now  func() time.Time

	mu      sync.Mutex
	entries map[tagCacheKey]tagCacheEntry
}

type tagCacheKey struct{ src, dst, auth string }

type tagCacheEntry struct {
	digest  v1.Hash
	expires time.Time
}

func newTagCache(next ImageCopier, ttl time.Duration) *tagCache {
	return &tagCache{next: next, ttl: ttl, now: time.Now, entries: map[tagCacheKey]tagCacheEntry{}}
}

// Copy returns the remembered digest of src's backup at dst, or copies it through the next copier.
func (c *tagCache) Copy(ctx context.Context, src name.Reference, dst name.Tag, opts ...registry.CopyOption) (v1.Hash, error) {
	auth, withAuth := registry.SourceAuthOf(opts)
	if _, tagged := src.(name.Tag); !tagged && !withAuth {
		return c.next.Copy(ctx, src, dst, opts...)
	}
	key := tagCacheKey{src: src.String(), dst: dst.String()}
	if withAuth {
		key.auth = "pull:" + auth.ID // never equal to the key of a copy made with the copier's own keychain
	}
	c.mu.Lock()
	entry, ok := c.entries[key]
	c.mu.Unlock()
	if ok && c.now().Before(entry.expires) {
		tagCacheHits.Inc()
		return entry.digest, nil
	}

	digest, err := c.next.Copy(ctx, src, dst, opts...)
	if err != nil {
		return digest, err
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= tagCacheMaxEntries {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= tagCacheMaxEntries {
			clear(c.entries)
		}
	}
	c.entries[key] = tagCacheEntry{digest: digest, expires: now.Add(c.ttl)}
	return digest, nil
}
