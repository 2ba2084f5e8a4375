package registry

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// DockerConfigKeychain returns a keychain that reads credentials from one Docker config file, such as the
// .dockerconfigjson key of a kubernetes.io/dockerconfigjson Secret mounted into the controller's pod.
//
// The file is read on every lookup, so a rotated Secret takes effect without a restart, and a missing file
// (the Secret is optional) means anonymous access. A file that exists but cannot be parsed is an error now,
// so that a broken Secret fails at startup rather than as 401s later.
func DockerConfigKeychain(path string) (authn.Keychain, error) {
	k := &dockerConfigKeychain{path: path}
	if _, err := k.load(); err != nil {
		return nil, err
	}
	return k, nil
}

type dockerConfigKeychain struct{ path string }

// load returns the parsed file, or nil if it does not exist.
func (k *dockerConfigKeychain) load() (*configfile.ConfigFile, error) {
	f, err := os.Open(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening registry config: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("parsing registry config %s: %w", k.path, err)
	}
	return cf, nil
}

func (k *dockerConfigKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	cf, err := k.load()
	if err != nil || cf == nil {
		return authn.Anonymous, err
	}
	key := target.RegistryStr()
	if key == name.DefaultRegistry {
		key = authn.DefaultAuthKey // Docker stores Docker Hub credentials under its legacy URL
	}
	cfg, err := cf.GetAuthConfig(key)
	if err != nil {
		// Deliberately not wrapping err: credential helpers may echo secrets in their output.
		return nil, fmt.Errorf("reading credentials for %s from the registry config failed", key)
	}
	if !hasCredentials(cfg) && target.RegistryStr() == name.DefaultRegistry {
		// Pull secrets may name Docker Hub by host rather than by its legacy URL, as the kubelet accepts.
		for _, alias := range []string{name.DefaultRegistry, "docker.io"} {
			if ac := cf.GetAuthConfigs()[alias]; hasCredentials(ac) {
				cfg = ac
				break
			}
		}
	}
	if !hasCredentials(cfg) {
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

func hasCredentials(cfg types.AuthConfig) bool {
	return cfg.Username != "" || cfg.Password != "" || cfg.Auth != "" || cfg.IdentityToken != "" || cfg.RegistryToken != ""
}
