package admission_test

import (
	"context"
	"errors"
	"net/http"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// applyDeployment applies, with server-side apply as fieldManager and with force as GitOps tools do, a
// Deployment of one container running image.
func applyDeployment(ctx context.Context, ns, name, image, fieldManager string) *appsv1.Deployment {
	GinkgoHelper()
	labels := map[string]string{"app": name}
	Expect(k8sClient.Apply(ctx, appsv1ac.Deployment(name, ns).WithSpec(appsv1ac.DeploymentSpec().
		WithSelector(metav1ac.LabelSelector().WithMatchLabels(labels)).
		WithTemplate(corev1ac.PodTemplateSpec().WithLabels(labels).WithSpec(corev1ac.PodSpec().
			WithContainers(corev1ac.Container().WithName("app").WithImage(image))))),
		client.FieldOwner(fieldManager), client.ForceOwnership)).To(Succeed())
	d := &appsv1.Deployment{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d)).To(Succeed())
	return d
}

var _ = Describe("rewriting workloads at admission", func() {
	It("creates Deployments and DaemonSets on their copies from their first revision", func(ctx SpecContext) {
		ns := newNamespace(nil, nil)
		app, sidecar := backedUp("web"), backedUp("proxy")
		rewritten := admissions("Deployment", "rewritten")()

		d := newDeployment(ns, "web", []string{sidecar}, []string{app})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Expect(workloadtest.ContainerImages(d.Spec.Template.Spec)).To(Equal([]string{backupOf(sidecar), backupOf(app)}),
			"the object is stored on its copies")
		Expect(d.Generation).To(Equal(int64(1)))
		Expect(admissions("Deployment", "rewritten")()).To(Equal(rewritten + 1))

		rewrittenDaemonSets := admissions("DaemonSet", "rewritten")()
		ds := newDaemonSet(ns, "agent", nil, []string{app})
		Expect(k8sClient.Create(ctx, ds)).To(Succeed())
		Expect(admissions("DaemonSet", "rewritten")()).To(Equal(rewrittenDaemonSets + 1))
		Expect(workloadtest.ContainerImages(ds.Spec.Template.Spec)).To(Equal([]string{backupOf(app)}))

		By("leaving the reconciler nothing to patch")
		Consistently(generation(d)).WithTimeout(settle).Should(Equal(int64(1)))
		Consistently(generation(ds)).WithTimeout(settle).Should(Equal(int64(1)))
	})

	It("keeps the copies when a GitOps tool applies the public image again, even while the source is down", func(ctx SpecContext) {
		ns := newNamespace(nil, nil)
		image := backedUp("gitops")
		d := applyDeployment(ctx, ns, "app", image, "kustomize-controller")
		Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(backupOf(image)))
		Expect(d.Generation).To(Equal(int64(1)))

		for range 5 {
			d = applyDeployment(ctx, ns, "app", image, "argocd-controller")
			Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(backupOf(image)))
			Expect(d.Generation).To(Equal(int64(1)), "a re-apply changes nothing")
		}

		By("applying again while the source registry is down and its tag moved: the copy in use is kept")
		pushUpstream(image)
		upstream.SetDown(true)
		DeferCleanup(upstream.SetDown, false)
		copier.Forget()
		d = applyDeployment(ctx, ns, "app", image, "kustomize-controller")
		Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(backupOf(image)))
		Expect(d.Generation).To(Equal(int64(1)))
	})

	It("admits a workload unchanged when its image has no copy yet, and the reconciler then patches it", func(ctx SpecContext) {
		ns := newNamespace(nil, nil)
		image := unique("fresh") + ":1.0"
		pushUpstream(image)
		noCopy := admissions("Deployment", "unchanged-no-copy")()

		d := newDeployment(ns, "fresh", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(image))
		Expect(admissions("Deployment", "unchanged-no-copy")()).To(Equal(noCopy + 1))
		Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
		Expect(generation(d)()).To(Equal(int64(2)))
	})

	It("rewrites the images whose copies exist and leaves the others to the reconciler", func(ctx SpecContext) {
		ns := newNamespace(nil, nil)
		copied, missing := backedUp("copied"), unique("missing")+":1.0"
		pushUpstream(missing)
		d := newDeployment(ns, "mixed", nil, []string{copied, missing})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Expect(workloadtest.ContainerImages(d.Spec.Template.Spec)).To(Equal([]string{backupOf(copied), missing}))
		Eventually(templateImages(d)).Should(Equal([]string{backupOf(copied), backupOf(missing)}))
	})

	DescribeTable("leaves opted-out workloads alone",
		func(ctx SpecContext, namespace func() string, annotations map[string]string) {
			image := backedUp("optout")
			skipped := admissions("Deployment", "skipped")()
			d := newDeployment(namespace(), "optout", nil, []string{image})
			d.Annotations = annotations
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(image))
			Expect(admissions("Deployment", "skipped")()).To(Equal(skipped + 1))
			Consistently(templateImages(d)).WithTimeout(settle).Should(Equal([]string{image}))
		},
		Entry("workload annotation", func() string { return newNamespace(nil, nil) },
			map[string]string{workload.IgnoreAnnotation: "true"}),
		Entry("namespace annotation", func() string {
			return newNamespace(nil, map[string]string{workload.IgnoreAnnotation: "true"})
		}, nil),
		Entry("ignored namespace", func() string {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ignoredNamespace}}
			Expect(client.IgnoreAlreadyExists(k8sClient.Create(context.Background(), ns))).To(Succeed())
			return ignoredNamespace
		}, nil),
	)

	It("does not hand a tenant the copy of a private image its pull secrets cannot read", func(ctx SpecContext) {
		private := registrytest.Front(upstream.Host, registrytest.BasicAuth("tenant", "tenant-s3cr3t"))
		DeferCleanup(private.Close)
		image := private.Host + "/library/" + unique("private") + ":1.0"
		pushUpstream(image[len(private.Host+"/library/"):])
		ns := newNamespace(nil, nil)
		Expect(k8sClient.Create(ctx, dockerConfigSecret(ns, "regcred", private.Host, "tenant", "tenant-s3cr3t"))).To(Succeed())

		By("backing it up for the tenant, whose Deployment names its pull secret")
		owner := newDeployment(ns, "owner", nil, []string{image})
		owner.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
		Expect(k8sClient.Create(ctx, owner)).To(Succeed())
		Eventually(templateImages(owner)).Should(Equal([]string{backupOf(image)}))

		By("rewriting the tenant's next Deployment at admission")
		second := newDeployment(ns, "second", nil, []string{image})
		second.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
		Expect(k8sClient.Create(ctx, second)).To(Succeed())
		Expect(second.Spec.Template.Spec.Containers[0].Image).To(Equal(backupOf(image)))

		By("not rewriting a stranger's, which has no pull secret")
		stranger := newDeployment(newNamespace(nil, nil), "stranger", nil, []string{image})
		Expect(k8sClient.Create(ctx, stranger)).To(Succeed())
		Expect(stranger.Spec.Template.Spec.Containers[0].Image).To(Equal(image))
		Consistently(templateImages(stranger)).WithTimeout(settle).Should(Equal([]string{image}))
	})

	Context("when the webhook cannot answer", func() {
		It("admits the workload unchanged when the handler fails", func(ctx SpecContext) {
			image := backedUp("failing")
			finder.failWith(registry.Classify(registry.Transient, errors.New("injected lookup failure")))
			failed := admissions("Deployment", "unchanged-error")()
			d := newDeployment(newNamespace(nil, nil), "failing", nil, []string{image})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(image))
			Expect(admissions("Deployment", "unchanged-error")()).To(Equal(failed + 1))
			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}), "the reconciler patches it")
		})

		It("admits the workload unchanged within its budget when the backup registry is slow", func(ctx SpecContext) {
			image := backedUp("slow")
			copier.Forget()
			gate := registrytest.NewGate(func(r *http.Request) bool { return r.Method == http.MethodHead })
			backupReg.Use(gate.Middleware)
			DeferCleanup(backupReg.ResetMiddleware)
			DeferCleanup(gate.Open)
			failed := admissions("Deployment", "unchanged-error")()

			d := newDeployment(newNamespace(nil, nil), "slow", nil, []string{image})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(image))
			// Counted while the registry still holds every HEAD: the handler gave up on its own budget.
			Expect(admissions("Deployment", "unchanged-error")()).To(Equal(failed + 1))
			Expect(gate.Held()).To(BeClosed())

			gate.Open()
			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}), "the reconciler patches it")
		})

		DescribeTable("admits the workload unchanged when the API server cannot reach the webhook",
			func(ctx SpecContext, breakIt func(*admissionregistrationv1.MutatingWebhook)) {
				config := &admissionregistrationv1.MutatingWebhookConfiguration{}
				Expect(k8sClient.Get(ctx, client.ObjectKey{Name: suiteWebhook}, config)).To(Succeed())
				working := config.DeepCopy()
				breakIt(&config.Webhooks[0])
				Expect(k8sClient.Update(ctx, config)).To(Succeed())
				DeferCleanup(func(ctx SpecContext) {
					Expect(k8sClient.Get(ctx, client.ObjectKey{Name: suiteWebhook}, config)).To(Succeed())
					config.Webhooks = working.Webhooks
					Expect(k8sClient.Update(ctx, config)).To(Succeed())
				})

				image := backedUp("unreachable")
				var d *appsv1.Deployment
				// The API server reads webhook configurations through a watch of its own: until it uses the broken
				// one, workloads are still rewritten.
				Eventually(func() string {
					d = newDeployment(newNamespace(nil, nil), "unreachable", nil, []string{image})
					Expect(k8sClient.Create(ctx, d)).To(Succeed())
					return d.Spec.Template.Spec.Containers[0].Image
				}).Should(Equal(image), "created unchanged")
				Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}), "the reconciler patches it")
			},
			Entry("webhook stopped (nothing listens)", func(h *admissionregistrationv1.MutatingWebhook) {
				h.ClientConfig.URL = ptr.To("https://127.0.0.1:1" + *pathOf(h))
			}),
			Entry("certificate not trusted (expired or rotated without the CA injected)", func(h *admissionregistrationv1.MutatingWebhook) {
				h.ClientConfig.CABundle = untrustedCA()
			}),
		)
	})
})

// pathOf returns the path of the webhook's URL.
func pathOf(h *admissionregistrationv1.MutatingWebhook) *string {
	u := *h.ClientConfig.URL
	for i := len("https://"); i < len(u); i++ {
		if u[i] == '/' {
			return ptr.To(u[i:])
		}
	}
	return ptr.To("/")
}
