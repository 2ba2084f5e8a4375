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
	"k8s.io/utils/lru"
)

const userAgent = "image-clone-controller"

// Copier copies whole images (every platform of an index) into the backup registry, byte for byte, so that
// digests are unchanged. Concurrent requests for the same copy share one transfer. Every request asks the backup
// registry whether it holds the copy now (one manifest HEAD), whatever this process copied before, so a copy
// that was deleted since is made again before anyone is pointed at it. Blobs that another repository of the
// backup registry holds are mounted from there instead of uploaded (see blobHolders).
type Copier struct {
	opts     Options
	insecure map[string]bool
	// base is opts.Transport with retries and the user agent, for every request of the Copier.
	base    http.RoundTripper
	flights singleflight.Group
	slots   chan struct{}
	// tags remembers what source tags resolved to, for Options.TagCacheTTL; nil when that is 0.
	tags *tagCache
	// unverified holds copies whose verification failed: their manifest may be in the backup without the
	// content it references, so only a new push and verification can prove them complete.
	unverified *lru.Cache
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
		base:       baseTransport(opts.Transport),
		slots:      make(chan struct{}, opts.MaxConcurrentCopies),
		tags:       newTagCache(opts.TagCacheTTL, opts.CacheSize, opts.Clock),
		unverified: lru.New(opts.CacheSize),
		holders:    newBlobHolders(opts.MountCacheSize),
	}
}

// Copy makes req.Target hold the image req.Source refers to and returns its digest once the copy is verified
// complete: the manifest at the target has the source's digest and every manifest and blob it references is
// present. A digest-pinned source is copied exactly; a tagged one is resolved to its current digest first
// (or to the digest the tag cache remembers). Options.CopyTimeout bounds the whole call. Every error it
// returns is an *Error, whose Class says what fixing it takes.
func (c *Copier) Copy(ctx context.Context, req CopyRequest) (v1.Hash, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.CopyTimeout)
	defer cancel()
	ctx = withRetryBudget(ctx)
	digest, result, err := c.copy(ctx, req, true)
	// Classed before it is observed: the inventory words its condition from the observed error (Explain).
	err = finish(ctx, err)
	if err != nil && ClassOf(err) != Incomplete {
		result = resultFailed
		c.observe(Observation{Source: req.Source, Target: req.Target, State: Failed, Digest: digest, Err: err})
	}
	copiesTotal.WithLabelValues(result).Inc()
	return digest, err
}

// ErrNotBackedUp is wrapped by the error of Lookup for an image that the backup registry does not hold complete
// (at the digest its source has now, unless KeepExisting).
var ErrNotBackedUp = errors.New("the backup registry holds no verified copy")

// Lookup returns what Copy would, without copying or restoring anything: the digest of req.Target when the
// backup registry holds a complete copy of req.Source — at the digest the source has now, or, with
// KeepExisting, whatever copy is there — and an error wrapping ErrNotBackedUp when it does not. It asks the
// registries as Copy does (one manifest HEAD at the backup, one at the source unless the tag cache answers)
// and proves req.Credentials' access the same way, but it does not wait for a transfer under way, so ctx alone
// bounds it: it serves callers with a small time budget, such as the admission webhook.
func (c *Copier) Lookup(ctx context.Context, req CopyRequest) (v1.Hash, error) {
	ctx = withRetryBudget(ctx)
	digest, _, err := c.copy(ctx, req, false)
	return digest, finish(ctx, err)
}

