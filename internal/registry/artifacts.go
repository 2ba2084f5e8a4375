package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Signature policies verify the image a pod runs, and look for its signatures next to it: cosign's tags
// sha256-<hex>.sig, .att and .sbom in the same repository, or OCI 1.1 referrers (the referrers API, or the
// sha256-<hex> fallback tag index of registries without that API). A copy without them fails verification,
// so, with Options.Artifacts, every manifest of a copy (the index and each child) brings them along, byte
// for byte, and referrers of referrers follow up to maxArtifactDepth levels and maxArtifacts in all.
//
// Cost, for an image without artifacts: one tag list of the source repository per copy, and one referrers
// request per manifest (a fallback tag is read only when the tag list has it), all before the push; nothing
// at the backup, and nothing on the no-op path. An image with artifacts is pushed by digest and its backup tag
// written last, so a copy the backup holds at the source's digest has its artifacts.

// maxArtifactDepth bounds how many levels of referrers of referrers (a signature on an SBOM on the image)
// are followed.
const maxArtifactDepth = 3

// maxArtifacts bounds how many artifacts one copy brings along; beyond it the rest is left out and logged.
const maxArtifacts = 64

// cosignSuffixes are the tags cosign stores signatures, attestations and SBOMs under, after sha256-<hex>.
var cosignSuffixes = []string{".sig", ".att", ".sbom"}

// artifact is one manifest that belongs to a copy.
type artifact struct {
	// tag is the cosign tag it is stored under; "" for a referrer, which is stored by digest.
	tag    string
	digest v1.Hash
}

func (a artifact) String() string {
	if a.tag != "" {
		return a.tag
	}
	return a.digest.String()
}

// sourceArtifacts lists the artifacts of every manifest of image at the source repository src, before the
// image is pushed: an image without any is pushed to its tag as it would be without them.
func (c *Copier) sourceArtifacts(ctx context.Context, s *session, orig name.Reference, src name.Repository, image remote.Taggable) ([]artifact, error) {
	// A failing referrers endpoint must not spend the failure budget the image's own requests need.
	ctx = withRetryBudget(ctx)
	manifests, err := manifestDigests(image)
	if err != nil {
		return nil, c.artifactsError(orig, err)
	}
	tr, err := s.reader(ctx, src)
	if err != nil {
		return nil, c.artifactsError(orig, err)
	}
	found, err := c.findArtifacts(ctx, tr, src, manifests)
	if err != nil {
		return nil, c.artifactsError(orig, err)
	}
	return found, nil
}

// manifestDigests returns the digests of image and of every manifest its index lists, nested ones included.
func manifestDigests(image remote.Taggable) ([]v1.Hash, error) {
	switch t := image.(type) {
	case v1.Image:
		d, err := t.Digest()
		return []v1.Hash{d}, err
	case v1.ImageIndex:
		d, err := t.Digest()
		if err != nil {
			return nil, err
		}
		digests := []v1.Hash{d}
		m, err := t.IndexManifest()
		if err != nil {
			return nil, err
		}
		for _, child := range m.Manifests {
			switch {
			case child.MediaType.IsIndex():
				nested, err := t.ImageIndex(child.Digest)
				if err != nil {
					return nil, err
				}
				more, err := manifestDigests(nested)
				if err != nil {
					return nil, err
				}
				digests = append(digests, more...)
			case child.MediaType.IsImage():
				digests = append(digests, child.Digest)
			}
		}
		return digests, nil
	}
	return nil, fmt.Errorf("%T is neither an image nor an index", image)
}

// copyArtifacts copies found from the source repository src to dst and verifies them there; the error names
// those it could not copy.
func (c *Copier) copyArtifacts(ctx context.Context, s *session, orig name.Reference, src, dst name.Repository, found []artifact) error {
	ctx = withRetryBudget(ctx)
	var missing []string
	var first error
	for _, a := range found {
		if err := c.copyArtifact(ctx, s, orig, src, dst, a); err != nil {
			missing = append(missing, a.String())
			if first == nil {
				first = err
			}
		}
	}
	logr.FromContextOrDiscard(ctx).V(1).Info("Copied the image's artifacts", "image", orig.String(), "artifacts", len(found)-len(missing))
	if first != nil {
		return fmt.Errorf("%s: %w", strings.Join(missing, ", "), first)
	}
	return nil
}

