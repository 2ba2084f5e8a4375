//go:build e2e

// Package e2e proves the controller's promise on the local cluster of `make local-up`: workloads roll out on
// backup images and keep working after the public image is gone.
package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
)

var (
	// root is the repository root; the suite runs from test/e2e.
	root       = filepath.Join("..", "..")
	kubeconfig string
	k8sClient  client.Client
	// Registries and the controller's endpoints as `make local-up` starts them.
	backupHost   = "127.0.0.1:" + envOr("LOCAL_BACKUP_REGISTRY_PORT", "5001")
	upstreamHost = "127.0.0.1:" + envOr("LOCAL_UPSTREAM_REGISTRY_PORT", "5002")
	metricsURL   = "http://127.0.0.1:" + envOr("LOCAL_METRICS_PORT", "8080") + "/metrics"
	probeURL     = "http://127.0.0.1:" + envOr("LOCAL_PROBE_PORT", "8081")
	// The API server calls the controller's admission webhook here (the certificate names localhost).
	webhookHost = "localhost:" + envOr("LOCAL_WEBHOOK_PORT", "9443")
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "End-to-end Suite")
}

var _ = BeforeSuite(func() {
	// The caches that specs start (recordReplicaSets) log through controller-runtime: into the spec's output.
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	SetDefaultEventuallyTimeout(2 * time.Minute)
	SetDefaultEventuallyPollingInterval(250 * time.Millisecond)

	kubeconfig = envOr("E2E_KUBECONFIG", filepath.Join(root, ".local", "kubeconfig"))
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	Expect(err).NotTo(HaveOccurred(), "no local cluster: run `make local-up` first (`make test-e2e` does)")
	Expect(v1alpha1.AddToScheme(scheme.Scheme)).To(Succeed())
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme.Scheme})
	Expect(err).NotTo(HaveOccurred())
	Eventually(func() error {
		return k8sClient.List(context.Background(), &corev1.NamespaceList{}, client.Limit(1))
	}, "30s").Should(Succeed(), "the local cluster's API server does not answer; is `make local-up` running?")
})

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