// copy does the work of Copy, or of Lookup when copying is not allowed, and says which copies_total result it
// had.
func (c *Copier) copy(ctx context.Context, req CopyRequest, copying bool) (v1.Hash, string, error) {
	pull, err := c.pullReference(req.Source)
	if err != nil {
		return v1.Hash{}, "", withClass(Invalid, err)
	}
	dst, err := c.withScheme(req.Target)
	if err != nil {
		return v1.Hash{}, "", withClass(Invalid, err)
	}
	s := c.newSession()
	held := make(chan backupAnswer, 1)
	if req.KeepExisting {
		// A copy workloads already run from is kept as it is; the source is asked only if it is gone, or to
		// prove the caller's access (ProveAccess).
		backup := c.askBackup(ctx, s, dst)
		if backup.err != nil {
			return v1.Hash{}, "", atBackup(fmt.Errorf("checking backup %s: %w", dst, backup.err))
		}
		if backup.digest != (v1.Hash{}) && !c.failedVerification(dst.String()+"@"+backup.digest.String()) {
			if req.ProveAccess {
				if err := c.proveAccess(ctx, s, req, pull); err != nil {
					return v1.Hash{}, "", err
				}
			}
			if copying {
				c.observe(Observation{Source: req.Source, Target: req.Target, State: Present, Digest: backup.digest})
			}
			return backup.digest, resultPresent, nil
		}
		if !copying {
			return v1.Hash{}, "", withClass(Transient, fmt.Errorf("%s: %w", dst, ErrNotBackedUp))
		}
		held <- backup
	}
	creds, err := c.credentials(ctx, s, req, pull)
	if err != nil {
		return v1.Hash{}, "", err
	}
	checkAccess := creds != nil && s.sourceKeychain != nil

	// Nothing this process remembers skips the backup: the copy it verified may be gone (garbage collection,
	// a lifecycle policy, lost storage). The source is asked at the same time, unless the tag cache answers.
	if !req.KeepExisting {
		go func() { held <- c.askBackup(ctx, s, dst) }()
	}
	digest, err := c.keptDigest(ctx, s, req, pull)
	if err == nil && digest == (v1.Hash{}) {
		digest, err = c.sourceDigest(ctx, s, req.Source, creds, pull, checkAccess)
	}
	backup := <-held
	if err != nil {
		if checkAccess {
			return v1.Hash{}, "", fmt.Errorf("resolving %s with the workload's pull credentials: %w", describePull(req.Source, pull), err)
		}
		return v1.Hash{}, "", fmt.Errorf("resolving %s: %w", describePull(req.Source, pull), err)
	}
	if backup.err != nil {
		return v1.Hash{}, "", atBackup(fmt.Errorf("checking backup %s: %w", dst, backup.err))
	}

	key := dst.String() + "@" + digest.String()
	// A registry only accepts a manifest once everything it references is present, so a matching digest means
	// the copy is complete, unless this process saw its verification fail.
	if backup.digest == digest && !c.failedVerification(key) {
		logr.FromContextOrDiscard(ctx).V(1).Info("Backup already holds the image", "image", req.Source.String(), "backup", dst.String(), "digest", digest.String())
		if copying {
			c.observe(Observation{Source: req.Source, Target: req.Target, State: Present, Digest: digest})
		}
		return digest, resultPresent, nil
	}
	if !copying {
		return v1.Hash{}, "", withClass(Transient, fmt.Errorf("%s at %s: %w", dst, digest, ErrNotBackedUp))
	}

	// The copy runs detached from the caller so that a cancelled reconcile does not abort a transfer that
	// other reconciles are waiting for; a CopyTimeout of its own, from when it starts, bounds it instead, so
	// that a caller joining late is not cut short by the deadline of the one that started it.
	led := false
	flight := c.flights.DoChan(key, func() (any, error) {
		led = true
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.CopyTimeout)
		defer cancel()
		c.observe(Observation{Source: req.Source, Target: req.Target, State: Copying, Digest: digest})
		// A copy whose verification failed may have its manifests without all their blobs, which the pusher
		// would skip: its blobs are written first.
		done, err := c.copyAndVerify(fctx, s, req.Source, pull.Context().Digest(digest.String()), dst, c.failedVerification(key))
		if err == nil || ClassOf(err) == Incomplete {
			c.observe(Observation{Source: req.Source, Target: req.Target, State: Copied, Digest: digest, Details: &done.Details})
		}
		return done, finish(fctx, err)
	})
	select {
	case <-ctx.Done():
		return v1.Hash{}, "", ctx.Err()
	case res := <-flight:
		if res.Err != nil && ClassOf(res.Err) != Incomplete {
			return v1.Hash{}, "", res.Err
		}
		if !led {
			return digest, resultJoined, res.Err
		}
		return digest, resultCopied, res.Err
	}
}

