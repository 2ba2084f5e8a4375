//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

var _ = Describe("a private source registry", func() {
	ctx := context.Background()

	// The controller runs as its ServiceAccount with the RBAC of config/rbac (make local-up impersonates it), so
	// this proves the shipped permissions suffice to read pull secrets, and that they are not a way around them.
	It("is copied from only for workloads whose own pull secrets can read it", func() {
		proxy, err := registrytest.RequireBasicAuth(upstreamHost, "tenant", "tenant-pass")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(proxy.Close)
		idx, err := registrytest.RandomIndex(2, 2048)
		Expect(err).NotTo(HaveOccurred())
		repoTag := fmt.Sprintf("private/app-%06d:v1", rand.IntN(1_000_000))
		Expect(remote.WriteIndex(mustRef(upstreamHost+"/"+repoTag), idx)).To(Succeed())
		image := proxy.Host + "/" + repoTag
		backup, err := imageref.ParseBackup(backupHost)
		Expect(err).NotTo(HaveOccurred())
		mapping, err := backup.Map(image)
		Expect(err).NotTo(HaveOccurred())

		By("backing up the image for a workload whose ServiceAccount has the pull secret")
		ns := newNamespace()
		auths, err := json.Marshal(map[string]any{"auths": map[string]any{proxy.Host: map[string]string{"username": "tenant", "password": "tenant-pass"}}})
		Expect(err).NotTo(HaveOccurred())
		Expect(k8sClient.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "regcred"},
			Type:       corev1.SecretTypeDockerConfigJson,
			Data:       map[string][]byte{corev1.DockerConfigJsonKey: auths},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.ServiceAccount{
			ObjectMeta:       metav1.ObjectMeta{Namespace: ns, Name: "puller"},
			ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}},
		})).To(Succeed())
		allowed := newDeployment(ns, "allowed", nil, []string{image})
		allowed.Spec.Template.Spec.ServiceAccountName = "puller"
		Expect(k8sClient.Create(ctx, allowed)).To(Succeed())
		Eventually(templateImages(allowed)).Should(Equal([]string{mapping.PodImage()}))

		By("refusing the same image to a workload in another namespace without credentials")
		other := newNamespace()
		stranger := newDeployment(other, "stranger", nil, []string{image})
		Expect(k8sClient.Create(ctx, stranger)).To(Succeed())
		Eventually(func() ([]string, error) { return workloadtest.Events(ctx, k8sClient, stranger) }).Should(
			ContainElement(And(HavePrefix("Warning BackupFailed"), ContainSubstring("denied access"))))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(stranger), stranger)).To(Succeed())
		Expect(stranger.Generation).To(BeEquivalentTo(1), "never pointed at the copy")
	})
})
