package inventory_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/inventory"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

// unique returns prefix with a random suffix, so that specs never share images or workloads.
func unique(prefix string) string { return fmt.Sprintf("%s-%06d", prefix, rand.IntN(1_000_000)) }

func createNamespace(name string) {
	GinkgoHelper()
	Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})).To(Succeed())
}

func newNamespace() string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "spec-"}}
	Expect(k8sClient.Create(context.Background(), ns)).To(Succeed())
	return ns.Name
}

// pushUpstream pushes a random two-platform image to the upstream registry as Docker Hub's repoTag (e.g.
// "library/web:1.0" for "web:1.0") and returns its digest.
func pushUpstream(repoTag string) v1.Hash {
	GinkgoHelper()
	digest, err := upstream.PushIndex(repoTag, 2, 1024)
	Expect(err).NotTo(HaveOccurred())
	return digest
}

// mapping returns image's source and backup under b.
func mapping(b imageref.Backup, image string) imageref.Mapping {
	GinkgoHelper()
	m, err := b.Map(image)
	Expect(err).NotTo(HaveOccurred())
	return m
}

// imageBackup returns a function reading the ImageBackup of image's copy under b (nil if there is none).
func imageBackup(b imageref.Backup, image string) func() *v1alpha1.ImageBackup {
	key := inventory.ObjectName(mapping(b, image).Target.String())
	return func() *v1alpha1.ImageBackup {
		GinkgoHelper()
		ib := &v1alpha1.ImageBackup{}
		err := k8sClient.Get(context.Background(), client.ObjectKey{Name: key}, ib)
		if apierrors.IsNotFound(err) {
			return nil
		}
		Expect(err).NotTo(HaveOccurred())
		return ib
	}
}

// statusOf returns a function reading the status of image's ImageBackup under b (empty if there is none).
func statusOf(b imageref.Backup, image string) func() v1alpha1.ImageBackupStatus {
	get := imageBackup(b, image)
	return func() v1alpha1.ImageBackupStatus {
		if ib := get(); ib != nil {
			return ib.Status
		}
		return v1alpha1.ImageBackupStatus{}
	}
}

// phaseOf returns a function reading the phase of image's ImageBackup under b ("" if there is none).
func phaseOf(b imageref.Backup, image string) func() v1alpha1.Phase {
	get := imageBackup(b, image)
	return func() v1alpha1.Phase {
		if ib := get(); ib != nil {
			return ib.Status.Phase
		}
		return ""
	}
}

// backupDigest returns what reg holds at the backup tag of image under b ("" when it has no such tag).
func backupDigest(b imageref.Backup, image string) func() string {
	return func() string {
		ref, err := name.NewTag(mapping(b, image).Target.String(), name.Insecure)
		Expect(err).NotTo(HaveOccurred())
		desc, err := remote.Head(ref)
		if err != nil {
			return ""
		}
		return desc.Digest.String()
	}
}

// eventsOf returns "Type Reason: note" for every Event recorded about obj.
func eventsOf(obj client.Object) func() []string {
	return func() []string {
		GinkgoHelper()
		events, err := workloadtest.Events(context.Background(), k8sClient, obj)
		Expect(err).NotTo(HaveOccurred())
		return events
	}
}

// metricValue reads a series from controller-runtime's metrics registry (summed over labels not given).
func metricValue(metric string, labels map[string]string) func() float64 {
	return func() float64 {
		GinkgoHelper()
		samples, err := metricstest.Gather(metrics.Registry)
		Expect(err).NotTo(HaveOccurred())
		return samples.Sum(metric, labels)
	}
}

// loseCopy makes reg lose the copy of image under b, as lost storage would.
func loseCopy(reg *registrytest.Registry, b imageref.Backup, image string) {
	GinkgoHelper()
	target := mapping(b, image).Target
	Expect(reg.LoseRepository(target.RepositoryStr(), target.TagStr())).To(Succeed())
}

// getDeployment reads d from the API server.
func getDeployment(d *appsv1.Deployment) *appsv1.Deployment {
	GinkgoHelper()
	got := &appsv1.Deployment{}
	Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(d), got)).To(Succeed())
	return got
}

// blobStatus returns the status of a HEAD of blob digest in repository repo of reg.
func blobStatus(reg *registrytest.Registry, repo string, digest v1.Hash) int {
	GinkgoHelper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodHead, fmt.Sprintf("http://%s/v2/%s/blobs/%s", reg.Host, repo, digest), nil)
	Expect(err).NotTo(HaveOccurred())
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	Expect(resp.Body.Close()).To(Succeed())
	return resp.StatusCode
}
