package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// This file is the Copier's side of the inventory (internal/inventory): what it tells about the copies it makes
// (Options.OnBackup), and the operations that keep a copy once made — check, verify, restore at a recorded
// digest, delete.

// State is what an Observation says of a copy.
type State int

// The states of an Observation.
const (
	// Copying: a transfer of the copy has started.
	Copying State = iota
	// Copied: the copy was made and verified complete now; Observation.Details describes it.
	Copied
	// Present: the backup registry was found to hold the copy already.
	Present
	// Failed: the copy could not be made; Observation.Err says why.
	Failed
)

// Observation is what a Copy found or did for one backup reference, as Options.OnBackup is told.
type Observation struct {
	// Source is the image as the caller named it.
	Source name.Reference
	// Target is the backup tag.
	Target name.Tag
	State  State
	// Digest is the copy's digest; zero for a Failed copy whose source could not be resolved.
	Digest v1.Hash
	// Details describe a Copied copy; nil otherwise.
	Details *Details
	// Err is the failure of a Failed copy.
	Err error
}

// Details describe a copy.
type Details struct {
	// MediaType is the media type of the copy's top manifest.
	MediaType types.MediaType
	// Platforms lists the platforms of an index (os/architecture[/variant]); nil for a single image.
	Platforms []string
	// Size is the sum of the sizes of the distinct blobs, as Options.MaxImageSize measures it.
	Size int64
}

// Restored is what Restore copied.
type Restored struct {
	Details
	// Bytes is how many blob bytes were uploaded to the backup registry (blobs it still held are not).
	Bytes int64
}

// copied is what copyAndVerify copied.
type copied = Restored

// ErrSourceLost is wrapped by the error of Restore when the source registry does not have the recorded digest:
// with the copy lost as well, the image exists nowhere the controller can reach.
var ErrSourceLost = errors.New("the source registry no longer has the image at this digest")

// ErrDeleteRefused is wrapped by the error of Delete when the backup registry does not allow deletes.
var ErrDeleteRefused = errors.New("the backup registry refuses to delete manifests")

// observe tells Options.OnBackup about o, if it is set.
func (c *Copier) observe(o Observation) {
	if c.opts.OnBackup != nil {
		c.opts.OnBackup(o)
	}
}

// Check asks the backup registry, with one manifest HEAD, what target resolves to now. It returns an error
// wrapping ErrNotBackedUp when the tag does not exist; other errors are the backup registry's.
func (c *Copier) Check(ctx context.Context, target name.Tag) (v1.Hash, error) {
	dst, err := c.withScheme(target)
	if err != nil {
		return v1.Hash{}, withClass(Invalid, err)
	}
	ctx = withRetryBudget(ctx)
	backup := c.askBackup(ctx, c.newSession(), dst)
	switch {
	case backup.err != nil:
		return v1.Hash{}, finish(ctx, atBackup(fmt.Errorf("checking backup %s: %w", dst, backup.err)))
	case backup.digest == v1.Hash{}:
		return v1.Hash{}, withClass(Transient, fmt.Errorf("%s: %w", dst, ErrNotBackedUp))
	}
	return backup.digest, nil
}

// Verify proves that the backup registry holds target's repository complete at digest, as a copy is verified
// right after it is made: every manifest read back (by digest, which checks the bytes) and every blob present
// with its size. It returns the copy's details. An error wrapping ErrNotBackedUp means content is missing;
// other errors are the backup registry's.
func (c *Copier) Verify(ctx context.Context, target name.Tag, digest v1.Hash) (Details, error) {
	dst, err := c.withScheme(target)
	if err != nil {
		return Details{}, withClass(Invalid, err)
	}
	ctx = withRetryBudget(ctx)
	v, err := c.verify(ctx, c.newSession(), dst.Context().Digest(digest.String()), digest)
	if err != nil {
		if isMissing(err) || errors.Is(err, errCorrupt) {
			return Details{}, withClass(Transient, fmt.Errorf("%s@%s is incomplete: %w: %w", dst, digest, ErrNotBackedUp, err))
		}
		return Details{}, finish(ctx, atBackup(fmt.Errorf("verifying backup %s@%s: %w", dst, digest, err)))
	}
	return v.details, nil
}

// RestoreRequest asks for a copy to be made again at a recorded digest.
type RestoreRequest struct {
	// Source is the image the copy was made from; its tag, if any, is not resolved: Digest is copied.
	Source name.Reference
	// Target is the backup tag to write.
	Target name.Tag
	// Digest is the digest the copy had.
	Digest v1.Hash
	// Credentials, as in CopyRequest, pull the source with a workload's credentials instead of the Copier's.
	Credentials CredentialSource
}

