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
// remembered so that later requests cost no blob traffic. Blobs that another repository of the backup
// registry holds are mounted from there instead of uploaded (see blobHolders).
type Copier struct {
	opts     Options
	insecure map[string]bool
	// base is opts.Transport with retries and the user agent, for the transports of sessions.
	base    http.RoundTripper
	flights singleflight.Group
	slots   chan struct{}
	// verified maps backup tags to the digest this process last verified there.
	verified *boundedMap
	// unverified holds copies whose verification failed: their manifest may be in the backup without the
	// content it references, so only a new push and verification can prove them complete.
	unverified *boundedSet
	holders    *blobHolders
	// tokenRegistries holds the registries that refused an anonymous request (see session.head).
	tokenRegistries sync.Map
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
		base:       wrapTransport(opts.Transport),
		slots:      make(chan struct{}, opts.MaxConcurrentCopies),
		verified:   newBoundedMap(opts.VerifiedCacheSize),
		unverified: newBoundedSet(opts.VerifiedCacheSize),
		holders:    newBlobHolders(opts.MountCacheSize),
	}
}

// Copy makes dst hold the image src refers to and returns its digest once the copy is verified complete:
// the manifest at dst has the source's digest and every manifest and blob it references is present.
// A digest-pinned src is copied exactly; a tagged src is resolved to its current digest first.
func (c *Copier) Copy(ctx context.Context, src name.Reference, dst name.Tag, opts ...CopyOption) (v1.Hash, error) {
	call := newCopyCall(opts)
	pull, err := c.pullReference(src)
	if err != nil {
		return v1.Hash{}, err
	}
	dst, err = c.withScheme(dst)
	if err != nil {
		return v1.Hash{}, err
	}
	s := c.newSession()
	// The caller's credentials must prove access to the source on every call, even for a digest that needs no
	// resolving and an image the backup already holds. Mirrors are read with the Copier's keychain.
	checkAccess := call.sourceAuth != nil && pull.Context().RegistryStr() == src.Context().RegistryStr()
	if checkAccess {
		s.source, s.sourceKeychain = pull.Context(), call.sourceAuth.Keychain
	}

	// A tag this process has not verified at dst needs both the source's digest and the backup's: both are
	// asked at the same time. Otherwise the backup is only asked if the remembered digest is outdated.
	var backup *backupState
	_, pinned := pull.(name.Digest)
	if _, known := c.verified.Get(dst.String()); !pinned && !known {
		backup = &backupState{done: make(chan struct{})}
		go func() {
			defer close(backup.done)
			backup.digest, backup.err = c.backupDigest(ctx, s, dst)
		}()
	}
	digest, err := c.resolve(ctx, s, pull, checkAccess)
	if backup != nil {
		<-backup.done
	}
	if err != nil {
		copiesTotal.WithLabelValues(resultFailed).Inc()
		if checkAccess {
			return v1.Hash{}, fmt.Errorf("resolving %s with the workload's pull credentials: %w", describePull(src, pull), err)
		}
		return v1.Hash{}, fmt.Errorf("resolving %s: %w", describePull(src, pull), err)
	}

	key := dst.String() + "@" + digest.String()
	if d, ok := c.verified.Get(dst.String()); ok && d == digest.String() {
		copiesTotal.WithLabelValues(resultCached).Inc()
		return digest, nil
	}

	// The copy runs detached from the caller so that a cancelled reconcile does not abort a transfer that
	// other reconciles are waiting for; CopyTimeout bounds it instead.
	flight := c.flights.DoChan(key, func() (any, error) {
		return nil, c.copyAndVerify(context.WithoutCancel(ctx), s, src, pull.Context().Digest(digest.String()), dst, backup)
	})
	select {
	case <-ctx.Done():
		return v1.Hash{}, ctx.Err()
	case res := <-flight:
		if res.Err != nil {
			return v1.Hash{}, res.Err
		}
	}
	c.verified.Put(dst.String(), digest.String())
	return digest, nil
}

// backupState is what the backup tag resolved to when it was asked before the copy started: its digest, the
// zero digest if the tag does not exist, or the error of asking.
type backupState struct {
	done   chan struct{}
	digest v1.Hash
	err    error
}

// resolve returns the digest a reference points to. Digest references need no request unless checkAccess asks
// to prove that the session's credentials can read the manifest.
func (c *Copier) resolve(ctx context.Context, s *session, ref name.Reference, checkAccess bool) (v1.Hash, error) {
	if d, ok := ref.(name.Digest); ok && !checkAccess {
		return v1.NewHash(d.DigestStr())
	}
	desc, err := s.head(ctx, ref)
	if err == nil {
		return desc.Digest, nil
	}
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return v1.Hash{}, err // unreachable: GET would only wait through the same retries again
	}
	// HEAD responses carry no error body; GET tells the user what is actually wrong.
	tr, err := s.reader(ctx, ref.Context())
	if err != nil {
		return v1.Hash{}, err
	}
	full, getErr := remote.Get(ref, c.readOptions(ctx, tr)...)
	if getErr != nil {
		return v1.Hash{}, getErr
	}
	return full.Digest, nil
}

