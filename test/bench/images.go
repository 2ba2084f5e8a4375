package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// layerSpec describes a generated layer: the same seed and size always give the same bytes, so images share a
// layer by using the same spec.
type layerSpec struct {
	seed string
	size int64 // approximate size of the blob
}

// imageSpec describes a generated image: the layers of each platform of a two-platform index.
type imageSpec struct {
	// repoTag is where the image is pushed in the source registry, e.g. "bench/cold:v1".
	repoTag string
	// layers holds the layers of each platform, in platform order (see platforms).
	layers [][]layerSpec
}

var platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// pushedImage is an image in the source registry.
type pushedImage struct {
	repoTag string
	digest  v1.Hash
	// blobs maps every blob (layers and configs) to its size; manifests are not blobs.
	blobs map[v1.Hash]int64
}

// size is the number of blob bytes in the image.
func (p pushedImage) size() int64 {
	var n int64
	for _, s := range p.blobs {
		n += s
	}
	return n
}

// pusher uploads generated images to a registry. Layers that several images share are generated and
// uploaded once.
type pusher struct {
	host   string
	client *http.Client

	mu     sync.Mutex
	layers map[layerSpec]v1.Descriptor // uploaded layers with their descriptors
	diffID map[layerSpec]v1.Hash
	repo   map[layerSpec]string // the repository a layer was uploaded to
}

func newPusher(host string) *pusher {
	return &pusher{
		host:   host,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		layers: map[layerSpec]v1.Descriptor{},
		diffID: map[layerSpec]v1.Hash{},
		repo:   map[layerSpec]string{},
	}
}

// push generates spec and pushes it as an OCI index of one image per platform.
func (p *pusher) push(ctx context.Context, spec imageSpec) (pushedImage, error) {
	repo, tag, _ := strings.Cut(spec.repoTag, ":")
	img := pushedImage{repoTag: spec.repoTag, blobs: map[v1.Hash]int64{}}
	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for i, pl := range platforms {
		layers := make([]v1.Descriptor, len(spec.layers[i]))
		diffIDs := make([]v1.Hash, len(spec.layers[i]))
		// Two layers are generated at a time: generation and upload overlap, and memory stays bounded.
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(2)
		for j, ls := range spec.layers[i] {
			g.Go(func() error {
				d, diffID, err := p.layer(gctx, repo, ls)
				layers[j], diffIDs[j] = d, diffID
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return pushedImage{}, err
		}
		config, err := json.Marshal(v1.ConfigFile{
			Architecture: pl.Architecture,
			OS:           pl.OS,
			RootFS:       v1.RootFS{Type: "layers", DiffIDs: diffIDs},
			Config:       v1.Config{Labels: map[string]string{"bench.image": spec.repoTag}},
		})
		if err != nil {
			return pushedImage{}, err
		}
		configDesc := v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(config)), Digest: sha256Hash(config)}
		if err := p.uploadBlob(ctx, repo, configDesc.Digest, config); err != nil {
			return pushedImage{}, err
		}
		manifest, err := json.Marshal(v1.Manifest{
			SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: configDesc, Layers: layers,
		})
		if err != nil {
			return pushedImage{}, err
		}
		digest := sha256Hash(manifest)
		if err := p.putManifest(ctx, repo, digest.String(), types.OCIManifestSchema1, manifest); err != nil {
			return pushedImage{}, err
		}
		index.Manifests = append(index.Manifests, v1.Descriptor{
			MediaType: types.OCIManifestSchema1, Size: int64(len(manifest)), Digest: digest, Platform: &pl,
		})
		img.blobs[configDesc.Digest] = configDesc.Size
		for _, l := range layers {
			img.blobs[l.Digest] = l.Size
		}
	}
	raw, err := json.Marshal(index)
	if err != nil {
		return pushedImage{}, err
	}
	if err := p.putManifest(ctx, repo, tag, types.OCIImageIndex, raw); err != nil {
		return pushedImage{}, err
	}
	img.digest = sha256Hash(raw)
	return img, nil
}