// Restore copies req.Source at req.Digest into req.Target again, with its artifacts, and verifies it, exactly
// as Copy makes a copy, sharing the transfer with a Copy of the same copy under way. Whatever the source's tag
// points to now is never copied in its place: workloads were pointed at the copy of that digest. An error
// wrapping ErrSourceLost means the source does not have the digest; every error is an *Error.
func (c *Copier) Restore(ctx context.Context, req RestoreRequest) (Restored, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.CopyTimeout)
	defer cancel()
	ctx = withRetryBudget(ctx)
	pull, err := c.pullReference(req.Source)
	if err != nil {
		return Restored{}, withClass(Invalid, err)
	}
	dst, err := c.withScheme(req.Target)
	if err != nil {
		return Restored{}, withClass(Invalid, err)
	}
	s := c.newSession()
	if _, err := c.credentials(ctx, s, CopyRequest{Source: req.Source, Credentials: req.Credentials}, pull); err != nil {
		return Restored{}, finish(ctx, err)
	}
	src := pull.Context().Digest(req.Digest.String())
	source, err := s.head(ctx, src)
	if err != nil {
		if isMissing(err) {
			return Restored{}, permanent(fmt.Errorf("%s@%s: %w: %w", describePull(req.Source, pull), req.Digest, ErrSourceLost, err))
		}
		return Restored{}, finish(ctx, fmt.Errorf("resolving %s@%s: %w", describePull(req.Source, pull), req.Digest, err))
	}
	// The pusher skips every manifest the backup has, and with it the blobs it references, so the blobs of a
	// copy that lost only some of them are written first: when its manifest is there, and for an index, whose
	// images may be there although the index itself was lost. An image whose manifest is gone has all of its
	// blobs written by the pusher.
	_, err = s.head(ctx, dst.Context().Digest(req.Digest.String()))
	repair := err == nil || source.MediaType.IsIndex()
	key := dst.String() + "@" + req.Digest.String()
	flight := c.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.CopyTimeout)
		defer cancel()
		done, err := c.copyAndVerify(fctx, s, req.Source, src, dst, repair)
		return done, finish(fctx, err)
	})
	select {
	case <-ctx.Done():
		return Restored{}, finish(ctx, ctx.Err())
	case res := <-flight:
		done, _ := res.Val.(copied)
		if res.Err != nil && ClassOf(res.Err) != Incomplete {
			return Restored{}, res.Err
		}
		return done, res.Err
	}
}

// Delete deletes ref — a tag, or a manifest by digest — from the backup registry. Deleting a manifest by digest
// removes it for every tag of its repository that points to it, where the registry untags it as the
// distribution registry does (go-containerregistry's in-memory registry keeps such tags, serving the manifest
// still). A reference that does not exist is not an error. An error wrapping ErrDeleteRefused means the registry does not allow deletes (the distribution
// registry's default; REGISTRY_STORAGE_DELETE_ENABLED=true allows them) or not of tags.
func (c *Copier) Delete(ctx context.Context, ref name.Reference) error {
	ref, err := c.parse(ref.String())
	if err != nil {
		return withClass(Invalid, err)
	}
	ctx = withRetryBudget(ctx)
	err = remote.Delete(ref, c.remoteOptions(ctx, c.base)...)
	var terr *transport.Error
	switch {
	case err == nil, isMissing(err):
		return nil
	case errors.As(err, &terr) && (terr.StatusCode == http.StatusMethodNotAllowed || hasCode(terr, transport.UnsupportedErrorCode)):
		return permanent(fmt.Errorf("deleting %s: %w: %w", ref, ErrDeleteRefused, err))
	}
	return finish(ctx, atBackup(fmt.Errorf("deleting %s: %w", ref, err)))
}

// writeBlobs writes every blob of image to dst that dst does not serve (one HEAD per blob, and an upload or
// mount of those missing), for a copy whose manifests are in the backup without all their blobs.
func (c *Copier) writeBlobs(ctx context.Context, image remote.Taggable, dst name.Repository, opts []remote.Option) error {
	layers := map[v1.Hash]v1.Layer{}
	if err := collectBlobs(image, layers, 0); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.LayerJobs)
	for digest, layer := range layers {
		g.Go(func() error {
			if err := remote.WriteLayer(dst, layer, append(opts, remote.WithContext(gctx))...); err != nil {
				return atBackup(fmt.Errorf("writing blob %s to %s: %w", digest, dst, err))
			}
			return nil
		})
	}
	return g.Wait()
}

// collectBlobs adds the config and layers of every image of image to layers.
func collectBlobs(image remote.Taggable, layers map[v1.Hash]v1.Layer, depth int) error {
	switch im := image.(type) {
	case *copyImage:
		config, err := im.ConfigLayer()
		if err != nil {
			return err
		}
		ls, err := im.Layers()
		if err != nil {
			return err
		}
		for _, l := range append(ls, config) {
			d, err := l.Digest()
			if err != nil {
				return err
			}
			if mt, err := l.MediaType(); err == nil && !mt.IsDistributable() {
				continue
			}
			layers[d] = l
		}
	case *copyIndex:
		if depth >= maxIndexDepth {
			return permanent(fmt.Errorf("image indexes nest more than %d levels deep", maxIndexDepth))
		}
		m, err := im.IndexManifest()
		if err != nil {
			return err
		}
		for _, child := range m.Manifests {
			var sub remote.Taggable
			switch {
			case child.MediaType.IsIndex():
				sub, err = im.childIndex(child.Digest)
			case child.MediaType.IsImage():
				sub, err = im.childImage(child.Digest)
			default:
				l, lerr := im.Layer(child.Digest)
				if lerr != nil {
					return lerr
				}
				layers[child.Digest] = l
				continue
			}
			if err != nil {
				return err
			}
			if err := collectBlobs(sub, layers, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// isMissing reports whether err is a registry's answer that a manifest, blob or repository does not exist.
func isMissing(err error) bool {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return false
	}
	return terr.StatusCode == http.StatusNotFound || hasCode(terr, transport.ManifestUnknownErrorCode) ||
		hasCode(terr, transport.BlobUnknownErrorCode) || hasCode(terr, transport.NameUnknownErrorCode)
}

func hasCode(terr *transport.Error, code transport.ErrorCode) bool {
	for _, d := range terr.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}

// platformsOf lists the platforms of the index manifest raw, in its order, for Details.
func platformsOf(raw []byte) []string {
	idx, err := v1.ParseIndexManifest(bytesReader(raw))
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range idx.Manifests {
		// Build attestations ride in indexes as manifests of platform unknown/unknown; they run nowhere.
		if m.Platform != nil && (m.MediaType.IsImage() || m.MediaType.IsIndex()) &&
			m.Annotations["vnd.docker.reference.type"] != "attestation-manifest" {
			out = append(out, m.Platform.String())
		}
	}
	return out
}
