//go:build e2e

package e2e

import (
	"context"
	"os/exec"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

// The kinds beyond Deployments and DaemonSets, with the cluster's own controllers: the statefulset controller
// creates the StatefulSet's pods, the job controller the Jobs' pods, and kwok runs them.
var _ = Describe("StatefulSets, CronJobs and Jobs", func() {
	ctx := context.Background()

	It("a StatefulSet and a CronJob end on their backup images", func() {
		ns := newNamespace()
		// Seeded images: the webhook rewrites them at admission if an earlier spec left their copies, else the
		// reconciler copies them and patches the templates.
		db := newStatefulSet(ns, "db", []string{"nginx:1.23"}, []string{"grafana/grafana:main"})
		nightly := newCronJob(ns, "nightly", nil, []string{"fluentd"})
		Expect(k8sClient.Create(ctx, db)).To(Succeed())
		Expect(k8sClient.Create(ctx, nightly)).To(Succeed())

		want := []string{backupHost + "/index_docker_io/library/nginx:1.23", backupHost + "/index_docker_io/grafana/grafana:main"}
		Eventually(templateImages(db)).Should(Equal(want))
		Eventually(templateImages(nightly)).Should(Equal([]string{backupHost + "/index_docker_io/library/fluentd:latest"}))

		By("running the StatefulSet's pod on them")
		Eventually(statefulSetRolledOut(db)).Should(Succeed())
		Eventually(podImages(ns, db.Spec.Selector.MatchLabels)).Should(And(HaveLen(1), HaveEach(Equal(want))))
	})

	It("after the upstream image is deleted, a scaled-up StatefulSet pod and the next Job run from the backup", func() {
		ns := newNamespace()
		dbRepo, dbImage, dbBackup, dbDigest := pushRandomImage("stateful")
		cronRepo, cronImage, cronBackup, cronDigest := pushRandomImage("scheduled")
		db := newStatefulSet(ns, "db", nil, []string{dbImage})
		nightly := newCronJob(ns, "nightly", nil, []string{cronImage})
		Expect(k8sClient.Create(ctx, db)).To(Succeed())
		Expect(k8sClient.Create(ctx, nightly)).To(Succeed())
		Eventually(templateImages(db)).Should(Equal([]string{dbBackup}))
		Eventually(templateImages(nightly)).Should(Equal([]string{cronBackup}))
		Eventually(statefulSetRolledOut(db)).Should(Succeed())

		By("deleting both images from the upstream registry")
		deleteUpstream(dbRepo, dbDigest)
		deleteUpstream(cronRepo, cronDigest)

		By("scaling the StatefulSet up by one: its new pod starts from the backup")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(db), db)).To(Succeed())
		db.Spec.Replicas = ptr.To(ptr.Deref(db.Spec.Replicas, 1) + 1)
		Expect(k8sClient.Update(ctx, db)).To(Succeed())
		Eventually(statefulSetRolledOut(db)).Should(Succeed())
		added := &corev1.Pod{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "db-1"}, added)).To(Succeed())
		Expect(workloadtest.ContainerImages(added.Spec)).To(Equal([]string{dbBackup}))
		Expect(added.Status.Phase).To(Equal(corev1.PodRunning))
		Expect(podReady(added)).To(BeTrue())
		Eventually(podImages(ns, db.Spec.Selector.MatchLabels)).Should(And(HaveLen(2), HaveEach(Equal([]string{dbBackup}))))

		By("creating the next Job from the CronJob, as the cronjob controller would (kubectl create job --from)")
		run := exec.Command("kubectl", "--kubeconfig", kubeconfig, "--namespace", ns,
			"create", "job", "--from=cronjob/"+nightly.Name, "nightly-manual")
		out, err := run.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nightly-manual"}}
		Expect(templateImages(job)()).To(Equal([]string{cronBackup}))
		Expect(metav1.GetControllerOf(job)).To(HaveField("UID", nightly.UID), "the Job belongs to its CronJob")
		Eventually(jobPodImages(job)).Should(HaveExactElements(Equal([]string{cronBackup})))
		Eventually(jobSucceeded(job)).Should(Succeed())

		By("keeping both backups complete, with the original digests")
		for image, digest := range map[string]v1.Hash{dbBackup: dbDigest, cronBackup: cronDigest} {
			idx, err := remote.Index(mustRef(image))
			Expect(err).NotTo(HaveOccurred(), image)
			Expect(idx.Digest()).To(Equal(digest), image)
			Expect(validate.Index(idx)).To(Succeed(), image)
		}
	})

	It("creates a Job on the backup of an image that another Job had backed up", func() {
		ns := newNamespace()
		_, image, backupImage, digest := pushRandomImage("batch")
		first := newJob(ns, "first", nil, []string{image})
		Expect(k8sClient.Create(ctx, first)).To(Succeed())

		By("backing up the first Job's image without patching it, since its pod template cannot change")
		Eventually(func() (v1.Hash, error) {
			desc, err := remote.Head(mustRef(backupImage))
			if err != nil {
				return v1.Hash{}, err
			}
			return desc.Digest, nil
		}).Should(Equal(digest))
		Eventually(func() ([]string, error) { return workloadtest.Events(ctx, k8sClient, first) }).Should(
			ContainElement(And(HavePrefix("Normal ImagesBackedUp"), ContainSubstring("runs from its original images"))))
		Expect(templateImages(first)()).To(Equal([]string{image}))
		Expect(first.Generation).To(BeEquivalentTo(1))
		Eventually(jobSucceeded(first)).Should(Succeed())

		By("creating a second Job with the same image: stored on the backup, rewritten at admission")
		second := newJob(ns, "second", nil, []string{image})
		Expect(k8sClient.Create(ctx, second)).To(Succeed())
		Expect(second.Spec.Template.Spec.Containers[0].Image).To(Equal(backupImage), "the create response is the stored Job")
		Expect(second.Generation).To(BeEquivalentTo(1))
		Eventually(jobPodImages(second)).Should(HaveExactElements(Equal([]string{backupImage})))
		Eventually(jobSucceeded(second)).Should(Succeed())
	})
})

