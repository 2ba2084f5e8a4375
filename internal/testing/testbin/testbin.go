// Package testbin finds the binaries that test suites start: kube-apiserver and etcd for envtest, the
// distribution registry, and the registry clients (cosign, oras) whose behaviour the suites check. `make test` passes their locations in the environment; without it, the suites use
// the cache that hack/test-binaries.sh fills, so `go test ./...` works after one `make test-binaries`.
package testbin

import (
	"fmt"
	"os"
	"path/filepath"
)

// Versions installed by hack/test-binaries.sh; keep them in step with that script.
const (
	kubeVersion     = "v1.37.2"
	registryVersion = "v3.1.2"
)

// EnvtestAssets returns the directory holding kube-apiserver and etcd: KUBEBUILDER_ASSETS, else the cache.
func EnvtestAssets() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	return filepath.Join(cacheDir(), "envtest-"+kubeVersion)
}

// RegistryBinary returns the distribution registry binary: REGISTRY_BINARY, else the cache. The error says
// how to install it.
func RegistryBinary() (string, error) {
	if binary := os.Getenv("REGISTRY_BINARY"); binary != "" {
		return binary, nil
	}
	binary := filepath.Join(cacheDir(), "registry-"+registryVersion, "registry")
	if _, err := os.Stat(binary); err != nil {
		return "", fmt.Errorf("no distribution registry binary (REGISTRY_BINARY unset and %s missing): run `make test`, or `hack/test-binaries.sh registry` once", binary)
	}
	return binary, nil
}

func cacheDir() string {
	if dir := os.Getenv("CACHE_DIR"); dir != "" {
		return dir
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "image-clone-controller")
}

// Client returns the binary of a registry client the Makefile installs into bin/ (cosign, oras): the
// environment variable envVar (make test sets COSIGN_BINARY and ORAS_BINARY), else bin/<name> of the
// repository. The error says how to install it.
func Client(name, envVar string) (string, error) {
	if binary := os.Getenv(envVar); binary != "" {
		return binary, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	binary := filepath.Join(root, "bin", name)
	if _, err := os.Stat(binary); err != nil {
		return "", fmt.Errorf("no %s binary (%s unset and %s missing): run `make test`, or `make %s` once", name, envVar, binary, name)
	}
	return binary, nil
}

// repoRoot finds the repository's root: the nearest directory upwards that holds go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
