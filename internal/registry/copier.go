package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/singleflight"
)

const userAgent = "image-clone-controller"

// Copier copies whole images (every platform of an index) into the backup registry, byte for byte, so that
// digests are unchanged. Concurrent requests for the same copy share one transfer, and verified copies are
// remembered so that later requests cost no blob traffic.
type Copier struct {
	opts     Options
	insecure map[string]bool
	flights  singleflight.Group
	slots    chan struct{}
	verified *boundedSet
	// unverified holds copies whose verification failed: their manifest may be in the backup without the
	// content it references, so only a new push and verification can prove them complete.
	unverified *boundedSet
}

// New returns a Copier configured by opts.
func New(opts Options) *Copier {
	opts.defaults()
	insecure := make(map[string]bool, len(opts.Insecure))
	for _, host := range opts.Insecure {
		insecure[host] = true
	}
	return &Copier{
		opts:       opts,
		insecure:   insecure,
		slots:      make(chan struct{}, opts.MaxConcurrentCopies),
		verified:   newBoundedSet(opts.VerifiedCacheSize),
		unverified: newBoundedSet(opts.VerifiedCacheSize),
	}
}

// Copy makes dst hold the image src refers to and returns its digest once the copy is verified complete:
// the manifest at dst has the source's digest and every manifest and blob it references is present.
// A digest-pinned src is copied exactly; a tagged src is resolved to its current digest first.
func (c *Copier) Copy(ctx context.Context, src name.Reference, dst name.Tag) (v1.Hash, error) {
	pull, err := c.pullReference(src)
	if err != nil {
		return v1.Hash{}, err
	}
	dst, err = c.withScheme(dst)
	if err != nil {
		return v1.Hash{}, err
	}

	digest, err := c.resolve(ctx, pull)
	if err != nil {
		copiesTotal.WithLabelValues(resultFailed).Inc()
		return v1.Hash{}, fmt.Errorf("resolving %s: %w", describePull(src, pull), err)
	}

	key := dst.String() + "@" + digest.String()
	if c.verified.Has(key) {
		copiesTotal.WithLabelValues(resultCached).Inc()
		return digest, nil
	}

	// The copy runs detached from the caller so that a cancelled reconcile does not abort a transfer that
	// other reconciles are waiting for; CopyTimeout bounds it instead.
	flight := c.flights.DoChan(key, func() (any, error) {
		return nil, c.copyAndVerify(context.WithoutCancel(ctx), src, pull.Context().Digest(digest.String()), dst)
	})
	select {
	case <-ctx.Done():
		return v1.Hash{}, ctx.Err()
	case res := <-flight:
		if res.Err != nil {
			return v1.Hash{}, res.Err
		}
	}
	c.verified.Add(key)
	return digest, nil
}

// resolve returns the digest a reference points to; digest references need no request.
func (c *Copier) resolve(ctx context.Context, ref name.Reference) (v1.Hash, error) {
	if d, ok := ref.(name.Digest); ok {
		return v1.NewHash(d.DigestStr())
	}
	desc, err := remote.Head(ref, c.remoteOptions(ctx, c.opts.Transport)...)
	if err == nil {
		return desc.Digest, nil
	}
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return v1.Hash{}, err // unreachable: GET would only wait through the same retries again
	}
	// HEAD responses carry no error body; GET tells the user what is actually wrong.
	full, getErr := remote.Get(ref, c.remoteOptions(ctx, c.opts.Transport)...)
	if getErr != nil {
		return v1.Hash{}, getErr
	}
	return full.Digest, nil
}