// layer generates and uploads the layer of spec to repo, unless it was uploaded already.
func (p *pusher) layer(ctx context.Context, repo string, spec layerSpec) (v1.Descriptor, v1.Hash, error) {
	p.mu.Lock()
	d, ok := p.layers[spec]
	diffID, from := p.diffID[spec], p.repo[spec]
	p.mu.Unlock()
	if ok {
		// A repository holds a blob of another repository of the same registry once it is mounted there.
		return d, diffID, p.mount(ctx, repo, from, d.Digest)
	}
	blob, diffID, err := generateLayer(spec)
	if err != nil {
		return v1.Descriptor{}, v1.Hash{}, err
	}
	d = v1.Descriptor{MediaType: types.OCILayer, Size: int64(len(blob)), Digest: sha256Hash(blob)}
	if err := p.uploadBlob(ctx, repo, d.Digest, blob); err != nil {
		return v1.Descriptor{}, v1.Hash{}, err
	}
	p.mu.Lock()
	p.layers[spec], p.diffID[spec], p.repo[spec] = d, diffID, repo
	p.mu.Unlock()
	return d, diffID, nil
}

// generateLayer returns a gzip stream (stored, not compressed, so it is fast to make and incompressible like
// real compressed layers) of a tar archive holding one file of pseudo-random bytes, and the tar's digest.
func generateLayer(spec layerSpec) ([]byte, v1.Hash, error) {
	content := max(spec.size-4096, 1) // leaves room for the tar and gzip framing
	var blob bytes.Buffer
	blob.Grow(int(spec.size) + 64<<10)
	gz, err := gzip.NewWriterLevel(&blob, gzip.NoCompression)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(gz, diff))
	if err := tw.WriteHeader(&tar.Header{
		Name: "data/" + spec.seed, Mode: 0o644, Size: content, Typeflag: tar.TypeReg, Format: tar.FormatPAX,
	}); err != nil {
		return nil, v1.Hash{}, err
	}
	if _, err := io.CopyN(tw, rand.NewChaCha8(sha256.Sum256([]byte(spec.seed))), content); err != nil {
		return nil, v1.Hash{}, err
	}
	if err := tw.Close(); err != nil {
		return nil, v1.Hash{}, err
	}
	if err := gz.Close(); err != nil {
		return nil, v1.Hash{}, err
	}
	return blob.Bytes(), v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", diff.Sum(nil))}, nil
}

func sha256Hash(b []byte) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(b))}
}

// uploadBlob uploads blob monolithically (POST, then PUT with the content).
func (p *pusher) uploadBlob(ctx context.Context, repo string, digest v1.Hash, blob []byte) error {
	loc, err := startUpload(ctx, p.client, p.host, repo, "")
	if err != nil {
		return err
	}
	return finishUpload(ctx, p.client, loc, digest, bytes.NewReader(blob), int64(len(blob)))
}

// mount makes a blob of repository from part of repo.
func (p *pusher) mount(ctx context.Context, repo, from string, digest v1.Hash) error {
	if repo == from {
		return nil
	}
	loc, err := startUpload(ctx, p.client, p.host, repo, "mount="+digest.String()+"&from="+url.QueryEscape(from))
	if err != nil {
		return err
	}
	if loc != "" {
		return fmt.Errorf("registry did not mount %s from %s into %s", digest, from, repo)
	}
	return nil
}

func (p *pusher) putManifest(ctx context.Context, repo, ref string, mt types.MediaType, raw []byte) error {
	return putManifest(ctx, p.client, p.host, repo, ref, mt, raw)
}

// startUpload starts a blob upload in repo (POST /v2/<repo>/blobs/uploads/?query) and returns the location to
// upload to, or "" if the registry answered 201 Created (a mount succeeded).
func startUpload(ctx context.Context, client *http.Client, host, repo, query string) (string, error) {
	u := fmt.Sprintf("http://%s/v2/%s/blobs/uploads/", host, repo)
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusCreated:
		return "", nil
	case http.StatusAccepted:
		loc, err := resp.Location()
		if err != nil {
			return "", err
		}
		return loc.String(), nil
	default:
		return "", fmt.Errorf("POST %s: %s", u, resp.Status)
	}
}

