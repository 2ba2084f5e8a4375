package registrytest

import (
	"fmt"

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

// PushIndex pushes a random two-platform index to repo:tag on the registry and returns its digest.
func (r *Registry) PushIndex(repoTag string, layers int, layerSize int64) (v1.Hash, error) {
	idx, err := RandomIndex(layers, layerSize)
	if err != nil {
		return v1.Hash{}, err
	}
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

// Delete removes a manifest (by tag or digest) from the registry.
func (r *Registry) Delete(repoRef string) error {
	ref, err := name.ParseReference(r.Host + "/" + repoRef)
	if err != nil {
		return err
	}
	return remote.Delete(ref)
}