// findArtifacts lists the artifacts of subjects in repo: the cosign tags of each, and its referrers, and
// theirs, within the bounds.
func (c *Copier) findArtifacts(ctx context.Context, tr http.RoundTripper, repo name.Repository, subjects []v1.Hash) ([]artifact, error) {
	tagList, err := remote.List(repo, c.readOptions(ctx, tr)...)
	if err != nil {
		return nil, fmt.Errorf("listing the tags of %s for signatures: %w", repo, err)
	}
	tags := make(map[string]bool, len(tagList))
	for _, t := range tagList {
		tags[t] = true
	}
	type subject struct {
		digest v1.Hash
		depth  int
	}
	queue := make([]subject, 0, len(subjects))
	for _, d := range subjects {
		queue = append(queue, subject{digest: d})
	}
	seen := map[v1.Hash]bool{}
	var found []artifact
	for len(queue) > 0 && len(found) < maxArtifacts {
		sub := queue[0]
		queue = queue[1:]
		prefix := sub.digest.Algorithm + "-" + sub.digest.Hex
		for _, suffix := range cosignSuffixes {
			if tags[prefix+suffix] {
				found = append(found, artifact{tag: prefix + suffix})
			}
		}
		refs, err := c.referrers(ctx, tr, repo, sub.digest, tags[prefix])
		if err != nil {
			return nil, err
		}
		for _, ref := range refs {
			if seen[ref.Digest] {
				continue
			}
			seen[ref.Digest] = true
			found = append(found, artifact{digest: ref.Digest})
			if sub.depth+1 < maxArtifactDepth {
				queue = append(queue, subject{digest: ref.Digest, depth: sub.depth + 1})
			}
		}
	}
	if len(found) >= maxArtifacts {
		logr.FromContextOrDiscard(ctx).Info("Copying only the first artifacts of an image", "repository", repo.String(), "limit", maxArtifacts)
		found = found[:maxArtifacts]
	}
	return found, nil
}

// referrers returns the referrers of digest in repo: from the referrers API where the registry serves it, else
// from the fallback tag index, read only when the repository has that tag (hasFallback).
func (c *Copier) referrers(ctx context.Context, tr http.RoundTripper, repo name.Repository, digest v1.Hash, hasFallback bool) ([]v1.Descriptor, error) {
	u := fmt.Sprintf("%s://%s/v2/%s/referrers/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(types.OCIImageIndex))
	resp, err := (&http.Client{Transport: tr, CheckRedirect: checkRedirect}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("listing the referrers of %s@%s: %w", repo, digest, err)
	}
	defer resp.Body.Close()
	// A registry without the API answers 404 (or 400, 406); one with it answers an index, possibly empty.
	if err := transport.CheckError(resp, http.StatusOK, http.StatusNotFound, http.StatusBadRequest, http.StatusNotAcceptable); err != nil {
		return nil, fmt.Errorf("listing the referrers of %s@%s: %w", repo, digest, err)
	}
	var raw []byte
	switch {
	case resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), string(types.OCIImageIndex)):
		if raw, err = readLimited(resp.Body); err != nil {
			return nil, fmt.Errorf("reading the referrers of %s@%s: %w", repo, digest, err)
		}
	case !hasFallback:
		return nil, nil
	default:
		desc, err := remote.Get(repo.Tag(digest.Algorithm+"-"+digest.Hex), c.readOptions(ctx, tr)...)
		if err != nil {
			return nil, fmt.Errorf("reading the referrers fallback tag of %s@%s: %w", repo, digest, err)
		}
		raw = desc.Manifest
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(raw, &index); err != nil {
		return nil, permanent(fmt.Errorf("the referrers of %s@%s are not an image index: %w", repo, digest, err))
	}
	return index.Manifests, nil
}

// copyArtifact copies one artifact from src to dst, under its cosign tag or by digest (the backup then lists
// a referrer through its referrers API, or go-containerregistry adds it to the fallback tag index there), and
// verifies it.
func (c *Copier) copyArtifact(ctx context.Context, s *session, orig name.Reference, src, dst name.Repository, a artifact) error {
	digest := a.digest
	if a.tag != "" {
		desc, err := s.head(ctx, src.Tag(a.tag))
		if err != nil {
			return fmt.Errorf("resolving %s:%s: %w", src, a.tag, err)
		}
		digest = desc.Digest
	}
	image, _, err := c.source(ctx, s, orig, src.Digest(digest.String()), dst)
	if err != nil {
		return fmt.Errorf("fetching artifact %s of %s: %w", a, orig, err)
	}
	var target name.Reference = dst.Digest(digest.String())
	if a.tag != "" {
		target = dst.Tag(a.tag)
	}
	if err := remote.Push(target, image, c.remoteOptions(ctx, c.base)...); err != nil {
		return atBackup(fmt.Errorf("copying artifact %s of %s to %s: %w", a, orig, target, err))
	}
	if _, err := c.verify(ctx, s, target, digest); err != nil {
		return withClass(Transient, fmt.Errorf("verifying artifact %s of %s at %s: %w", a, orig, target, err))
	}
	return nil
}

// maxReferrersSize bounds the referrers index read from a registry.
const maxReferrersSize = 4 << 20

// readLimited reads a referrers index, refusing one larger than maxReferrersSize.
func readLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxReferrersSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxReferrersSize {
		return nil, fmt.Errorf("referrers index larger than %d bytes", maxReferrersSize)
	}
	return b, nil
}
