package inventory_test

import (
	"context"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

var _ = Describe("restoring lost backups", func() {
	ctx := context.Background()

	It("copies a lost copy again at its recorded digest, not at what the tag points to now", func() {
		ns := newNamespace()
		repo := unique("lost")
		image := repo + ":1.0"
		digest := pushUpstream("library/" + image)
		d := workloadtest.Deployment(ns, "web", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Eventually(phaseOf(backup, image)).Should(Equal(v1alpha1.PhaseReady))
		Eventually(func() []string { return workloadtest.ContainerImages(getDeployment(d).Spec.Template.Spec) }).
			Should(Equal([]string{mapping(backup, image).PodImage()}))
		restored := metricValue("image_clone_restores_total", map[string]string{"result": "restored"})()

		// The tag moves upstream meanwhile: the workload was pointed at the copy of the old digest.
		pushUpstream("library/" + image)
		loseCopy(backupReg, backup, image)

		Eventually(backupDigest(backup, image)).Should(Equal(digest.String()))
		Eventually(phaseOf(backup, image)).Should(Equal(v1alpha1.PhaseReady))
		st := statusOf(backup, image)()
		Expect(st.Digest).To(Equal(digest.String()))
		Expect(st.PreviousDigests).To(BeEmpty())
		Expect(metricValue("image_clone_restores_total", map[string]string{"result": "restored"})()).To(BeNumerically(">", restored))
		Expect(metricValue("image_clone_restored_bytes_total", nil)()).To(BeNumerically(">", 0))
		Expect(eventsOf(imageBackup(backup, image)())()).To(ContainElements(
			HavePrefix("Warning BackupLost: Copy lost (the backup registry no longer has"),
			HavePrefix("Normal Restored: Restored from"),
		))
		Expect(eventsOf(d)()).To(ContainElement(HavePrefix("Warning BackupLost: The backup " + mapping(backup, image).Target.String())))
	})

	It("restores a copy whose blob is gone, found by the deep verification", func() {
		ns := newNamespace()
		repo := unique("blob")
		image := repo + ":1.0"
		pushUpstream("library/" + image)
		Expect(k8sClient.Create(ctx, workloadtest.Deployment(ns, "web", nil, []string{image}))).To(Succeed())
		Eventually(phaseOf(backup, image)).Should(Equal(v1alpha1.PhaseReady))

		// Every manifest stays; one layer of one platform goes.
		target := mapping(backup, image).Target
		ref, err := name.NewTag(target.String(), name.Insecure)
		Expect(err).NotTo(HaveOccurred())
		idx, err := remote.Index(ref)
		Expect(err).NotTo(HaveOccurred())
		manifest, err := idx.IndexManifest()
		Expect(err).NotTo(HaveOccurred())
		img, err := idx.Image(manifest.Manifests[0].Digest)
		Expect(err).NotTo(HaveOccurred())
		layers, err := img.Layers()
		Expect(err).NotTo(HaveOccurred())
		layer, err := layers[0].Digest()
		Expect(err).NotTo(HaveOccurred())
		Expect(backupReg.DeleteBlob(target.RepositoryStr(), layer)).To(Succeed())

		Eventually(eventsOf(imageBackup(backup, image)())).Should(ContainElement(HavePrefix("Warning BackupLost: Copy lost (the copy in the backup registry is incomplete")))
		Eventually(phaseOf(backup, image)).Should(Equal(v1alpha1.PhaseReady))
		Expect(blobStatus(backupReg, target.RepositoryStr(), layer)).To(Equal(http.StatusOK))
	})

	It("marks a copy that exists nowhere Unrecoverable, tells its workloads, and restores it when the source has it again", func() {
		ns := newNamespace()
		repo := unique("gone")
		image := repo + ":1.0"
		pushUpstream("library/" + image)
		d := workloadtest.Deployment(ns, "web", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Eventually(phaseOf(backup, image)).Should(Equal(v1alpha1.PhaseReady))
		digest := statusOf(backup, image)().Digest

		// Keep the index (and its blobs) to publish it again later.
		src, err := name.NewTag(upstream.Backend+"/library/"+image, name.Insecure)
		Expect(err).NotTo(HaveOccurred())
		idx, err := remote.Index(src)
		Expect(err).NotTo(HaveOccurred())
		Expect(upstream.LoseRepository("library/"+repo, "1.0")).To(Succeed())
		loseCopy(backupReg, backup, image)

		Eventually(phaseOf(backup, image)).Should(Equal(v1alpha1.PhaseUnrecoverable))
		Eventually(metricValue("image_clone_backups_unrecoverable", nil)).Should(BeNumerically(">=", 1))
		Eventually(eventsOf(d)).Should(ContainElement(HavePrefix("Warning Unrecoverable: Its image exists nowhere: new pods will not start.")))
		Expect(statusOf(backup, image)().Digest).To(Equal(digest))

		Expect(remote.WriteIndex(src, idx)).To(Succeed())
		Eventually(phaseOf(backup, image)).Should(Equal(v1alpha1.PhaseReady))
		Eventually(backupDigest(backup, image)).Should(Equal(digest))
	})

	It("restores nothing, and says the check failed, while the backup registry cannot be asked", func() {
		ns := newNamespace()
		image := unique("down") + ":1.0"
		pushUpstream("library/" + image)
		Expect(k8sClient.Create(ctx, workloadtest.Deployment(ns, "web", nil, []string{image}))).To(Succeed())
		Eventually(phaseOf(backup, image)).Should(Equal(v1alpha1.PhaseReady))
		restores := metricValue("image_clone_restores_total", nil)()

		backupReg.SetDown(true)
		DeferCleanup(backupReg.SetDown, false)
		verified := func() metav1.Condition {
			c := apimeta.FindStatusCondition(statusOf(backup, image)().Conditions, v1alpha1.ConditionVerified)
			if c == nil {
				return metav1.Condition{}
			}
			return *c
		}
		Eventually(verified).Should(And(
			HaveField("Status", metav1.ConditionUnknown),
			HaveField("Reason", "VerificationFailed"),
			HaveField("Message", ContainSubstring("Cannot check the backup registry")),
		))
		Expect(phaseOf(backup, image)()).To(Equal(v1alpha1.PhaseReady))
		Expect(metricValue("image_clone_restores_total", nil)()).To(Equal(restores))

		backupReg.SetDown(false)
		Eventually(verified).Should(HaveField("Status", metav1.ConditionTrue))
		Expect(metricValue("image_clone_restores_total", nil)()).To(Equal(restores))
	})
})
