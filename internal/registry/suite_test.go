package registry_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// The distribution registries are shared by every spec of the suite; specs keep apart by using their own
// repositories. One stands in for the source registries, the other is the backup registry.
var distUpstream, distBackup *registrytest.Registry

func TestRegistry(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Registry Suite")
}

var _ = BeforeSuite(func() {
	SetDefaultEventuallyTimeout(60 * time.Second)
	SetDefaultEventuallyPollingInterval(50 * time.Millisecond)

	binary := registryBinary()
	distUpstream = startDistribution(binary)
	distBackup = startDistribution(binary)
})

func startDistribution(binary string) *registrytest.Registry {
	dir, err := os.MkdirTemp("", "registry-test-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	reg, err := registrytest.StartDistribution(binary, dir)
	Expect(err).NotTo(HaveOccurred(), "starting the distribution registry %q", binary)
	DeferCleanup(reg.Close)
	return reg
}

// registryBinary finds the distribution registry: REGISTRY_BINARY (set by make test), else the cache that
// hack/test-binaries.sh registry fills. An empty result makes StartDistribution fail with instructions.
func registryBinary() string {
	if binary := os.Getenv("REGISTRY_BINARY"); binary != "" {
		return binary
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		cache = filepath.Join(home, ".cache")
	}
	binary := filepath.Join(cache, "image-clone-controller", "registry-v3.1.2", "registry")
	if _, err := os.Stat(binary); err != nil {
		return ""
	}
	return binary
}
