package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"
)

// verify proves that dst is a complete copy with digest want: it reads every manifest back from the backup
// registry (fetching by digest checks the bytes) and checks that every blob is present with the right size.
// It returns the verifier, which holds the blobs it found and the copy's details.
func (c *Copier) verify(ctx context.Context, s *session, dst name.Reference, want v1.Hash) (*verifier, error) {
	tr, err := s.reader(ctx, dst.Context())
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(dst, c.readOptions(ctx, tr)...)
	if err != nil {
		return nil, err
	}
	if desc.Digest != want {
		return nil, fmt.Errorf("backup %s resolves to %s, want %s", dst, desc.Digest, want)
	}
	v := &verifier{copier: c, repo: dst.Context(), tr: tr, client: &http.Client{Transport: tr}, sizes: map[v1.Hash]int64{}}
	if err := v.manifest(ctx, desc.Descriptor, desc.Manifest, 0); err != nil {
		return nil, err
	}
	v.details.MediaType = desc.MediaType
	if desc.MediaType.IsIndex() {
		v.details.Platforms = platformsOf(desc.Manifest)
	}
	v.details.Size = totalSize(v.sizes)
	return v, nil
}

// errCorrupt marks content of the backup that is there with the wrong size.
var errCorrupt = errors.New("corrupt")

// maxIndexDepth bounds how deep indexes may nest below the image's own index (depth 0). Content addressing makes
// an index that lists itself impossible, but nothing stops a registry from serving indexes nested thousands of
// levels deep, each level a round trip to read and a level of recursion to copy. measure applies the same bound
// before the push, so verification never refuses a copy the push made.
const maxIndexDepth = 8

type verifier struct {
	copier *Copier
	repo   name.Repository
	tr     http.RoundTripper
	client *http.Client

	mu      sync.Mutex
	blobs   []v1.Hash         // blobs found present
	sizes   map[v1.Hash]int64 // distinct distributable blobs found, by the size the manifests give (see size.go)
	details Details
}

func (v *verifier) manifest(ctx context.Context, desc v1.Descriptor, raw []byte, depth int) error {
	switch {
	case desc.MediaType.IsIndex():
		if depth >= maxIndexDepth {
			return permanent(fmt.Errorf("index %s nests more than %d levels deep", desc.Digest, maxIndexDepth))
		}
		idx, err := v1.ParseIndexManifest(bytesReader(raw))
		if err != nil {
			return fmt.Errorf("parsing index %s: %w", desc.Digest, err)
		}
		// The children are read back at the same time: each read is a round trip on the way to a finished copy.
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(v.copier.opts.LayerJobs)
		for _, child := range idx.Manifests {
			if !child.MediaType.IsIndex() && !child.MediaType.IsImage() {
				g.Go(func() error { return v.blob(gctx, child) })
				continue
			}
			g.Go(func() error {
				got, err := remote.Get(v.repo.Digest(child.Digest.String()), v.copier.readOptions(gctx, v.tr)...)
				if err != nil {
					return fmt.Errorf("child manifest %s: %w", child.Digest, err)
				}
				return v.manifest(gctx, got.Descriptor, got.Manifest, depth+1)
			})
		}
		return g.Wait()
	case desc.MediaType.IsImage():
		m, err := v1.ParseManifest(bytesReader(raw))
		if err != nil {
			return fmt.Errorf("parsing manifest %s: %w", desc.Digest, err)
		}
		blobs := append([]v1.Descriptor{m.Config}, m.Layers...)
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(v.copier.opts.LayerJobs)
		for _, b := range blobs {
			if !b.MediaType.IsDistributable() {
				continue // foreign layers are pulled from their own URLs, never copied
			}
			g.Go(func() error { return v.blob(gctx, b) })
		}
		return g.Wait()
	default:
		return permanent(fmt.Errorf("manifest %s has unsupported media type %q", desc.Digest, desc.MediaType))
	}
}

func (v *verifier) blob(ctx context.Context, b v1.Descriptor) error {
	u := url.URL{
		Scheme: v.repo.Scheme(),
		Host:   v.repo.RegistryStr(),
		Path:   fmt.Sprintf("/v2/%s/blobs/%s", v.repo.RepositoryStr(), b.Digest),
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return fmt.Errorf("checking blob %s: %w", b.Digest, err)
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return fmt.Errorf("blob %s missing from backup: %w", b.Digest, err)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != b.Size {
		return fmt.Errorf("blob %s in backup has %d bytes, want %d: %w", b.Digest, resp.ContentLength, b.Size, errCorrupt)
	}
	v.mu.Lock()
	v.blobs = append(v.blobs, b.Digest)
	if b.MediaType.IsDistributable() {
		v.sizes[b.Digest] = b.Size
	}
	v.mu.Unlock()
	return nil
}
