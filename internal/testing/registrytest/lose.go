package registrytest

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// LoseRepository makes the registry lose repository repo and every tag in it, as lost storage, garbage
// collection, a lifecycle policy or an operator's delete would. The distribution registry loses the
// repository's storage on disk; the in-process registry, whose storage cannot be reached, has each of tags'
// manifests deleted through the API, by tag and by digest.
func (r *Registry) LoseRepository(repo string, tags ...string) error {
	if r.dataDir != "" {
		dir := filepath.Join(r.dataDir, "docker", "registry", "v2", "repositories", filepath.FromSlash(repo))
		if _, err := os.Stat(dir); err != nil {
			return fmt.Errorf("repository %s has no storage to lose: %w", repo, err)
		}
		return os.RemoveAll(dir)
	}
	for _, tag := range tags {
		ref, err := name.NewTag(r.Backend + "/" + repo + ":" + tag)
		if err != nil {
			return err
		}
		desc, err := remote.Head(ref)
		if err != nil {
			return fmt.Errorf("finding %s to lose it: %w", ref, err)
		}
		for _, del := range []name.Reference{ref, ref.Context().Digest(desc.Digest.String())} {
			if err := remote.Delete(del); err != nil {
				return fmt.Errorf("deleting %s: %w", del, err)
			}
		}
	}
	return nil
}
