// Package faults shows the controller surviving registry faults: fault-injecting middleware sits in the proxies
// of the real upstream and backup registries, and every fault must end with no workload pointed at an incomplete copy, a
// Warning Event that says what is wrong, and convergence once the fault clears.
package faults

import (
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/managertest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
)

// copyTimeout is short so that a slow drip fails within a spec; real deployments use minutes.
const copyTimeout = 4 * time.Second

var (
	k8sClient client.Client
	// upstream and backup are real distribution registries, whose proxies (Host) break requests as
	// upstreamFaults and backupFaults say; the controller reaches them only through the proxies.
	upstream, backup             *registrytest.Registry
	upstreamFaults, backupFaults *registrytest.Faults
	backupRef                    imageref.Backup
)

func TestFaults(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Registry Faults Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	SetDefaultEventuallyTimeout(90 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)

	binary, err := testbin.RegistryBinary()
	Expect(err).NotTo(HaveOccurred())
	upstream, err = registrytest.StartDistribution(binary, GinkgoT().TempDir())
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(upstream.Close)
	backup, err = registrytest.StartDistribution(binary, GinkgoT().TempDir())
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(backup.Close)
	upstreamFaults, backupFaults = &registrytest.Faults{}, &registrytest.Faults{}
	upstream.Use(upstreamFaults.Middleware)
	backup.Use(backupFaults.Middleware)
	backupRef, err = imageref.ParseBackup(backup.Host)
	Expect(err).NotTo(HaveOccurred())

	testEnv := &envtest.Environment{BinaryAssetsDirectory: testbin.EnvtestAssets()}
	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred(), "starting kube-apiserver and etcd; run `make test`, which installs them")
	DeferCleanup(testEnv.Stop)
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme.Scheme})
	Expect(err).NotTo(HaveOccurred())

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	Expect(err).NotTo(HaveOccurred())
	copier := registry.New(registry.Options{
		Mirrors:     map[string]registry.Mirror{"index.docker.io": {Registry: upstream.Host}},
		CopyTimeout: copyTimeout,
	})
	Expect(controller.SetupWithManager(mgr, copier, controller.Options{
		Backup:                  backupRef,
		IgnoredNamespaces:       []string{"kube-system"},
		MaxConcurrentReconciles: 4,
		MaxConcurrentImages:     4,
	})).To(Succeed())
	stop := managertest.Start(mgr)
	DeferCleanup(func() { Expect(stop()).To(Succeed()) })
})