func (c *Copier) copyAndVerify(ctx context.Context, orig name.Reference, src name.Digest, dst name.Tag) (err error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.CopyTimeout)
	defer cancel()
	log := logr.FromContextOrDiscard(ctx).WithValues("image", orig.String(), "backup", dst.String(), "digest", src.DigestStr())
	want, _ := v1.NewHash(src.DigestStr())
	key := dst.String() + "@" + want.String()

	if !c.unverified.Has(key) {
		present, err := c.holds(ctx, dst, want)
		if err != nil {
			copiesTotal.WithLabelValues(resultFailed).Inc()
			return fmt.Errorf("checking backup %s: %w", dst, err)
		}
		if present {
			log.V(1).Info("Backup already holds the image")
			copiesTotal.WithLabelValues(resultPresent).Inc()
			return nil
		}
	}

	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	case <-ctx.Done():
		return ctx.Err()
	}

	start := time.Now()
	defer func() {
		if err != nil {
			copiesTotal.WithLabelValues(resultFailed).Inc()
		}
	}()

	desc, err := remote.Get(src, c.remoteOptions(ctx, c.opts.Transport)...)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", describePull(orig, src), err)
	}
	if !desc.MediaType.IsIndex() && !desc.MediaType.IsImage() {
		return Permanent(fmt.Errorf("%s has media type %q, which is neither an image nor an image index", orig, desc.MediaType))
	}

	counter := &uploadCounter{next: c.opts.Transport}
	log.V(1).Info("Copying image")
	if err := remote.Push(dst, desc, c.remoteOptions(ctx, counter)...); err != nil {
		return fmt.Errorf("copying %s to %s: %w", orig, dst, err)
	}
	copiedBytes.Add(float64(counter.bytes.Load()))

	if err := c.verify(ctx, dst, want); err != nil {
		c.unverified.Add(key)
		if isNotFound(err) {
			// Content missing from the backup right after the copy is uploaded again by the next attempt: unlike a
			// missing source, this 404 is not permanent, so the error does not wrap it.
			return fmt.Errorf("verifying copy of %s at %s: %v", orig, dst, err) //nolint:errorlint // see above
		}
		return fmt.Errorf("verifying copy of %s at %s: %w", orig, dst, err)
	}
	c.unverified.Remove(key)
	copyDuration.Observe(time.Since(start).Seconds())
	copiesTotal.WithLabelValues(resultCopied).Inc()
	log.Info("Copied image", "bytes", counter.bytes.Load(), "duration", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// holds reports whether dst already resolves to digest. A registry only accepts a manifest once everything it
// references is present, so a matching digest means the copy is complete and no blob needs to be touched.
func (c *Copier) holds(ctx context.Context, dst name.Tag, digest v1.Hash) (bool, error) {
	desc, err := remote.Head(dst, c.remoteOptions(ctx, c.opts.Transport)...)
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return desc.Digest == digest, nil
}

func (c *Copier) remoteOptions(ctx context.Context, tr http.RoundTripper) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(c.opts.Keychain),
		remote.WithTransport(tr),
		remote.WithJobs(c.opts.LayerJobs),
		remote.WithUserAgent(userAgent),
	}
}

// pullReference returns where src is actually pulled from: its mirror if one is configured for its registry.
func (c *Copier) pullReference(src name.Reference) (name.Reference, error) {
	mirror, ok := c.opts.Mirrors[src.Context().RegistryStr()]
	if !ok {
		return c.parse(src.String())
	}
	repo := src.Context().RepositoryStr()
	if mirror.Prefix != "" {
		repo = mirror.Prefix + "/" + repo
	}
	sep := ":"
	if _, ok := src.(name.Digest); ok {
		sep = "@"
	}
	return c.parse(mirror.Registry + "/" + repo + sep + src.Identifier())
}

func (c *Copier) withScheme(dst name.Tag) (name.Tag, error) {
	if !c.insecure[dst.RegistryStr()] {
		return dst, nil
	}
	return name.NewTag(dst.String(), name.Insecure)
}

func (c *Copier) parse(ref string) (name.Reference, error) {
	var opts []name.Option
	host, _, _ := strings.Cut(ref, "/")
	if c.insecure[host] {
		opts = append(opts, name.Insecure)
	}
	return name.ParseReference(ref, opts...)
}

// describePull names an image and, when it is served by a mirror, the mirror too, so errors point at the
// registry that actually failed.
func describePull(src, pull name.Reference) string {
	if src.Context().RegistryStr() == pull.Context().RegistryStr() {
		return src.String()
	}
	return fmt.Sprintf("%s (via mirror %s)", src, pull.Context())
}

// uploadCounter counts the blob bytes sent to the backup registry, as the registry sees them.
type uploadCounter struct {
	next  http.RoundTripper
	bytes atomic.Int64
}

func (u *uploadCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && (req.Method == http.MethodPut || req.Method == http.MethodPatch) &&
		strings.Contains(req.URL.Path, "/blobs/uploads/") {
		req = req.Clone(req.Context())
		req.Body = &countingReader{ReadCloser: req.Body, n: &u.bytes}
	}
	return u.next.RoundTrip(req)
}

// boundedSet remembers up to max keys, forgetting the oldest first.
type boundedSet struct {
	mu   sync.Mutex
	keys map[string]struct{}
	ring []string // insertion order; next is the slot of the oldest key once the ring is full
	next int
}

func newBoundedSet(maxKeys int) *boundedSet {
	return &boundedSet{keys: map[string]struct{}{}, ring: make([]string, 0, maxKeys)}
}

// Has reports whether key was added and not yet forgotten.
func (s *boundedSet) Has(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.keys[key]
	return ok
}

// Add remembers key.
func (s *boundedSet) Add(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[key]; ok {
		return
	}
	s.keys[key] = struct{}{}
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, key)
		return
	}
	delete(s.keys, s.ring[s.next])
	s.ring[s.next] = key
	s.next = (s.next + 1) % len(s.ring)
}

// Remove forgets key. Its slot in the ring is freed only when the ring comes around to it, so a key removed and
// added again may be forgotten early; that is fine for a cache.
func (s *boundedSet) Remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, key)
}

// Reset forgets every key.
func (s *boundedSet) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = map[string]struct{}{}
	s.ring = s.ring[:0]
	s.next = 0
}

// ForgetVerified drops every remembered copy, so the next request checks the backup registry again as a
// freshly started process would.
func (c *Copier) ForgetVerified() { c.verified.Reset() }