func (c *Copier) copyAndVerify(ctx context.Context, s *session, orig name.Reference, src name.Digest, dst name.Tag, backup *backupState) (err error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.CopyTimeout)
	defer cancel()
	log := logr.FromContextOrDiscard(ctx).WithValues("image", orig.String(), "backup", dst.String(), "digest", src.DigestStr())
	want, _ := v1.NewHash(src.DigestStr())
	key := dst.String() + "@" + want.String()

	if !c.unverified.Has(key) {
		present, err := c.holds(ctx, s, dst, want, backup)
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

	// Verification reads the backup with a transport of its own, whose handshake runs during the transfer.
	go func() { _, _ = s.reader(ctx, dst.Context()) }()
	image, err := c.source(ctx, s, orig, src, dst)
	if err != nil {
		return err
	}
	counter := &uploadCounter{next: c.opts.Transport}
	log.V(1).Info("Copying image")
	if err := remote.Push(dst, image, c.remoteOptions(ctx, counter)...); err != nil {
		return fmt.Errorf("copying %s to %s: %w", orig, dst, err)
	}
	copiedBytes.Add(float64(counter.bytes.Load()))

	blobs, err := c.verify(ctx, s, dst, want)
	if err != nil {
		c.unverified.Add(key)
		if isNotFound(err) {
			// Content missing from the backup right after the copy is uploaded again by the next attempt: unlike a
			// missing source, this 404 is not permanent, so the error does not wrap it.
			return fmt.Errorf("verifying copy of %s at %s: %v", orig, dst, err) //nolint:errorlint // see above
		}
		return fmt.Errorf("verifying copy of %s at %s: %w", orig, dst, err)
	}
	c.unverified.Remove(key)
	c.holders.add(dst.Context(), blobs...)
	copyDuration.Observe(time.Since(start).Seconds())
	copiesTotal.WithLabelValues(resultCopied).Inc()
	log.Info("Copied image", "bytes", counter.bytes.Load(), "duration", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// source fetches the manifests of src and returns the image or index to push: the source's manifests, with
// blobs that stream from the source registry (or mount from a backup repository that holds them). It refuses
// an image larger than MaxImageSize, and an index whose manifests cannot all be read, before any blob moves.
func (c *Copier) source(ctx context.Context, s *session, orig name.Reference, src name.Digest, dst name.Tag) (remote.Taggable, error) {
	tr, err := s.reader(ctx, src.Context())
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", describePull(orig, src), err)
	}
	desc, err := remote.Get(src, c.readOptions(ctx, tr)...)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", describePull(orig, src), err)
	}
	blobs := &blobSource{
		ctx:     ctx,
		repo:    src.Context(),
		client:  &http.Client{Transport: tr, CheckRedirect: checkRedirect},
		dst:     dst.Context(),
		holders: c.holders,
		slots:   make(chan struct{}, c.opts.LayerJobs),
	}
	var image remote.Taggable
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		image = &copyIndex{src: idx, ref: src, blobs: blobs}
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, err
		}
		image = &copyImage{Image: img, blobs: blobs}
	default:
		return nil, Permanent(fmt.Errorf("%s has media type %q, which is neither an image nor an image index", orig, desc.MediaType))
	}
	// Every manifest is read, and the size checked, before the push moves any blob.
	size, err := c.measure(ctx, image)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", describePull(orig, src), err)
	}
	if err := c.checkSize(orig, size); err != nil {
		return nil, err
	}
	return image, nil
}

// holds reports whether dst already resolves to digest. A registry only accepts a manifest once everything it
// references is present, so a matching digest means the copy is complete and no blob needs to be touched.
// backup, if set, is the answer of the backup registry asked before the copy started.
func (c *Copier) holds(ctx context.Context, s *session, dst name.Tag, digest v1.Hash, backup *backupState) (bool, error) {
	var got v1.Hash
	var err error
	if backup != nil {
		got, err = backup.digest, backup.err
	} else {
		got, err = c.backupDigest(ctx, s, dst)
	}
	if err != nil {
		return false, err
	}
	return got == digest, nil
}

// backupDigest returns the digest dst resolves to, or the zero digest if it does not exist.
func (c *Copier) backupDigest(ctx context.Context, s *session, dst name.Tag) (v1.Hash, error) {
	desc, err := s.head(ctx, dst)
	if err != nil {
		if isNotFound(err) {
			return v1.Hash{}, nil
		}
		return v1.Hash{}, err
	}
	return desc.Digest, nil
}

// remoteOptions are the options of writes, for which go-containerregistry negotiates access itself.
func (c *Copier) remoteOptions(ctx context.Context, tr http.RoundTripper) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(c.opts.Keychain),
		remote.WithTransport(tr),
		remote.WithJobs(c.opts.LayerJobs),
		remote.WithUserAgent(userAgent),
	}
}

// readOptions are the options of reads through a session's transport tr, which already carries access.
func (c *Copier) readOptions(ctx context.Context, tr http.RoundTripper) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr), remote.WithJobs(c.opts.LayerJobs)}
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

// ForgetVerified drops every remembered copy and what is known about which backup repositories hold which
// blobs, so the next request checks the backup registry again as a freshly started process would.
func (c *Copier) ForgetVerified() {
	c.verified.Reset()
	c.holders.reset()
}

// boundedMap maps up to max keys to values, forgetting the oldest key first.
type boundedMap struct {
	mu     sync.Mutex
	values map[string]string
	ring   []string // insertion order; next is the slot of the oldest key once the ring is full
	next   int
}

func newBoundedMap(maxKeys int) *boundedMap {
	return &boundedMap{values: map[string]string{}, ring: make([]string, 0, maxKeys)}
}

// Get returns the value of key, if it was put and not yet forgotten.
func (m *boundedMap) Get(key string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[key]
	return v, ok
}

// Put sets the value of key.
func (m *boundedMap) Put(key, value string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.values[key]; ok {
		m.values[key] = value
		return
	}
	m.values[key] = value
	if len(m.ring) < cap(m.ring) {
		m.ring = append(m.ring, key)
		return
	}
	delete(m.values, m.ring[m.next])
	m.ring[m.next] = key
	m.next = (m.next + 1) % len(m.ring)
}

// Reset forgets every key.
func (m *boundedMap) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.values = map[string]string{}
	m.ring = m.ring[:0]
	m.next = 0
}
