package registrytest

import (
	"context"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Platforms of the multi-arch images that tests push.
var Platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// RandomIndex builds an OCI index with one random image per platform, each with layers of layerSize bytes.
func RandomIndex(layers int, layerSize int64) (v1.ImageIndex, error) {
	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, p := range Platforms {
		img, err := random.Image(layerSize, int64(layers))
		if err != nil {
			return nil, err
		}
		// A multi-platform image declares its platform in its config too, as built images do.
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = p.OS, p.Architecture
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	return idx, nil
}

// NestedIndex builds a random one-layer image wrapped in levels OCI indexes, each listing the next.
func NestedIndex(levels int) (v1.ImageIndex, error) {
	img, err := random.Image(1024, 1)
	if err != nil {
		return nil, err
	}
	var child mutate.Appendable = img
	var idx v1.ImageIndex
	for range levels {
		idx = mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{Add: child})
		child = idx
	}
	return idx, nil
}

// ExtendIndex returns an index with the platforms of base, whose images have the layers of base's images
// followed by layers new random layers of layerSize bytes each, as an image built on top of another has.
func ExtendIndex(base v1.ImageIndex, layers int, layerSize int64) (v1.ImageIndex, error) {
	m, err := base.IndexManifest()
	if err != nil {
		return nil, err
	}
	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, child := range m.Manifests {
		img, err := base.Image(child.Digest)
		if err != nil {
			return nil, err
		}
		for range layers {
			l, err := random.Layer(layerSize, types.DockerLayer)
			if err != nil {
				return nil, err
			}
			if img, err = mutate.AppendLayers(img, l); err != nil {
				return nil, err
			}
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: child.Platform},
		})
	}
	return idx, nil
}

// PushIndex pushes a random two-platform index to repo:tag on the registry and returns its digest.
func (r *Registry) PushIndex(repoTag string, layers int, layerSize int64) (v1.Hash, error) {
	idx, err := RandomIndex(layers, layerSize)
	if err != nil {
		return v1.Hash{}, err
	}
	return r.WriteIndex(repoTag, idx)
}

// WriteIndex pushes idx to repo:tag on the registry and returns its digest.
func (r *Registry) WriteIndex(repoTag string, idx v1.ImageIndex) (v1.Hash, error) {
	ref, err := name.ParseReference(r.Host + "/" + repoTag)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", ref, err)
	}
	return idx.Digest()
}

// PushImage pushes a random single-platform image to repo:tag on the registry and returns its digest.
func (r *Registry) PushImage(repoTag string, layers int, layerSize int64) (v1.Hash, error) {
	img, err := random.Image(layerSize, int64(layers))
	if err != nil {
		return v1.Hash{}, err
	}
	ref, err := name.ParseReference(r.Host + "/" + repoTag)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(ref, img); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", ref, err)
	}
	return img.Digest()
}

// DeleteBlob unlinks a blob from repository repo: the repository no longer serves it, while other
// repositories of the registry still do.
func (r *Registry) DeleteBlob(repo string, digest v1.Hash) error {
	ref, err := name.NewDigest(r.Host + "/" + repo + "@" + digest.String())
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodDelete,
		fmt.Sprintf("%s://%s/v2/%s/blobs/%s", ref.Context().Scheme(), r.Host, repo, digest), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("deleting blob %s from %s: %s", digest, repo, resp.Status)
	}
	return nil
}

// Delete removes a manifest (by tag or digest) from the registry.
func (r *Registry) Delete(repoRef string) error {
	ref, err := name.ParseReference(r.Host + "/" + repoRef)
	if err != nil {
		return err
	}
	return remote.Delete(ref)
}
