package admission_test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/image-clone-controller/image-clone-controller/internal/admission"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/managertest"
)

// These specs run a second manager as the controller runs in a cluster: it generates its certificate with the
// rotator, injects the CA into a webhook configuration of its own (which the API server calls at localhost,
// for the namespaces labelled ownWebhookLabel=rotation), adds the backup pull secret, and never leads: another
// holder keeps the lease, so only what every replica runs is running.
var _ = Describe("a replica that generates its own certificate", Ordered, func() {
	const (
		secretName = "webhook-cert" //nolint:gosec // the name of a Secret, not a credential
		pullSecret = "backup-pull"
		label      = "rotation"
	)
	var (
		ownNamespace string
		config       string
		addr         string
		certDir      string
		ready        <-chan struct{}
	)

	BeforeAll(func(ctx SpecContext) {
		ownNamespace = newNamespace(nil, nil)
		config = unique("own-webhook")
		port := freePort()
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		certDir = GinkgoT().TempDir()

		own := webhookConfiguration(config, &metav1.LabelSelector{MatchLabels: map[string]string{ownWebhookLabel: label}})
		own.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{
			URL: ptr.To("https://localhost:" + strconv.Itoa(port) + admission.Path)}
		Expect(k8sClient.Create(ctx, own)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(k8sClient.Delete(ctx, own)).To(Succeed()) })

		// Someone else leads for an hour.
		Expect(k8sClient.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: ownNamespace, Name: "leader"},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("another-replica"), LeaseDurationSeconds: ptr.To[int32](3600),
				RenewTime: &metav1.MicroTime{Time: time.Now()}, AcquireTime: &metav1.MicroTime{Time: time.Now()}},
		})).To(Succeed())

		serving := admission.NewServingCertificate(certDir)
		mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
			Metrics:                 metricsserver.Options{BindAddress: "0"},
			HealthProbeBindAddress:  "0",
			LeaderElection:          true,
			LeaderElectionID:        "leader",
			LeaderElectionNamespace: ownNamespace,
			WebhookServer: webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port,
				TLSOpts: []func(*tls.Config){serving.Configure}}),
		})
		Expect(err).NotTo(HaveOccurred())
		ignored := []string{"kube-system", ignoredNamespace, ownNamespace}
		Expect(admission.SetupWithManager(mgr, copier, admission.Options{
			Backup: backup, IgnoredNamespaces: ignored, BackupPullSecret: pullSecret,
		})).To(Succeed())
		ready, err = admission.RotateCertificates(mgr, serving, admission.CertOptions{
			Namespace: ownNamespace, Secret: secretName, Service: "image-clone-controller-webhook",
			ExtraNames: []string{"localhost"}, Dir: certDir, Configuration: config,
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(admission.KeepNamespaceSelector(mgr, config, ignored)).To(Succeed())
		stop := managertest.Start(mgr)
		DeferCleanup(func() { Expect(stop()).To(Succeed()) })
	})

	// servedCertificate returns the certificate the webhook serves.
	servedCertificate := func() (*x509.Certificate, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reads what is served
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0], nil
	}
	// caBundle returns the CA the webhook configuration trusts.
	caBundle := func(g Gomega) []byte {
		c := &admissionregistrationv1.MutatingWebhookConfiguration{}
		g.Expect(k8sClient.Get(background, client.ObjectKey{Name: config}, c)).To(Succeed())
		return c.Webhooks[0].ClientConfig.CABundle
	}
	// verified reports whether the served certificate is valid for localhost under the configuration's CA.
	verified := func(g Gomega) {
		cert, err := servedCertificate()
		g.Expect(err).NotTo(HaveOccurred())
		pool := x509.NewCertPool()
		g.Expect(pool.AppendCertsFromPEM(caBundle(g))).To(BeTrue(), "the CA is injected")
		_, err = cert.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: pool})
		g.Expect(err).NotTo(HaveOccurred())
		_, err = cert.Verify(x509.VerifyOptions{DNSName: "image-clone-controller-webhook." + ownNamespace + ".svc", Roots: pool})
		g.Expect(err).NotTo(HaveOccurred())
	}

	It("becomes ready once it serves a certificate whose CA it injected, without leading", func() {
		Eventually(ready).Should(BeClosed())
		Eventually(verified).Should(Succeed())
		for _, file := range []string{"tls.crt", "tls.key"} {
			Expect(filepath.Join(certDir, file)).To(BeAnExistingFile())
		}
	})

	It("keeps the ignored namespaces out of its webhook configuration's selector", func() {
		Eventually(func(g Gomega) {
			c := &admissionregistrationv1.MutatingWebhookConfiguration{}
			g.Expect(k8sClient.Get(background, client.ObjectKey{Name: config}, c)).To(Succeed())
			sel := c.Webhooks[0].NamespaceSelector
			g.Expect(sel.MatchLabels).To(HaveKeyWithValue(ownWebhookLabel, label), "the selector's own terms are kept")
			g.Expect(sel.MatchExpressions).To(ContainElement(metav1.LabelSelectorRequirement{
				Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn,
				Values: []string{"kube-system", ignoredNamespace, ownNamespace}}))
		}).Should(Succeed())
	})

	It("adds the backup pull secret where the namespace holds it, and leaves other namespaces to the reconciler", func(ctx SpecContext) {
		image := backedUp("pullsecret")
		withSecret := newNamespace(map[string]string{ownWebhookLabel: label}, nil)
		Expect(k8sClient.Create(ctx, dockerConfigSecret(withSecret, pullSecret, backupReg.Host, "reader", "reader-pass"))).To(Succeed())
		without := newNamespace(map[string]string{ownWebhookLabel: label}, nil)

		Eventually(func(g Gomega) {
			d := newDeployment(withSecret, unique("app"), nil, []string{image})
			g.Expect(k8sClient.Create(ctx, d)).To(Succeed())
			g.Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(backupOf(image)))
			g.Expect(d.Spec.Template.Spec.ImagePullSecrets).To(Equal([]corev1.LocalObjectReference{{Name: pullSecret}}))
		}).Should(Succeed(), "rewritten once the API server trusts the injected CA")

		d := newDeployment(without, "app", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(image))
		Expect(d.Spec.Template.Spec.ImagePullSecrets).To(BeEmpty())
	})

	It("serves a new certificate, trusted through the new CA, when the Secret is renewed", func(ctx SpecContext) {
		Eventually(verified).Should(Succeed())
		before, err := servedCertificate()
		Expect(err).NotTo(HaveOccurred())
		oldCA := caBundle(Default)

		By("emptying the Secret, as a lost or expired CA would need")
		secret := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ownNamespace, Name: secretName}, secret)).To(Succeed())
		secret.Data = nil
		Expect(k8sClient.Update(ctx, secret)).To(Succeed())

		Eventually(func(g Gomega) {
			g.Expect(caBundle(g)).NotTo(Equal(oldCA))
			after, err := servedCertificate()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(sha256.Sum256(after.Raw)).NotTo(Equal(sha256.Sum256(before.Raw)))
			verified(g)
		}).Should(Succeed())
		written, err := os.ReadFile(filepath.Join(certDir, "tls.crt"))
		Expect(err).NotTo(HaveOccurred())
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ownNamespace, Name: secretName}, secret)).To(Succeed())
		Expect(written).To(Equal(secret.Data["tls.crt"]), "the files follow the Secret")

		image := backedUp("rotated")
		ns := newNamespace(map[string]string{ownWebhookLabel: label}, nil)
		Expect(k8sClient.Create(ctx, dockerConfigSecret(ns, pullSecret, backupReg.Host, "reader", "reader-pass"))).To(Succeed())
		Eventually(func(g Gomega) {
			d := newDeployment(ns, unique("app"), nil, []string{image})
			g.Expect(k8sClient.Create(ctx, d)).To(Succeed())
			g.Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(backupOf(image)))
		}).Should(Succeed(), "the API server calls the webhook with the new CA")
	})
})

// freePort returns a TCP port that nothing listens on now.
func freePort() int {
	GinkgoHelper()
	l, err := (&net.ListenConfig{}).Listen(background, "tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
