package controller

import (
	"context"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tagCacheMaxEntries bounds the tag cache; when it is full, expired entries are dropped, and if that is not
// enough, all of them (it is only a cache).
const tagCacheMaxEntries = 10000

// tagCache remembers for a while the digest that a tagged image was backed up at, so that the other workloads
// using the same tag within that time are patched without any registry request: the copier itself remembers
// verified copies, but must still ask the source registry what the tag points to now. Only successful copies
// are remembered. Within the TTL a tag that moved upstream is therefore not noticed, which matches what backups
// promise anyway: a tag is copied as it was when first seen. Digest references go straight to the copier,
// which needs no request to resolve them.
type tagCache struct {
	next ImageCopier
	ttl  time.Duration
	now  func() time.Time

	mu      sync.Mutex
	entries map[tagCacheKey]tagCacheEntry
}

type tagCacheKey struct{ src, dst string }

type tagCacheEntry struct {
	digest  v1.Hash
	expires time.Time
}

func newTagCache(next ImageCopier, ttl time.Duration) *tagCache {
	return &tagCache{next: next, ttl: ttl, now: time.Now, entries: map[tagCacheKey]tagCacheEntry{}}
}

// Copy returns the remembered digest of src's backup at dst, or copies it through the next copier.
func (c *tagCache) Copy(ctx context.Context, src name.Reference, dst name.Tag) (v1.Hash, error) {
	if _, ok := src.(name.Tag); !ok {
		return c.next.Copy(ctx, src, dst)
	}
	key := tagCacheKey{src: src.String(), dst: dst.String()}
	c.mu.Lock()
	entry, ok := c.entries[key]
	c.mu.Unlock()
	if ok && c.now().Before(entry.expires) {
		tagCacheHits.Inc()
		return entry.digest, nil
	}

	digest, err := c.next.Copy(ctx, src, dst)
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
