package controller_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
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

// ignoredNamespace is on the controller's ignore list in this suite.
const ignoredNamespace = "ignored-by-flag"

// The suite runs the controller as if deployed in controllerNamespace with --backup-pull-secret, so every
// workload it points at the backup also gets that pull secret.
const (
	controllerNamespace = "image-clone-system"
	backupPullSecret    = "backup-registry-pull"
)

// restConfig reaches the envtest API server, for specs that start a manager of their own.
var restConfig *rest.Config

var (
	k8sClient client.Client
	upstream  *registrytest.Registry // stands in for Docker Hub and ghcr.io through --source-mirror
	backupReg *registrytest.Registry
	backup    imageref.Backup
	gate      *gatedCopier
)

func TestController(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controller Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	SetDefaultEventuallyTimeout(60 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)

	testEnv := &envtest.Environment{BinaryAssetsDirectory: testbin.EnvtestAssets()}
	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred(), "starting kube-apiserver and etcd; run `make test`, which installs them")
	DeferCleanup(testEnv.Stop)
	restConfig = cfg

	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme.Scheme})
	Expect(err).NotTo(HaveOccurred())

	upstream = registrytest.NewInProcess()
	DeferCleanup(upstream.Close)
	backupReg = registrytest.NewInProcess()
	DeferCleanup(backupReg.Close)
	backup, err = imageref.ParseBackup(backupReg.Host + "/backup")
	Expect(err).NotTo(HaveOccurred())

	gate = &gatedCopier{next: registry.New(copierOptions())}
	createBackupPullSecretSource()
	startManager(cfg, gate)
})

// copierOptions are the options of the suite's copier: Docker Hub and ghcr.io are served by the upstream
// registry.
func copierOptions() registry.Options {
	return registry.Options{
		Mirrors: map[string]registry.Mirror{
			"index.docker.io": {Registry: upstream.Host},
			"ghcr.io":         {Registry: upstream.Host, Prefix: "ghcr"},
		},
	}
}

// createBackupPullSecretSource creates the controller's namespace and the backup pull secret the controller
// copies from there.
func createBackupPullSecretSource() {
	ctx := context.Background()
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controllerNamespace}})).To(Succeed())
	Expect(k8sClient.Create(ctx, dockerConfigSecret(controllerNamespace, backupPullSecret, backupReg.Host, "reader", "reader-pass"))).To(Succeed())
}

func startManager(cfg *rest.Config, copier controller.ImageCopier) {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(controller.SetupWithManager(mgr, copier, controller.Options{
		Backup:                  backup,
		IgnoredNamespaces:       []string{"kube-system", ignoredNamespace, controllerNamespace},
		MaxConcurrentReconciles: 2,
		MaxConcurrentImages:     4,
		WorkloadPullSecrets:     true,
		BackupPullSecret:        backupPullSecret,
		OwnNamespace:            controllerNamespace,
		// Every reconcile compares the copies with the source, so specs can see a rotation applied at once.
		BackupPullSecretRefresh: time.Nanosecond,
	})).To(Succeed())

	stop := managertest.Start(mgr)
	DeferCleanup(func() { Expect(stop()).To(Succeed()) })
}
