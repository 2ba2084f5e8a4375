package controller_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

// dockerConfigSecret returns a kubernetes.io/dockerconfigjson Secret with user:pass for host.
func dockerConfigSecret(namespace, name, host, user, pass string) *corev1.Secret {
	GinkgoHelper()
	secret, err := workloadtest.DockerConfigSecret(namespace, name, host, user, pass)
	Expect(err).NotTo(HaveOccurred())
	return secret
}

// pullSecretsOf returns the names of the pull secrets of a Deployment's pod template, read from the apiserver.
func pullSecretsOf(d *appsv1.Deployment) func() []string {
	return func() []string {
		GinkgoHelper()
		Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(d), d)).To(Succeed())
		var names []string
		for _, ref := range d.Spec.Template.Spec.ImagePullSecrets {
			names = append(names, ref.Name)
		}
		return names
	}
}

var _ = Describe("pull secrets", func() {
	ctx := context.Background()

	Describe("pulling sources with the workload's own credentials", func() {
		var private string // host:port of the upstream registry behind basic authentication
		var image, pinned string

		BeforeEach(func() {
			proxy := registrytest.Front(upstream.Host, registrytest.BasicAuth("tenant", "tenant-pass"))
			DeferCleanup(proxy.Close)
			private = proxy.Host
			repoTag := "private/" + unique("app") + ":v1"
			digest := pushUpstream(repoTag)
			image = private + "/" + repoTag
			pinned = image[:len(image)-len(":v1")] + "@" + digest.String()
		})

		It("backs up a private image for a workload whose imagePullSecrets can pull it, and for no other", func() {
			ns := newNamespace(nil)
			Expect(k8sClient.Create(ctx, dockerConfigSecret(ns, "regcred", private, "tenant", "tenant-pass"))).To(Succeed())
			allowed := newDeployment(ns, "allowed", nil, []string{image, pinned})
			allowed.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
			Expect(k8sClient.Create(ctx, allowed)).To(Succeed())
			Eventually(templateImages(allowed)).Should(Equal([]string{backupOf(image), backupOf(pinned)}))

			By("refusing a workload in another namespace without credentials, though the copy exists")
			other := newNamespace(nil)
			stranger := newDeployment(other, "stranger", nil, []string{image, pinned})
			Expect(k8sClient.Create(ctx, stranger)).To(Succeed())
			Eventually(eventsOf(stranger)).Should(ContainElement(And(
				HavePrefix("Warning "+controller.ReasonBackupFailed), ContainSubstring("denied access"),
				ContainSubstring(image), ContainSubstring(pinned))))
			Expect(templateImages(stranger)()).To(Equal([]string{image, pinned}))
			Expect(stranger.Generation).To(BeEquivalentTo(1), "never patched")

			By("refusing credentials for the registry that are wrong")
			Expect(k8sClient.Create(ctx, dockerConfigSecret(other, "wrong", private, "tenant", "guessed"))).To(Succeed())
			guesser := newDeployment(other, "guesser", nil, []string{image})
			guesser.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "wrong"}, {Name: "missing"}}
			Expect(k8sClient.Create(ctx, guesser)).To(Succeed())
			Eventually(eventsOf(guesser)).Should(ContainElement(And(
				HavePrefix("Warning "+controller.ReasonBackupFailed), ContainSubstring("denied access"),
				ContainSubstring("Pull secrets not used: missing (not found)"))))
			Expect(templateImages(guesser)()).To(Equal([]string{image}))
		})

		It("hands a copy, through the backup pull secret, only to a workload whose credentials can read its source", func() {
			ns := newNamespace(nil)
			Expect(k8sClient.Create(ctx, dockerConfigSecret(ns, "regcred", private, "tenant", "tenant-pass"))).To(Succeed())
			owner := newDeployment(ns, "owner", nil, []string{image})
			owner.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
			Expect(k8sClient.Create(ctx, owner)).To(Succeed())
			Eventually(templateImages(owner)).Should(Equal([]string{backupOf(image)}))

			By("refusing a workload of another tenant that names the copy itself")
			other := newNamespace(nil)
			stranger := newDeployment(other, "stranger", nil, []string{backupOf(image)})
			Expect(k8sClient.Create(ctx, stranger)).To(Succeed())
			Eventually(eventsOf(stranger)).Should(ContainElement(And(
				HavePrefix("Warning "+controller.ReasonBackupFailed), ContainSubstring("denied access"))))
			Expect(pullSecretsOf(stranger)()).To(BeEmpty(), "no backup pull secret for a copy it cannot prove access to")
			Expect(stranger.Generation).To(BeEquivalentTo(1), "never patched")
			secret := &corev1.Secret{}
			Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: other, Name: backupPullSecret}, secret))).
				To(BeTrue(), "the backup pull secret is not copied into the stranger's namespace")

			By("adding it for a workload of the owner's namespace that names the copy and can read the source")
			friend := newDeployment(ns, "friend", nil, []string{backupOf(image)})
			friend.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
			Expect(k8sClient.Create(ctx, friend)).To(Succeed())
			Eventually(pullSecretsOf(friend)).Should(Equal([]string{"regcred", backupPullSecret}))
		})

		It("uses the pull secrets of the workload's ServiceAccount", func() {
			ns := newNamespace(nil)
			Expect(k8sClient.Create(ctx, dockerConfigSecret(ns, "sa-regcred", private, "tenant", "tenant-pass"))).To(Succeed())
			Expect(k8sClient.Create(ctx, &corev1.ServiceAccount{
				ObjectMeta:       metav1.ObjectMeta{Namespace: ns, Name: "builder"},
				ImagePullSecrets: []corev1.LocalObjectReference{{Name: "sa-regcred"}},
			})).To(Succeed())
			d := newDeployment(ns, "via-sa", nil, []string{image})
			d.Spec.Template.Spec.ServiceAccountName = "builder"
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
		})
	})

	Describe("providing the backup pull secret", func() {
		It("copies the secret into the namespace and adds it to the pod template", func() {
			image := unique("public") + ":1"
			pushUpstream("library/" + image)
			ns := newNamespace(nil)
			d := newDeployment(ns, "app", nil, []string{image})
			d.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "own-regcred"}}
			Expect(k8sClient.Create(ctx, d)).To(Succeed())

			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
			Expect(pullSecretsOf(d)()).To(Equal([]string{"own-regcred", backupPullSecret}), "appended, the workload's own kept")
			Expect(d.Generation).To(BeEquivalentTo(2), "images and secret in one patch")

			source, copied := &corev1.Secret{}, &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: controllerNamespace, Name: backupPullSecret}, source)).To(Succeed())
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: backupPullSecret}, copied)).To(Succeed())
			Expect(copied.Type).To(Equal(corev1.SecretTypeDockerConfigJson))
			Expect(copied.Data).To(Equal(source.Data))
			Expect(copied.Labels).To(HaveKeyWithValue(controller.ManagedByLabel, "image-clone-controller"))
		})

		It("brings a rotated or deleted copy back in line when a workload of the namespace is reconciled", func() {
			image := unique("public") + ":1"
			pushUpstream("library/" + image)
			ns := newNamespace(nil)
			d := newDeployment(ns, "app", nil, []string{image})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
			copied := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: backupPullSecret}, copied)).To(Succeed())

			By("rotating the source")
			source := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: controllerNamespace, Name: backupPullSecret}, source)).To(Succeed())
			original := source.Data
			source.Data = dockerConfigSecret("", "", backupReg.Host, "reader", "rotated-pass").Data
			Expect(k8sClient.Update(ctx, source)).To(Succeed())
			DeferCleanup(func() {
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(source), source)).To(Succeed())
				source.Data = original
				Expect(k8sClient.Update(ctx, source)).To(Succeed())
			})
			touch := func(value string) {
				GinkgoHelper()
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
				d.Annotations = map[string]string{"example.com/touched": value}
				Expect(k8sClient.Update(ctx, d)).To(Succeed())
			}
			touch("1")
			Eventually(func() map[string][]byte {
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(copied), copied)).To(Succeed())
				return copied.Data
			}).Should(Equal(source.Data))

			By("deleting the copy")
			Expect(k8sClient.Delete(ctx, copied)).To(Succeed())
			touch("2")
			Eventually(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(copied), &corev1.Secret{}) }).Should(Succeed())
		})

		It("keeps a Secret of that name that the operator provided", func() {
			image := unique("public") + ":1"
			pushUpstream("library/" + image)
			ns := newNamespace(nil)
			own := dockerConfigSecret(ns, backupPullSecret, backupReg.Host, "namespace-reader", "own-pass")
			Expect(k8sClient.Create(ctx, own)).To(Succeed())
			d := newDeployment(ns, "app", nil, []string{image})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())

			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
			Expect(pullSecretsOf(d)()).To(Equal([]string{backupPullSecret}))
			kept := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(own), kept)).To(Succeed())
			Expect(kept.Data).To(Equal(own.Data))
		})

		It("adds the secret to a workload that already runs from the backup", func() {
			image := unique("public") + ":1"
			pushUpstream("library/" + image)
			// Backed up before the pull secret was configured: the copy exists, the template lacks the secret.
			ns := newNamespace(nil)
			first := newDeployment(ns, "first", nil, []string{image})
			Expect(k8sClient.Create(ctx, first)).To(Succeed())
			Eventually(templateImages(first)).Should(Equal([]string{backupOf(image)}))

			d := newDeployment(ns, "already", nil, []string{backupOf(image)})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Eventually(pullSecretsOf(d)).Should(Equal([]string{backupPullSecret}))
			Expect(templateImages(d)()).To(Equal([]string{backupOf(image)}))
			Expect(d.Generation).To(BeEquivalentTo(2))
		})

		It("points nothing at the backup while the secret cannot be provided, and recovers", func() {
			source := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: controllerNamespace, Name: backupPullSecret}, source)).To(Succeed())
			Expect(k8sClient.Delete(ctx, source)).To(Succeed())
			recreate := func() {
				Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx,
					dockerConfigSecret(controllerNamespace, backupPullSecret, backupReg.Host, "reader", "reader-pass")))).To(Succeed())
			}
			DeferCleanup(recreate)

			image := unique("public") + ":1"
			pushUpstream("library/" + image)
			ns := newNamespace(nil)
			d := newDeployment(ns, "app", nil, []string{image})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Eventually(eventsOf(d)).Should(ContainElement(And(HavePrefix("Warning "+controller.ReasonBackupFailed),
				ContainSubstring("backup pull secret "+controllerNamespace+"/"+backupPullSecret+" does not exist"))))
			Expect(templateImages(d)()).To(Equal([]string{image}))
			Expect(d.Generation).To(BeEquivalentTo(1))

			recreate()
			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
			Expect(pullSecretsOf(d)()).To(Equal([]string{backupPullSecret}))
		})
	})
})
