package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// blobSource hands go-containerregistry's pusher the blobs of one source image as layers that stream straight
// from the source registry into the upload.
//
// The pusher's own remote layers hash every byte they read to check it against the digest. The backup
// registry does the same when the upload is committed (PUT ?digest=), and refuses content that does not match,
// so the copy keeps that guarantee without hashing on this side too: hashing was most of the copier's CPU time.
//
// Blobs are read LayerJobs at a time per copy, and blobs that another repository of the backup registry is
// known to hold are mounted from there rather than uploaded (see blobHolders).
type blobSource struct {
	ctx    context.Context
	repo   name.Repository // the repository blobs are read from
	client *http.Client
	dst    name.Repository
	// holders knows other backup repositories that hold blobs.
	holders *blobHolders
	// slots bounds how many blobs are read at the same time.
	slots chan struct{}
}

// layer returns the blob desc of the source image as a layer to push. If the backup registry can mount it from
// a repository that holds it, the layer says so; go-containerregistry then asks for the mount first.
func (s *blobSource) layer(desc v1.Descriptor, fallback func() (v1.Layer, error)) v1.Layer {
	b := &sourceBlob{src: s, desc: desc, fallback: fallback}
	if from, ok := s.mountFrom(desc.Digest); ok {
		return &remote.MountableLayer{Layer: b, Reference: from.Digest(desc.Digest.String())}
	}
	return b
}

// mountFrom returns a repository of the backup registry other than dst that holds digest: the source
// repository itself when it is on the backup registry, else one that this process verified holds it.
func (s *blobSource) mountFrom(digest v1.Hash) (name.Repository, bool) {
	if s.repo.RegistryStr() == s.dst.RegistryStr() {
		return s.repo, s.repo.String() != s.dst.String()
	}
	return s.holders.holder(s.dst, digest)
}

// sourceBlob is a blob of the source image (a layer or a config) as the pusher uploads it.
type sourceBlob struct {
	src  *blobSource
	desc v1.Descriptor
	// fallback returns go-containerregistry's own layer for the blob, which can also read the blob from the
	// URLs of its descriptor; it is used when the registry does not serve the blob.
	fallback func() (v1.Layer, error)
}

var errNotNeeded = errors.New("not needed to copy a blob")

func (b *sourceBlob) Digest() (v1.Hash, error)             { return b.desc.Digest, nil }
func (b *sourceBlob) Size() (int64, error)                 { return b.desc.Size, nil }
func (b *sourceBlob) MediaType() (types.MediaType, error)  { return b.desc.MediaType, nil }
func (b *sourceBlob) Descriptor() (*v1.Descriptor, error)  { return &b.desc, nil }
func (b *sourceBlob) DiffID() (v1.Hash, error)             { return v1.Hash{}, errNotNeeded }
func (b *sourceBlob) Uncompressed() (io.ReadCloser, error) { return nil, errNotNeeded }

