//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
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
		proxy := registrytest.Front(upstreamHost, registrytest.BasicAuth("tenant", "tenant-pass"))
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

var _ = Describe("a private backup registry", Ordered, func() {
	ctx := context.Background()
	const secretName = "backup-registry-pull"

	// The controller runs with --backup-pull-secret and the permission of config/components/backup-pull-secret,
	// as its ServiceAccount, so this proves that component's RBAC suffices.
	BeforeAll(func() {
		for _, obj := range componentObjects() {
			Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx, obj))).To(Succeed(), obj.GetName())
			DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, obj))).To(Succeed()) })
		}
		auths, err := json.Marshal(map[string]any{"auths": map[string]any{backupHost: map[string]string{"username": "reader", "password": "reader-pass"}}})
		Expect(err).NotTo(HaveOccurred())
		source := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "image-clone-system", Name: secretName},
			Type:       corev1.SecretTypeDockerConfigJson,
			Data:       map[string][]byte{corev1.DockerConfigJsonKey: auths},
		}
		Expect(k8sClient.Create(ctx, source)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, source))).To(Succeed()) })

		stopLocalController()
		DeferCleanup(restoreLocalCluster)
		controller := startController("backup-pull-secret", upstreamHost, "--backup-pull-secret="+secretName)
		DeferCleanup(stopProcess, controller)
	})

	It("copies the pull secret into the workload's namespace and adds it to the pod template", func() {
		ns := newNamespace()
		d := newDeployment(ns, "private-backup", nil, []string{"nginx:1.23"})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Eventually(templateImages(d)).Should(Equal([]string{backupHost + "/index_docker_io/library/nginx:1.23"}))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
		Expect(d.Spec.Template.Spec.ImagePullSecrets).To(Equal([]corev1.LocalObjectReference{{Name: secretName}}))

		source, copied := &corev1.Secret{}, &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "image-clone-system", Name: secretName}, source)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: secretName}, copied)).To(Succeed())
		Expect(copied.Data).To(Equal(source.Data))
		Expect(copied.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "image-clone-controller"))
		Eventually(deploymentRolledOut(d)).Should(Succeed())
	})
})

// componentObjects returns the RBAC objects of config/components/backup-pull-secret, for the controller's
// ServiceAccount in image-clone-system (as config/default renders them).
func componentObjects() []client.Object {
	GinkgoHelper()
	raw, err := os.ReadFile(filepath.Join(root, "config", "components", "backup-pull-secret", "role.yaml"))
	Expect(err).NotTo(HaveOccurred())
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	var objects []client.Object
	for {
		obj := &unstructured.Unstructured{}
		if err := decoder.Decode(&obj.Object); err != nil {
			break
		}
		if len(obj.Object) > 0 {
			objects = append(objects, obj)
		}
	}
	Expect(objects).To(HaveLen(2), "a ClusterRole and its binding")
	return objects
}
