package registry_test

import (
	"os"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
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

	binary, err := testbin.RegistryBinary()
	Expect(err).NotTo(HaveOccurred())
	distUpstream = startDistribution(binary)
	distBackup = startDistribution(binary)
})

func startDistribution(binary string, opts ...registrytest.DistributionOption) *registrytest.Registry {
	dir, err := os.MkdirTemp("", "registry-test-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	reg, err := registrytest.StartDistribution(binary, dir, opts...)
	Expect(err).NotTo(HaveOccurred(), "starting the distribution registry %q", binary)
	DeferCleanup(reg.Close)
	return reg
}
