package inventory_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

var _ = Describe("the inventory of backups", func() {
	ctx := context.Background()

	It("records every copy with its digest, platforms, size and users", func() {
		ns := newNamespace()
		repo := unique("web")
		digest := pushUpstream("library/" + repo + ":1.0")
		image := repo + ":1.0"
		d := workloadtest.Deployment(ns, "web", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())

		Eventually(phaseOf(backup, image)).Should(Equal(v1alpha1.PhaseReady))
		ib := imageBackup(backup, image)()
		m := mapping(backup, image)
		Expect(ib.Spec.Source).To(Equal(m.Source.String()))
		Expect(ib.Spec.Backup).To(Equal(m.Target.String()))
		Expect(ib.Status.Digest).To(Equal(digest.String()))
		Expect(ib.Status.ShortDigest).To(Equal(digest.Hex[:12]))
		Expect(ib.Status.MediaType).To(Equal("application/vnd.oci.image.index.v1+json"))
		Expect(ib.Status.Platforms).To(HaveLen(2))
		// Two platforms of a config and two 1 KiB layers each (see registrytest.RandomIndex).
		Expect(ib.Status.Size).To(BeNumerically(">", 4*1024))
		Expect(ib.Status.DisplaySize).To(HaveSuffix("KiB"))
		Expect(ib.Status.LastCopied).NotTo(BeNil())
		Expect(apimeta.IsStatusConditionTrue(ib.Status.Conditions, v1alpha1.ConditionReady)).To(BeTrue())
		Expect(apimeta.IsStatusConditionTrue(ib.Status.Conditions, v1alpha1.ConditionVerified)).To(BeTrue())
		Eventually(func() v1alpha1.Usage { return statusOf(backup, image)().UsedBy }).Should(Equal(v1alpha1.Usage{
			Count: 1, Workloads: []v1alpha1.WorkloadReference{{Kind: "Deployment", Namespace: ns, Name: "web"}},
		}))

		By("verifying it every interval, and every manifest and blob every few intervals")
		first := ib.Status.LastVerified.Time
		Eventually(func() bool { return statusOf(backup, image)().LastVerified.After(first) }).Should(BeTrue())
		deep := statusOf(backup, image)().LastDeepVerified.Time
		Eventually(func() bool { return statusOf(backup, image)().LastDeepVerified.After(deep) }).Should(BeTrue())
		Expect(statusOf(backup, image)().Size).To(Equal(ib.Status.Size), "a deep verification measures the copy as the copy did")
	})

	It("records the digest a moving tag was copied at before", func() {
		ns := newNamespace()
		repo := unique("moving")
		image := repo + ":latest"
		old := pushUpstream("library/" + image)
		Expect(k8sClient.Create(ctx, workloadtest.Deployment(ns, "first", nil, []string{image}))).To(Succeed())
		Eventually(func() string { return statusOf(backup, image)().Digest }).Should(Equal(old.String()))

		newer := pushUpstream("library/" + image)
		// A new workload naming the public tag is copied at what the tag points to now.
		Expect(k8sClient.Create(ctx, workloadtest.Deployment(ns, "second", nil, []string{image}))).To(Succeed())
		Eventually(func() string { return statusOf(backup, image)().Digest }).Should(Equal(newer.String()))
		ib := imageBackup(backup, image)()
		Expect(ib.Status.PreviousDigests).To(Equal([]string{old.String()}))
		Expect(ib.Status.Phase).To(Equal(v1alpha1.PhaseReady))
		Eventually(func() int32 { return statusOf(backup, image)().UsedBy.Count }).Should(BeEquivalentTo(2))
	})

	It("follows what uses a copy: scaled to zero, kept for rollback, deleted", func() {
		ns := newNamespace()
		repo := unique("usage")
		pushUpstream("library/" + repo + ":1")
		image := repo + ":1"
		d := workloadtest.Deployment(ns, "app", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Eventually(phaseOf(backup, image)).Should(Equal(v1alpha1.PhaseReady))
		copyImage := mapping(backup, image).PodImage()

		By("scaling the Deployment to zero, which still needs its image")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
		d.Spec.Replicas = ptr.To[int32](0)
		Expect(k8sClient.Update(ctx, d)).To(Succeed())
		Consistently(func() int32 { return statusOf(backup, image)().UsedBy.Count }, "1s").Should(BeEquivalentTo(1))

		By("keeping a ReplicaSet of it, as the deployment controller keeps revisionHistoryLimit of them")
		rs := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-1", OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: ptr.To(true),
			}}},
			Spec: appsv1.ReplicaSetSpec{
				Replicas: ptr.To[int32](0),
				Selector: d.Spec.Selector,
				Template: workloadtest.PodTemplate("app", nil, []string{copyImage}),
			},
		}
		Expect(k8sClient.Create(ctx, rs)).To(Succeed())
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-1-x", OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true),
			}}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: copyImage}}},
		}
		Expect(k8sClient.Create(ctx, pod)).To(Succeed())
		Eventually(func() v1alpha1.Usage { return statusOf(backup, image)().UsedBy }).Should(Equal(v1alpha1.Usage{
			Count: 1, Retained: 2, Workloads: []v1alpha1.WorkloadReference{{Kind: "Deployment", Namespace: ns, Name: "app"}},
		}))

		By("moving the Deployment to another image: the old ReplicaSet and its Pod still need the copy")
		other := unique("other")
		pushUpstream("library/" + other + ":1")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
		d.Spec.Template.Spec.Containers[0].Image = other + ":1"
		Expect(k8sClient.Update(ctx, d)).To(Succeed())
		Eventually(func() v1alpha1.Usage { return statusOf(backup, image)().UsedBy }).Should(Equal(v1alpha1.Usage{Retained: 2}))
		Expect(statusOf(backup, image)().UnusedSince).To(BeNil())

		By("deleting them: nothing needs it from then on")
		Expect(k8sClient.Delete(ctx, pod, client.GracePeriodSeconds(0))).To(Succeed())
		Expect(k8sClient.Delete(ctx, rs)).To(Succeed())
		Eventually(func() *metav1.Time { return statusOf(backup, image)().UnusedSince }).ShouldNot(BeNil())
		Expect(statusOf(backup, image)().UsedBy).To(Equal(v1alpha1.Usage{}))
		Expect(statusOf(backup, image)().Phase).To(Equal(v1alpha1.PhaseReady), "without --retention a copy is kept forever")

		By("using it again")
		Expect(k8sClient.Create(ctx, workloadtest.DaemonSet(ns, "agent", nil, []string{copyImage}))).To(Succeed())
		Eventually(func() *metav1.Time { return statusOf(backup, image)().UnusedSince }).Should(BeNil())
		Expect(statusOf(backup, image)().UsedBy.Workloads).To(ConsistOf(v1alpha1.WorkloadReference{Kind: "DaemonSet", Namespace: ns, Name: "agent"}))
	})
})