// credentials reads req's credentials, if it has any, and sets the session up to read the source with them.
// The caller's credentials must prove access to the source on every call, even for a digest that needs no
// resolving and an image the backup already holds; mirrors are read with the Copier's keychain.
func (c *Copier) credentials(ctx context.Context, s *session, req CopyRequest, pull name.Reference) (*Credentials, error) {
	if req.Credentials == nil {
		return nil, nil
	}
	creds, err := req.Credentials(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the credentials to pull %s with: %w", req.Source, err)
	}
	if creds != nil && pull.Context().RegistryStr() == req.Source.Context().RegistryStr() {
		s.source, s.sourceKeychain = pull.Context(), creds.Keychain
	}
	return creds, nil
}

// proveAccess checks that req's credentials can read its source (from the tag cache within its TTL), for a
// copy that is kept whatever the source holds now.
func (c *Copier) proveAccess(ctx context.Context, s *session, req CopyRequest, pull name.Reference) error {
	creds, err := c.credentials(ctx, s, req, pull)
	if err != nil || creds == nil || s.sourceKeychain == nil {
		return err
	}
	if _, err := c.sourceDigest(ctx, s, req.Source, creds, pull, true); err != nil {
		return fmt.Errorf("resolving %s with the workload's pull credentials: %w", describePull(req.Source, pull), err)
	}
	return nil
}

// keptDigest returns, for a KeepExisting copy the backup lost, the digest it had (Options.RecordedDigest) if the
// source still has it — proven with req's credentials, if any — so that workloads get back the content they
// were pointed at rather than what the source tag points to now. It returns the zero digest when no digest is
// recorded or the source no longer has it: the copy is then made from the tag as it stands.
func (c *Copier) keptDigest(ctx context.Context, s *session, req CopyRequest, pull name.Reference) (v1.Hash, error) {
	if !req.KeepExisting || c.opts.RecordedDigest == nil {
		return v1.Hash{}, nil
	}
	recorded, ok := c.opts.RecordedDigest(req.Target)
	if !ok {
		return v1.Hash{}, nil
	}
	if _, err := c.resolve(ctx, s, pull.Context().Digest(recorded.String()), true); err != nil {
		if isMissing(err) {
			logr.FromContextOrDiscard(ctx).Info("The source no longer has the digest the lost copy had; copying what its tag points to now",
				"image", req.Source.String(), "backup", req.Target.String(), "digest", recorded.String())
			return v1.Hash{}, nil
		}
		return v1.Hash{}, err
	}
	return recorded, nil
}

// backupAnswer is what the backup tag resolved to: its digest, the zero digest if the tag does not exist, or
// the error of asking.
type backupAnswer struct {
	digest v1.Hash
	err    error
}

// sourceDigest returns the digest src points to now, from the tag cache when it remembers it, else
// from the registry (which the cache then remembers).
func (c *Copier) sourceDigest(ctx context.Context, s *session, src name.Reference, creds *Credentials, pull name.Reference, checkAccess bool) (v1.Hash, error) {
	if digest, ok := c.tags.get(src, creds); ok {
		return digest, nil
	}
	digest, err := c.resolve(ctx, s, pull, checkAccess)
	if err != nil {
		return v1.Hash{}, err
	}
	c.tags.add(src, creds, digest)
	return digest, nil
}