// finishUpload sends the whole blob to an upload location with PUT ?digest=.
func finishUpload(ctx context.Context, client *http.Client, location string, digest v1.Hash, body io.Reader, size int64) error {
	u, err := url.Parse(location)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("digest", digest.String())
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT blob %s: %s", digest, resp.Status)
	}
	return nil
}

func putManifest(ctx context.Context, client *http.Client, host, repo, ref string, mt types.MediaType, raw []byte) error {
	u := fmt.Sprintf("http://%s/v2/%s/manifests/%s", host, repo, ref)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", string(mt))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("PUT %s: %s %s", u, resp.Status, body)
	}
	return nil
}

// drain reads what is left of a response body and closes it, so the connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
}

// Sizes of the generated images; smoke mode shrinks them.
type sizes struct {
	big, small, many int64
}

func (env *benchEnv) sizes() sizes {
	if env.smoke {
		return sizes{big: 256 << 10, small: 64 << 10, many: 16 << 10}
	}
	return sizes{big: 64 << 20, small: 8 << 20, many: 8 << 20}
}

// Images the rows copy.
const (
	// coldImage is the 2-platform index of 4 big layers per platform (8 × 64 MiB = 512 MiB).
	coldImage = "bench/cold:v1"
	// sharedImage shares 3 of the 4 layers of each platform with coldImage and adds a small one.
	sharedImage = "bench/shared:v1"
	// manyImages is how many distinct images the parallelism row copies at once (bench/many-N:v1).
	manyImages = 20
)

func (env *benchEnv) imageSpec(repoTag string) (imageSpec, error) {
	sz := env.sizes()
	spec := imageSpec{repoTag: repoTag, layers: make([][]layerSpec, len(platforms))}
	var n int
	switch {
	case repoTag == coldImage:
		for p := range platforms {
			for j := range 4 {
				spec.layers[p] = append(spec.layers[p], layerSpec{seed: fmt.Sprintf("cold-%d-%d", p, j), size: sz.big})
			}
		}
	case repoTag == sharedImage:
		cold, _ := env.imageSpec(coldImage)
		for p := range platforms {
			spec.layers[p] = append(append([]layerSpec(nil), cold.layers[p][:3]...), layerSpec{seed: fmt.Sprintf("shared-%d", p), size: sz.small})
		}
	case scanMany(repoTag, &n):
		for p := range platforms {
			for j := range 2 {
				spec.layers[p] = append(spec.layers[p], layerSpec{seed: fmt.Sprintf("many-%d-%d-%d", n, p, j), size: sz.many})
			}
		}
	default:
		return imageSpec{}, fmt.Errorf("no image %s", repoTag)
	}
	return spec, nil
}

func manyImage(i int) string { return fmt.Sprintf("bench/many-%d:v1", i) }

func scanMany(repoTag string, n *int) bool {
	_, err := fmt.Sscanf(repoTag, "bench/many-%d:v1", n)
	return err == nil
}

// image returns repoTag in the source registry, generating and pushing it on first use.
func (env *benchEnv) image(ctx context.Context, repoTag string) (pushedImage, error) {
	if img, ok := env.images[repoTag]; ok {
		return img, nil
	}
	src, err := env.sourceRegistry()
	if err != nil {
		return pushedImage{}, err
	}
	spec, err := env.imageSpec(repoTag)
	if err != nil {
		return pushedImage{}, err
	}
	if env.pusher == nil {
		env.pusher = newPusher(src.Backend)
		env.images = map[string]pushedImage{}
	}
	img, err := env.pusher.push(ctx, spec)
	if err != nil {
		return pushedImage{}, fmt.Errorf("pushing %s: %w", repoTag, err)
	}
	env.images[repoTag] = img
	return img, nil
}