// statefulSetRolledOut succeeds once every replica of s runs its current revision and is ready.
func statefulSetRolledOut(s *appsv1.StatefulSet) func(Gomega) {
	return func(g Gomega) {
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(s), s)).To(Succeed())
		want := ptr.Deref(s.Spec.Replicas, 1)
		g.Expect(s.Status.ObservedGeneration).To(Equal(s.Generation))
		g.Expect(s.Status.CurrentRevision).To(Equal(s.Status.UpdateRevision), "rolling update in progress")
		g.Expect(s.Status.UpdatedReplicas).To(Equal(want))
		g.Expect(s.Status.ReadyReplicas).To(Equal(want))
		g.Expect(s.Status.Replicas).To(Equal(want), "old pods still exist")
	}
}

// jobPodImages returns the images of every pod of job that runs or has run to completion, one slice per pod.
func jobPodImages(job *batchv1.Job) func() [][]string {
	return func() [][]string {
		GinkgoHelper()
		pods := &corev1.PodList{}
		Expect(k8sClient.List(context.Background(), pods, client.InNamespace(job.Namespace),
			client.MatchingLabels{batchv1.JobNameLabel: job.Name})).To(Succeed())
		var out [][]string
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded {
				out = append(out, workloadtest.ContainerImages(p.Spec))
			}
		}
		return out
	}
}

// jobSucceeded succeeds once job has completed (kwok ends the pods of Jobs successfully).
func jobSucceeded(job *batchv1.Job) func(Gomega) {
	return func(g Gomega) {
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(job), job)).To(Succeed())
		g.Expect(job.Status.Succeeded).To(BeEquivalentTo(1))
		g.Expect(job.Status.Conditions).To(ContainElement(And(
			HaveField("Type", batchv1.JobComplete), HaveField("Status", corev1.ConditionTrue))))
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
