package inventory_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/inventory"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/managertest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
)

// The suite's keeper verifies every verifyInterval and deep-verifies every deepEvery-th time, so that specs
// see losses found and copies restored within seconds.
const (
	verifyInterval = 300 * time.Millisecond
	deepEvery      = 3
)

// retentionNamespaces are left alone by the suite's workload reconciler: the retention specs (and the spec of
// usage writes) run keepers of their own (with backup registries of their own) on the workloads there.
var retentionNamespaces = []string{"retention", "retention-dry-run", "retention-refused", "retention-race", "usage-writes"}

var (
	restConfig *rest.Config
	k8sClient  client.Client
	scheme     = runtime.NewScheme()
	// upstream stands in for Docker Hub through --source-mirror; backupReg is a distribution registry.
	upstream  *registrytest.Registry
	backupReg *registrytest.Registry
	backup    imageref.Backup
)

func TestInventory(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Inventory Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	SetDefaultEventuallyTimeout(60 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))

	testEnv := &envtest.Environment{
		BinaryAssetsDirectory: testbin.EnvtestAssets(),
		// The CRD as shipped.
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred(), "starting kube-apiserver and etcd; run `make test`, which installs them")
	DeferCleanup(testEnv.Stop)
	restConfig = cfg
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	upstream = registrytest.NewInProcess()
	DeferCleanup(upstream.Close)
	binary, err := testbin.RegistryBinary()
	Expect(err).NotTo(HaveOccurred())
	backupReg, err = registrytest.StartDistribution(binary, GinkgoT().TempDir())
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(backupReg.Close)
	backup, err = imageref.ParseBackup(backupReg.Host + "/backup")
	Expect(err).NotTo(HaveOccurred())

	for _, ns := range retentionNamespaces {
		createNamespace(ns)
	}
	startManager(backup, inventory.Options{VerifyInterval: verifyInterval, DeepVerifyEvery: deepEvery}, true)
})

// copierOptions are the options of the suite's copiers: Docker Hub is served by the upstream registry.
func copierOptions() registry.Options {
	return registry.Options{Mirrors: map[string]registry.Mirror{"index.docker.io": {Registry: upstream.Host}}}
}

// startManager starts a manager whose keeper keeps the copies in to, with the workload reconciler too when
// reconcile is set, and returns its copier (which reports to the keeper). It stops when the spec or suite
// that started it ends.
func startManager(to imageref.Backup, opts inventory.Options, reconcile bool) *registry.Copier {
	GinkgoHelper()
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultTransform: controller.TrimForCache(), ByObject: inventory.CacheByObject()},
		// Several managers run side by side in the suite.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	opts.Backup = to
	var keeper *inventory.Keeper
	copierOpts := copierOptions()
	copierOpts.OnBackup = func(o registry.Observation) { keeper.Observe(o) }
	copierOpts.RecordedDigest = func(t name.Tag) (v1.Hash, bool) { return keeper.RecordedDigest(t) }
	copier := registry.New(copierOpts)
	keeper = inventory.New(copier, opts)
	Expect(keeper.SetupWithManager(mgr)).To(Succeed())
	if reconcile {
		Expect(controller.SetupWithManager(mgr, copier, controller.Options{
			Backup:                  to,
			IgnoredNamespaces:       append([]string{"kube-system"}, retentionNamespaces...),
			MaxConcurrentReconciles: 2,
			MaxConcurrentImages:     4,
		})).To(Succeed())
	}
	stop := managertest.Start(mgr)
	DeferCleanup(func(ctx context.Context) { Expect(stop()).To(Succeed()) })
	return copier
}
