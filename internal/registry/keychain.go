package registry

import (
	"fmt"
	"os"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// DockerConfigKeychain returns a keychain that reads credentials from one Docker config file, such as the
// .dockerconfigjson key of a kubernetes.io/dockerconfigjson Secret mounted into the controller's pod.
// Registries without an entry are accessed anonymously.
func DockerConfigKeychain(path string) (authn.Keychain, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening registry config: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("parsing registry config %s: %w", path, err)
	}
	return &dockerConfigKeychain{file: cf}, nil
}

type dockerConfigKeychain struct{ file *configfile.ConfigFile }

func (k *dockerConfigKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	key := target.RegistryStr()
	if key == name.DefaultRegistry {
		key = authn.DefaultAuthKey // Docker stores Docker Hub credentials under its legacy URL
	}
	cfg, err := k.file.GetAuthConfig(key)
	if err != nil {
		// Deliberately not wrapping err: helpers may echo secrets in their output.
		return nil, fmt.Errorf("reading credentials for %s from the registry config failed", key)
	}
	if cfg.Username == "" && cfg.Password == "" && cfg.Auth == "" && cfg.IdentityToken == "" && cfg.RegistryToken == "" {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username:      cfg.Username,
		Password:      cfg.Password,
		Auth:          cfg.Auth,
		IdentityToken: cfg.IdentityToken,
		RegistryToken: cfg.RegistryToken,
	}), nil
}
