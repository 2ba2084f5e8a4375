package controller_test

import (
	"context"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// templateKind is a workload kind whose pod template the reconciler patches, as the specs build it.
type templateKind struct {
	name     string
	build    func(ns, name string, images []string) client.Object
	template func(client.Object) *corev1.PodTemplateSpec
}

var templateKinds = []templateKind{
	{
		name: "StatefulSet",
		build: func(ns, name string, images []string) client.Object {
			return workloadtest.StatefulSet(ns, name, nil, images)
		},
		template: func(o client.Object) *corev1.PodTemplateSpec {
			return workload.StatefulSets.PodTemplate(o.(*appsv1.StatefulSet))
		},
	},
	{
		name: "CronJob",
		build: func(ns, name string, images []string) client.Object {
			return workloadtest.CronJob(ns, name, nil, images)
		},
		template: func(o client.Object) *corev1.PodTemplateSpec {
			return workload.CronJobs.PodTemplate(o.(*batchv1.CronJob))
		},
	},
}

var _ = Describe("backing up the other workload kinds", func() {
	ctx := context.Background()

	for _, kind := range templateKinds {
		Describe("reconciling a "+kind.name, func() {
			It("patches its pod template once every copy is verified", func() {
				image := unique("kind") + ":1.0"
				pushUpstream("library/" + image)
				obj := kind.build(newNamespace(nil), "app", []string{image})
				Expect(k8sClient.Create(ctx, obj)).To(Succeed())

				Eventually(templateImages(obj)).Should(Equal([]string{backupOf(image)}))
				Expect(obj.GetGeneration()).To(BeEquivalentTo(2), "one patch")
				Eventually(eventsOf(obj)).Should(HaveExactElements(And(
					HavePrefix("Normal "+controller.ReasonImagesBackedUp), ContainSubstring(image+" → "+backupOf(image)))))
				Expect(counterValue("image_clone_workloads_patched_total", map[string]string{"kind": kind.name})).To(BeNumerically(">=", 1))
			})

			It("honours the opt-out annotation", func() {
				image := unique("optout") + ":1.0"
				pushUpstream("library/" + image)
				obj := kind.build(newNamespace(nil), "app", []string{image})
				obj.SetAnnotations(map[string]string{workload.IgnoreAnnotation: "true"})
				Expect(k8sClient.Create(ctx, obj)).To(Succeed())
				sentinel := kind.build(obj.GetNamespace(), "sentinel", []string{image})
				Expect(k8sClient.Create(ctx, sentinel)).To(Succeed())
				Eventually(templateImages(sentinel)).Should(Equal([]string{backupOf(image)}))
				Expect(templateImages(obj)()).To(Equal([]string{image}))
			})

			It("keeps a user's edit made while the images are copied", func() {
				image := unique("slow") + ":1"
				pushUpstream("library/" + image)
				release := gate.Hold(image)
				obj := kind.build(newNamespace(nil), "app", []string{image})
				Expect(k8sClient.Create(ctx, obj)).To(Succeed())
				Eventually(func() bool { return gate.Waiting(image) }).Should(BeTrue())

				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
				kind.template(obj).Spec.Containers[0].Env = []corev1.EnvVar{{Name: "EDITED", Value: "by-user"}}
				Expect(k8sClient.Update(ctx, obj)).To(Succeed())
				release()

				Eventually(templateImages(obj)).Should(Equal([]string{backupOf(image)}))
				Expect(kind.template(obj).Spec.Containers[0].Env).To(ConsistOf(corev1.EnvVar{Name: "EDITED", Value: "by-user"}))
			})
		})
	}

	Describe("reconciling a Job", func() {
		It("backs its images up without patching it, since its pod template cannot change", func() {
			image := unique("job") + ":1.0"
			digest := pushUpstream("library/" + image)
			job := workloadtest.Job(newNamespace(nil), "run", nil, []string{image})
			Expect(k8sClient.Create(ctx, job)).To(Succeed())

			Eventually(eventsOf(job)).Should(ContainElement(And(HavePrefix("Normal "+controller.ReasonImagesBackedUp),
				ContainSubstring(image+" → "+backupOf(image)), ContainSubstring("runs from its original images"))))
			ref, err := name.ParseReference(backupOf(image))
			Expect(err).NotTo(HaveOccurred())
			desc, err := remote.Head(ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(desc.Digest).To(Equal(digest))
			Expect(templateImages(job)()).To(Equal([]string{image}))
			Expect(job.Generation).To(BeEquivalentTo(1))
		})

		It("leaves a Job its CronJob created to the CronJob, whose template is backed up", func() {
			image := unique("scheduled") + ":1.0"
			pushUpstream("library/" + image)
			ns := newNamespace(nil)
			cron := workloadtest.CronJob(ns, "nightly", nil, []string{image})
			Expect(k8sClient.Create(ctx, cron)).To(Succeed())
			job := workloadtest.Job(ns, "nightly-1", nil, []string{image})
			job.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "CronJob", Name: cron.Name,
				UID: cron.UID, Controller: ptr.To(true)}}
			Expect(k8sClient.Create(ctx, job)).To(Succeed())

			Eventually(templateImages(cron)).Should(Equal([]string{backupOf(image)}))
			Consistently(eventsOf(job)).WithTimeout(2 * time.Second).Should(BeEmpty())
		})
	})
})
