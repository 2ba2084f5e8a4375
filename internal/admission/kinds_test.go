package admission_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

var _ = Describe("rewriting the other workload kinds at admission", func() {
	It("creates StatefulSets, CronJobs and Jobs on their copies", func(ctx SpecContext) {
		ns := newNamespace(nil, nil)
		image := backedUp("kinds")
		for kind, obj := range map[string]client.Object{
			"StatefulSet": workloadtest.StatefulSet(ns, "db", nil, []string{image}),
			"CronJob":     workloadtest.CronJob(ns, "nightly", nil, []string{image}),
			"Job":         workloadtest.Job(ns, "once", nil, []string{image}),
		} {
			rewritten := admissions(kind, "rewritten")()
			Expect(k8sClient.Create(ctx, obj)).To(Succeed())
			Expect(templateImages(obj)()).To(Equal([]string{backupOf(image)}), kind)
			Expect(obj.GetGeneration()).To(BeEquivalentTo(1), kind)
			Expect(admissions(kind, "rewritten")()).To(Equal(rewritten+1), kind)
		}
	})

	It("leaves an existing Job's template alone on UPDATE, since it cannot change", func(ctx SpecContext) {
		ns := newNamespace(nil, nil)
		image := unique("later") + ":1.0"
		pushUpstream(image)
		job := workloadtest.Job(ns, "before-the-copy", nil, []string{image})
		Expect(k8sClient.Create(ctx, job)).To(Succeed())
		Expect(templateImages(job)()).To(Equal([]string{image}), "no copy yet")

		By("updating its labels after the copy exists: the update succeeds and the template stays")
		m, err := backup.Map(image)
		Expect(err).NotTo(HaveOccurred())
		_, err = copier.Copy(ctx, registry.CopyRequest{Source: m.Source, Target: m.Target})
		Expect(err).NotTo(HaveOccurred())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), job)).To(Succeed())
		job.Labels = map[string]string{"touched": "yes"}
		Expect(k8sClient.Update(ctx, job)).To(Succeed())
		Expect(templateImages(job)()).To(Equal([]string{image}))
	})
})