// finish gives a failed Copy its class and, for a transient failure, the wait a registry asked for that was too
// long to spend in the Copy (see retryTransport).
func finish(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("giving up after --copy-timeout or cancellation: %w", err)
	}
	err = classify(err)
	if after := budgetOf(ctx).retryAfter(); after > 0 && ClassOf(err) == Transient && RetryAfterOf(err) == 0 {
		return &Error{Class: Transient, RetryAfter: after, Err: err}
	}
	return err
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
	if !errors.As(err, &terr) || retryStatusCodes[terr.StatusCode] {
		return v1.Hash{}, err // unreachable or failing: a GET would only meet the same answer
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

// copyAndVerify copies src (the image orig names, at its digest) to dst, with its artifacts, and verifies the
// copy. It returns what it copied. repair first writes every blob the backup lacks (see writeBlobs).
func (c *Copier) copyAndVerify(ctx context.Context, s *session, orig name.Reference, src name.Digest, dst name.Tag, repair bool) (copied, error) {
	log := logr.FromContextOrDiscard(ctx).WithValues("image", orig.String(), "backup", dst.String(), "digest", src.DigestStr())
	want, _ := v1.NewHash(src.DigestStr())
	key := dst.String() + "@" + want.String()

	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	case <-ctx.Done():
		return copied{}, ctx.Err()
	}

	start := time.Now()

	// Verification reads the backup with a transport of its own, whose handshake runs during the transfer.
	go func() { _, _ = s.reader(ctx, dst.Context()) }()
	image, details, err := c.source(ctx, s, orig, src, dst.Context())
	if err != nil {
		return copied{}, err
	}
	// An image with artifacts is pushed by digest and tagged only once they are copied too: the tag is what
	// later copies and the webhook find, so it must stand for a copy with its signatures.
	var found []artifact
	var incomplete error
	if c.opts.Artifacts {
		if found, incomplete = c.sourceArtifacts(ctx, s, orig, src.Context(), image); incomplete != nil && !c.opts.ArtifactsOptional {
			return copied{}, incomplete
		}
	}
	var target name.Reference = dst
	if len(found) > 0 {
		target = dst.Context().Digest(want.String())
	}
	counter := &uploadCounter{next: c.base}
	// One pusher for the push and the tag written after the artifacts, so that the tag costs one request.
	pusher, err := remote.NewPusher(c.remoteOptions(ctx, counter)...)
	if err != nil {
		return copied{}, atBackup(fmt.Errorf("copying %s to %s: %w", orig, dst, err))
	}
	log.V(1).Info("Copying image")
	if repair {
		if err := c.writeBlobs(ctx, image, dst.Context(), c.remoteOptions(ctx, counter)); err != nil {
			return copied{}, err
		}
	}
	if err := remote.Push(target, image, remote.WithContext(ctx), remote.Reuse(pusher)); err != nil {
		return copied{}, atBackup(fmt.Errorf("copying %s to %s: %w", orig, dst, err))
	}
	copiedBytes.Add(float64(counter.bytes.Load()))

	v, err := c.verify(ctx, s, target, want)
	if err != nil {
		c.unverified.Add(key, struct{}{})
		// Content missing from the backup right after the copy is uploaded again by the next attempt: unlike a
		// missing source, even a 404 here is transient.
		return copied{}, withClass(Transient, fmt.Errorf("verifying copy of %s at %s: %w", orig, dst, err))
	}
	c.holders.add(dst.Context(), v.blobs...)
	if len(found) > 0 {
		if err := c.copyArtifacts(ctx, s, orig, src.Context(), dst.Context(), found); err != nil {
			if incomplete = c.artifactsError(orig, err); !c.opts.ArtifactsOptional {
				c.unverified.Add(key, struct{}{})
				return copied{}, incomplete
			}
		}
		if err := remote.Put(dst, image, remote.WithContext(ctx), remote.Reuse(pusher)); err != nil {
			return copied{}, atBackup(fmt.Errorf("tagging the copy of %s at %s: %w", orig, dst, err))
		}
	}
	c.unverified.Remove(key)
	copyDuration.Observe(time.Since(start).Seconds())
	log.Info("Copied image", "bytes", counter.bytes.Load(), "duration", time.Since(start).Round(time.Millisecond).String())
	return copied{Details: details, Bytes: counter.bytes.Load()}, incomplete
}

