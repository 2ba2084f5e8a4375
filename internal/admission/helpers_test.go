package admission_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"math/rand/v2"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

// faultyFinder passes lookups to the copier unless a spec made it fail.
type faultyFinder struct {
	next admissionFinder
	mu   sync.Mutex
	err  error
}

type admissionFinder interface {
	Lookup(ctx context.Context, req registry.CopyRequest) (v1.Hash, error)
}

func (f *faultyFinder) Lookup(ctx context.Context, req registry.CopyRequest) (v1.Hash, error) {
	f.mu.Lock()
	err := f.err
	f.mu.Unlock()
	if err != nil {
		return v1.Hash{}, err
	}
	return f.next.Lookup(ctx, req)
}

// failWith makes every lookup fail with err until the spec ends.
func (f *faultyFinder) failWith(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
	DeferCleanup(func() {
		f.mu.Lock()
		f.err = nil
		f.mu.Unlock()
	})
}

// unique returns prefix with a random suffix, so that specs never share images or workloads.
func unique(prefix string) string { return fmt.Sprintf("%s-%06d", prefix, rand.IntN(1_000_000)) }

// pushUpstream pushes a random two-platform image to the upstream registry as Docker Hub's library/<repoTag>.
func pushUpstream(repoTag string) v1.Hash {
	GinkgoHelper()
	digest, err := upstream.PushIndex("library/"+repoTag, 2, 1024)
	Expect(err).NotTo(HaveOccurred())
	return digest
}

// backedUp pushes a new image upstream as Docker Hub's image and copies it into the backup, as the controller
// would have for an earlier workload; it returns the image.
func backedUp(prefix string) string {
	GinkgoHelper()
	image := unique(prefix) + ":1.0"
	pushUpstream(image)
	m, err := backup.Map(image)
	Expect(err).NotTo(HaveOccurred())
	_, err = copier.Copy(context.Background(), registry.CopyRequest{Source: m.Source, Target: m.Target})
	Expect(err).NotTo(HaveOccurred())
	return image
}

// backupOf is the image string a workload on the copy of image names.
func backupOf(image string) string {
	GinkgoHelper()
	m, err := backup.Map(image)
	Expect(err).NotTo(HaveOccurred())
	return m.PodImage()
}

// newNamespace creates a namespace with labels and annotations and returns its name.
func newNamespace(labels, annotations map[string]string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "spec-", Labels: labels, Annotations: annotations}}
	Expect(k8sClient.Create(context.Background(), ns)).To(Succeed())
	return ns.Name
}

var (
	newDeployment = workloadtest.Deployment
	newDaemonSet  = workloadtest.DaemonSet
)

// templateImages reads obj from the API server and returns its pod template's images.
func templateImages(obj client.Object) func() []string {
	return func() []string {
		GinkgoHelper()
		images, err := workloadtest.TemplateImages(context.Background(), k8sClient, obj)
		Expect(err).NotTo(HaveOccurred())
		return images
	}
}

// generation reads obj's metadata.generation from the API server.
func generation(obj client.Object) func() int64 {
	return func() int64 {
		GinkgoHelper()
		Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)).To(Succeed())
		return obj.GetGeneration()
	}
}

// admissions returns the count of admission requests for kind with result.
func admissions(kind, result string) func() float64 {
	return func() float64 {
		GinkgoHelper()
		samples, err := metricstest.Gather(metrics.Registry)
		Expect(err).NotTo(HaveOccurred())
		return samples.Sum("image_clone_admission_requests_total", map[string]string{"kind": kind, "result": result})
	}
}

// settle is how long a spec watches that nothing more happens to a workload.
const settle = 2 * time.Second

// dockerConfigSecret returns a kubernetes.io/dockerconfigjson pull secret for host.
func dockerConfigSecret(namespace, name, host, user, pass string) *corev1.Secret {
	GinkgoHelper()
	secret, err := workloadtest.DockerConfigSecret(namespace, name, host, user, pass)
	Expect(err).NotTo(HaveOccurred())
	return secret
}

// untrustedCA returns the PEM of a CA that signed nothing the webhook serves.
func untrustedCA() []byte {
	GinkgoHelper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	Expect(err).NotTo(HaveOccurred())
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "untrusted"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(crand.Reader, template, template, &key.PublicKey, key)
	Expect(err).NotTo(HaveOccurred())
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
