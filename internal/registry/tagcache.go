package registry

import (
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/apimachinery/pkg/util/cache"
)

// tagCache remembers for a while the digest that a source resolved to, so that the other workloads using the
// same tag within that time need no request to the source registry: the Copier still asks the backup whether
// it holds that digest, on every call. Within the TTL a tag that moved upstream is therefore not noticed, which
// matches what backups promise anyway: a tag is copied as it was when first seen.
//
// Entries are kept per set of credentials (Credentials.ID), so a caller never reuses what another caller's
// credentials were allowed to read. With credentials, digest references are remembered too, since proving
// access to them costs a request; without, they need no request to resolve and are not remembered.
type tagCache struct {
	ttl     time.Duration
	entries *cache.LRUExpireCache
}

type tagCacheKey struct{ src, auth string }

// newTagCache returns a cache of up to size entries that each live for ttl, or nil (which remembers nothing)
// if ttl is 0.
func newTagCache(ttl time.Duration, size int, clock cache.Clock) *tagCache {
	if ttl <= 0 {
		return nil
	}
	return &tagCache{ttl: ttl, entries: cache.NewLRUExpireCacheWithClock(size, clock)}
}

// key returns the cache key of src read with creds, or false if it is not worth remembering.
func (t *tagCache) key(src name.Reference, creds *Credentials) (tagCacheKey, bool) {
	if t == nil {
		return tagCacheKey{}, false
	}
	_, tagged := src.(name.Tag)
	if !tagged && creds == nil {
		return tagCacheKey{}, false
	}
	key := tagCacheKey{src: src.String()}
	if creds != nil {
		key.auth = "pull:" + creds.ID // never equal to the key of a request without credentials
	}
	return key, true
}

// get returns the digest remembered for src read with creds.
func (t *tagCache) get(src name.Reference, creds *Credentials) (v1.Hash, bool) {
	key, ok := t.key(src, creds)
	if !ok {
		return v1.Hash{}, false
	}
	digest, ok := t.entries.Get(key)
	if !ok {
		return v1.Hash{}, false
	}
	tagCacheHits.Inc()
	return digest.(v1.Hash), true
}

// add remembers that src, read with creds, resolved to digest.
func (t *tagCache) add(src name.Reference, creds *Credentials, digest v1.Hash) {
	if key, ok := t.key(src, creds); ok {
		t.entries.Add(key, digest, t.ttl)
	}
}

// reset forgets every entry.
func (t *tagCache) reset() {
	if t != nil {
		t.entries.RemoveAll(func(any) bool { return true })
	}
}