// artifactsError is the error of artifacts that could not be found or copied: Transient, so that the copy is
// tried again, or, with ArtifactsOptional, Incomplete.
func (c *Copier) artifactsError(orig name.Reference, err error) error {
	class := Transient
	if c.opts.ArtifactsOptional {
		class = Incomplete
	}
	return &Error{Class: class, Err: fmt.Errorf("copying the signatures and attestations of %s: %w", orig, err)}
}

// failedVerification reports whether this process saw the verification of the copy key fail, without a
// successful one since.
func (c *Copier) failedVerification(key string) bool {
	_, failed := c.unverified.Get(key)
	return failed
}

// source fetches the manifests of src and returns the image or index to push: the source's manifests, with
// blobs that stream from the source registry (or mount from a backup repository that holds them). It refuses
// an image larger than MaxImageSize, and an index whose manifests cannot all be read, before any blob moves.
func (c *Copier) source(ctx context.Context, s *session, orig name.Reference, src name.Digest, dst name.Repository) (remote.Taggable, Details, error) {
	tr, err := s.reader(ctx, src.Context())
	if err != nil {
		return nil, Details{}, fmt.Errorf("fetching %s: %w", describePull(orig, src), err)
	}
	desc, err := remote.Get(src, c.readOptions(ctx, tr)...)
	if err != nil {
		return nil, Details{}, fmt.Errorf("fetching %s: %w", describePull(orig, src), err)
	}
	blobs := &blobSource{
		ctx:     ctx,
		repo:    src.Context(),
		client:  &http.Client{Transport: tr, CheckRedirect: checkRedirect},
		dst:     dst,
		holders: c.holders,
		slots:   make(chan struct{}, c.opts.LayerJobs),
	}
	var image remote.Taggable
	details := Details{MediaType: desc.MediaType}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, Details{}, err
		}
		image = &copyIndex{src: idx, ref: src, blobs: blobs}
		details.Platforms = platformsOf(desc.Manifest)
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, Details{}, err
		}
		image = &copyImage{Image: img, blobs: blobs}
	default:
		return nil, Details{}, permanent(fmt.Errorf("%s has media type %q, which is neither an image nor an image index", orig, desc.MediaType))
	}
	// Every manifest is read, and the size checked, before the push moves any blob.
	if details.Size, err = c.measure(ctx, image); err != nil {
		return nil, Details{}, fmt.Errorf("fetching %s: %w", describePull(orig, src), err)
	}
	if err := c.checkSize(orig, details.Size); err != nil {
		return nil, Details{}, err
	}
	return image, details, nil
}

// askBackup asks the backup registry what dst resolves to, with one manifest HEAD.
func (c *Copier) askBackup(ctx context.Context, s *session, dst name.Tag) backupAnswer {
	desc, err := s.head(ctx, dst)
	switch {
	case isNotFound(err):
		return backupAnswer{}
	case err != nil:
		return backupAnswer{err: err}
	}
	return backupAnswer{digest: desc.Digest}
}

// remoteOptions are the options of writes, for which go-containerregistry negotiates access itself.
func (c *Copier) remoteOptions(ctx context.Context, tr http.RoundTripper) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(c.opts.Keychain),
		remote.WithTransport(tr),
		remote.WithJobs(c.opts.LayerJobs),
		remote.WithUserAgent(userAgent),
		// tr already retries (see retryTransport); go-containerregistry would retry on top of it.
		remote.WithRetryPredicate(neverRetry),
		remote.WithRetryStatusCodes(),
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

// Forget drops everything the Copier remembers — the tag cache, which backup repositories hold which
// blobs, failed verifications — so the next request finds out anew, as a freshly started process would.
func (c *Copier) Forget() {
	c.tags.reset()
	c.holders.reset()
	c.unverified.Clear()
}