func (s *blobSource) acquire() error {
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

func (s *blobSource) release() { <-s.slots }

func (s *blobSource) blobURL(digest v1.Hash) string {
	u := url.URL{Scheme: s.repo.Scheme(), Host: s.repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/%s", s.repo.RepositoryStr(), digest)}
	return u.String()
}

// Compressed streams the blob from the source registry. It holds one of the copy's read slots until the body
// is closed (the HTTP client closes an upload's body once it is sent).
func (b *sourceBlob) Compressed() (io.ReadCloser, error) {
	if err := b.src.acquire(); err != nil {
		return nil, err
	}
	body, err := b.open()
	if err != nil {
		b.src.release()
		return nil, err
	}
	return &slotBody{ReadCloser: body, release: b.src.release}, nil
}

func (b *sourceBlob) open() (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(b.src.ctx, http.MethodGet, b.src.blobURL(b.desc.Digest), nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.src.client.Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		_ = resp.Body.Close()
		if len(b.desc.URLs) > 0 && b.fallback != nil {
			return b.fromFallback()
		}
		// Classified here, as the source's answer: the push that reads the blob reports at the backup.
		return nil, classify(fmt.Errorf("reading blob %s from the source: %w", b.desc.Digest, err))
	}
	if resp.ContentLength >= 0 && resp.ContentLength != b.desc.Size {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("reading blob %s: the registry sends %d bytes, the manifest says %d", b.desc.Digest, resp.ContentLength, b.desc.Size)
	}
	return &sizedBody{ReadCloser: resp.Body, digest: b.desc.Digest, left: b.desc.Size}, nil
}

func (b *sourceBlob) fromFallback() (io.ReadCloser, error) {
	l, err := b.fallback()
	if err != nil {
		return nil, err
	}
	return l.Compressed()
}

// sizedBody fails a read that ends before, or goes past, the size the manifest gives the blob.
type sizedBody struct {
	io.ReadCloser
	digest v1.Hash
	left   int64
}

func (r *sizedBody) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.left -= int64(n)
	switch {
	case r.left < 0:
		return n, fmt.Errorf("blob %s is longer than its manifest says", r.digest)
	case errors.Is(err, io.EOF) && r.left > 0:
		return n, fmt.Errorf("blob %s ended %d bytes early: %w", r.digest, r.left, io.ErrUnexpectedEOF)
	}
	return n, err
}

// slotBody releases a read slot when closed.
type slotBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (r *slotBody) Close() error {
	err := r.ReadCloser.Close()
	r.once.Do(r.release)
	return err
}

// copyImage is a source image whose blobs the pusher reads through a blobSource. Manifests and descriptors
// are the source's, byte for byte.
type copyImage struct {
	v1.Image
	blobs *blobSource
}

func (i *copyImage) Layers() ([]v1.Layer, error) {
	m, err := i.Manifest()
	if err != nil {
		return nil, err
	}
	layers := make([]v1.Layer, 0, len(m.Layers))
	for _, d := range m.Layers {
		layers = append(layers, i.blobs.layer(d, i.sourceLayer(d.Digest)))
	}
	return layers, nil
}

// ConfigLayer implements partial.WithConfigLayer, which the pusher uses to upload the config blob.
func (i *copyImage) ConfigLayer() (v1.Layer, error) {
	m, err := i.Manifest()
	if err != nil {
		return nil, err
	}
	return i.blobs.layer(m.Config, nil), nil
}

func (i *copyImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	m, err := i.Manifest()
	if err != nil {
		return nil, err
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if d.Digest == h {
			return i.blobs.layer(d, i.sourceLayer(h)), nil
		}
	}
	return nil, fmt.Errorf("image has no blob %s", h)
}

// Descriptor keeps the image's descriptor in its index (with the platform); see partial.Descriptor.
func (i *copyImage) Descriptor() (*v1.Descriptor, error) { return partial.Descriptor(i.Image) }

func (i *copyImage) sourceLayer(h v1.Hash) func() (v1.Layer, error) {
	return func() (v1.Layer, error) { return i.Image.LayerByDigest(h) }
}

// copyIndex is a source index whose images (and blobs) the pusher reads through a blobSource. Each child
// manifest is read once: measure reads them all before the push, and the pusher is handed the same children.
type copyIndex struct {
	src   v1.ImageIndex
	ref   name.Digest // where src is read from, for messages
	blobs *blobSource

	mu       sync.Mutex
	children map[childKey]*indexChild
}

// childKey names a child of an index as the image or as the index it is asked for.
type childKey struct {
	digest v1.Hash
	index  bool
}

// indexChild is a child manifest of an index, read at most once.
type indexChild struct {
	once sync.Once
	img  *copyImage
	idx  *copyIndex
	err  error
}

var (
	_ v1.ImageIndex = (*copyIndex)(nil)
	_ v1.Image      = (*copyImage)(nil)
	_ v1.Layer      = (*sourceBlob)(nil)
)

func (x *copyIndex) MediaType() (types.MediaType, error)       { return x.src.MediaType() }
func (x *copyIndex) Digest() (v1.Hash, error)                  { return x.src.Digest() }
func (x *copyIndex) Size() (int64, error)                      { return x.src.Size() }
func (x *copyIndex) IndexManifest() (*v1.IndexManifest, error) { return x.src.IndexManifest() }
func (x *copyIndex) RawManifest() ([]byte, error)              { return x.src.RawManifest() }
func (x *copyIndex) Descriptor() (*v1.Descriptor, error)       { return partial.Descriptor(x.src) }

func (x *copyIndex) Image(h v1.Hash) (v1.Image, error) { return x.childImage(h) }

func (x *copyIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) { return x.childIndex(h) }

// childImage returns the child image h, reading its manifest the first time it is asked for.
func (x *copyIndex) childImage(h v1.Hash) (*copyImage, error) {
	c := x.child(childKey{digest: h}, func(c *indexChild) {
		img, err := x.src.Image(h)
		if err != nil {
			c.err = x.childError(h, err)
			return
		}
		c.img = &copyImage{Image: img, blobs: x.blobs}
	})
	return c.img, c.err
}

// childIndex returns the child index h, reading its manifest the first time it is asked for.
func (x *copyIndex) childIndex(h v1.Hash) (*copyIndex, error) {
	c := x.child(childKey{digest: h, index: true}, func(c *indexChild) {
		idx, err := x.src.ImageIndex(h)
		if err != nil {
			c.err = x.childError(h, err)
			return
		}
		c.idx = &copyIndex{src: idx, ref: x.ref.Context().Digest(h.String()), blobs: x.blobs}
	})
	return c.idx, c.err
}

func (x *copyIndex) child(key childKey, read func(*indexChild)) *indexChild {
	x.mu.Lock()
	if x.children == nil {
		x.children = map[childKey]*indexChild{}
	}
	c, ok := x.children[key]
	if !ok {
		c = &indexChild{}
		x.children[key] = c
	}
	x.mu.Unlock()
	c.once.Do(func() { read(c) })
	return c
}

// childError says which child of the index could not be read. A child the registry does not have is reported
// as such (see missingManifestError), not as an image that does not exist: the index the user named does.
func (x *copyIndex) childError(h v1.Hash, err error) error {
	if isNotFound(err) {
		return permanent(&missingManifestError{index: x.ref, child: h, err: err})
	}
	return fmt.Errorf("reading manifest %s, listed in the image index at %s: %w", h, x.ref, err)
}

// Layer returns a child of the index that is neither an image nor an index (an artifact blob).
func (x *copyIndex) Layer(h v1.Hash) (v1.Layer, error) {
	m, err := x.src.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if d.Digest == h {
			return x.blobs.layer(d, nil), nil
		}
	}
	return nil, fmt.Errorf("index has no child %s", h)
}
