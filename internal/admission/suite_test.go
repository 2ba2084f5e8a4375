package admission_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/yaml"

	"github.com/image-clone-controller/image-clone-controller/internal/admission"
	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/managertest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
)

// The suite runs the reconciler and the webhook in one manager, as the controller does, against envtest's API
// server, which calls the webhook as a cluster's would.
const (
	// suiteWebhook is the MutatingWebhookConfiguration that envtest installs for the suite's manager.
	suiteWebhook = "image-clone-controller"
	// ignoredNamespace is on the suite's ignore list, as if --ignore-namespaces named it.
	ignoredNamespace = "ignored-by-flag"
	// ownWebhookLabel marks the namespaces of specs that run a webhook of their own (see startOwnWebhook); the
	// suite's webhook leaves them out.
	ownWebhookLabel = "webhook-test"
)

var (
	restConfig *rest.Config
	k8sClient  client.Client
	upstream   *registrytest.Registry // stands in for Docker Hub through --source-mirror
	backupReg  *registrytest.Registry
	backup     imageref.Backup
	copier     *registry.Copier
	// finder is the webhook's view of the copier, which specs can make fail or slow.
	finder *faultyFinder
)

func TestAdmission(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Admission Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	SetDefaultEventuallyTimeout(60 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)

	testEnv := &envtest.Environment{
		BinaryAssetsDirectory: testbin.EnvtestAssets(),
		WebhookInstallOptions: envtest.WebhookInstallOptions{
			MutatingWebhooks: []*admissionregistrationv1.MutatingWebhookConfiguration{shippedConfiguration()},
		},
	}
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
	copier = registry.New(registry.Options{
		Mirrors:     map[string]registry.Mirror{"index.docker.io": {Registry: upstream.Host}},
		TagCacheTTL: time.Minute,
	})
	finder = &faultyFinder{next: copier}

	install := testEnv.WebhookInstallOptions
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: install.LocalServingHost, Port: install.LocalServingPort, CertDir: install.LocalServingCertDir,
		}),
	})
	Expect(err).NotTo(HaveOccurred())
	ignored := []string{"kube-system", ignoredNamespace}
	Expect(controller.SetupWithManager(mgr, copier, controller.Options{
		Backup: backup, IgnoredNamespaces: ignored, MaxConcurrentReconciles: 2, MaxConcurrentImages: 4, WorkloadPullSecrets: true,
	})).To(Succeed())
	Expect(admission.SetupWithManager(mgr, finder, admission.Options{
		Backup: backup, IgnoredNamespaces: ignored, WorkloadPullSecrets: true, Budget: time.Second,
	})).To(Succeed())
	stop := managertest.Start(mgr)
	DeferCleanup(func() { Expect(stop()).To(Succeed()) })
	waitForWebhook(net.JoinHostPort(install.LocalServingHost, strconv.Itoa(install.LocalServingPort)))
})

// shippedConfiguration is the MutatingWebhookConfiguration of config/components/webhook, as users install it,
// except that it leaves out the namespaces of the specs that run a webhook of their own. envtest turns its
// Service into the local URL and CA of the suite's webhook server.
func shippedConfiguration() *admissionregistrationv1.MutatingWebhookConfiguration {
	GinkgoHelper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "components", "webhook", "mutating_webhook_configuration.yaml"))
	Expect(err).NotTo(HaveOccurred())
	config := &admissionregistrationv1.MutatingWebhookConfiguration{}
	Expect(yaml.UnmarshalStrict(data, config)).To(Succeed())
	Expect(config.Name).To(Equal(suiteWebhook))
	Expect(config.Webhooks).To(HaveLen(1))
	sel := config.Webhooks[0].NamespaceSelector
	sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{Key: ownWebhookLabel, Operator: metav1.LabelSelectorOpDoesNotExist})
	return config
}

// webhookConfiguration is a configuration like the shipped one, named name, for the namespaces that match
// namespaces; its clientConfig is for the caller to set.
func webhookConfiguration(name string, namespaces *metav1.LabelSelector) *admissionregistrationv1.MutatingWebhookConfiguration {
	GinkgoHelper()
	config := shippedConfiguration()
	config.Name = name
	config.Webhooks[0].NamespaceSelector = namespaces
	return config
}

// waitForWebhook waits until the webhook server accepts TLS connections at addr.
func waitForWebhook(addr string) {
	GinkgoHelper()
	Eventually(func() error {
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(background, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}).Should(Succeed())
}

// background is the context of helpers that run outside a spec's own.
var background = context.Background()
