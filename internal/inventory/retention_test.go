package inventory_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/inventory"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

// retention is the --retention of the retention specs' keepers: short, so that specs see it pass.
const retention = 2 * time.Second

// keeperWith starts a keeper (without workload reconciler) on a backup registry of its own, reg, and returns
// the backup and the copier that reports to the keeper.
func keeperWith(reg *registrytest.Registry, opts inventory.Options) (imageref.Backup, *registry.Copier) {
	GinkgoHelper()
	b, err := imageref.ParseBackup(reg.Host + "/retained")
	Expect(err).NotTo(HaveOccurred())
	if opts.VerifyInterval == 0 {
		opts.VerifyInterval = verifyInterval
	}
	opts.Retention = retention
	return b, startManager(b, opts, false)
}

// copied copies image (pushed upstream first) into b with copier, as the workload reconciler would, and
// returns the pod image of the copy.
func copied(copier *registry.Copier, b imageref.Backup, image string) string {
	GinkgoHelper()
	repo, tag, _ := strings.Cut(image, ":")
	pushUpstream("library/" + repo + ":" + tag)
	m := mapping(b, image)
	_, err := copier.Copy(context.Background(), registry.CopyRequest{Source: m.Source, Target: m.Target})
	Expect(err).NotTo(HaveOccurred())
	Eventually(phaseOf(b, image)).Should(Equal(v1alpha1.PhaseReady))
	return m.PodImage()
}

var _ = Describe("retention", func() {
	ctx := context.Background()

	It("deletes only the copies nothing has needed for --retention", func() {
		reg := registrytest.NewInProcess()
		DeferCleanup(reg.Close)
		b, copier := keeperWith(reg, inventory.Options{})
		ns := "retention"

		images := map[string]string{}
		for _, use := range []string{"scaled-to-zero", "rollback", "pod", "job", "unused"} {
			images[use] = unique(use) + ":1"
		}
		// The workloads exist before the copies, as they do when the reconciler copies: a copy made first would
		// be unused for longer than the short retention of the spec.
		copies := map[string]string{}
		for use, image := range images {
			copies[use] = mapping(b, image).PodImage()
		}
		d := workloadtest.Deployment(ns, unique("zero"), nil, []string{copies["scaled-to-zero"]})
		d.Spec.Replicas = ptr.To[int32](0)
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		// The ReplicaSet of an earlier revision of d, which a rollback would scale up again.
		Expect(k8sClient.Create(ctx, &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: d.Name + "-1", OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: ptr.To(true),
			}}},
			Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](0), Selector: d.Spec.Selector,
				Template: workloadtest.PodTemplate(d.Name, nil, []string{copies["rollback"]})},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: unique("pod")},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: copies["pod"]}}},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, workloadtest.Job(ns, unique("job"), nil, []string{copies["job"]}))).To(Succeed())
		deletions := metricValue("image_clone_retention_deletions_total", map[string]string{"result": "deleted"})()
		for _, image := range images {
			copied(copier, b, image)
		}

		Eventually(imageBackup(b, images["unused"])).Should(BeNil())
		Expect(backupDigest(b, images["unused"])()).To(BeEmpty(), "the tag is deleted from the backup registry")
		Expect(metricValue("image_clone_retention_deletions_total", map[string]string{"result": "deleted"})()).To(BeNumerically(">", deletions))
		for _, use := range []string{"scaled-to-zero", "rollback", "pod", "job"} {
			Consistently(phaseOf(b, images[use]), 2*retention).Should(Equal(v1alpha1.PhaseReady), "the copy of %s", use)
			Expect(backupDigest(b, images[use])()).NotTo(BeEmpty(), "the copy of %s", use)
		}
	})

	It("only reports, with --retention-dry-run", func() {
		reg := registrytest.NewInProcess()
		DeferCleanup(reg.Close)
		b, copier := keeperWith(reg, inventory.Options{RetentionDryRun: true})
		image := unique("dry") + ":1"
		copied(copier, b, image)

		Eventually(func() []string { return eventsOf(imageBackup(b, image)())() }).Should(ContainElement(
			HavePrefix("Normal RetentionDryRun: Nothing has needed the copy for")))
		Consistently(phaseOf(b, image), 2*retention).Should(Equal(v1alpha1.PhaseReady))
		Expect(backupDigest(b, image)()).NotTo(BeEmpty())
	})

	It("keeps the copy, and says so once, when the backup registry refuses DELETE", func() {
		binary, err := testbin.RegistryBinary()
		Expect(err).NotTo(HaveOccurred())
		reg, err := registrytest.StartDistribution(binary, GinkgoT().TempDir(), registrytest.WithoutDeletes())
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(reg.Close)
		b, copier := keeperWith(reg, inventory.Options{})
		image := unique("kept") + ":1"
		copied(copier, b, image)

		refused := func() int {
			n := 0
			for _, e := range eventsOf(imageBackup(b, image)())() {
				if strings.HasPrefix(e, "Warning DeleteRefused: Nothing has needed the copy for") {
					n++
				}
			}
			return n
		}
		Eventually(refused).Should(Equal(1))
		Consistently(refused, 3*retention).Should(Equal(1))
		Expect(phaseOf(b, image)()).To(Equal(v1alpha1.PhaseReady))
		Expect(backupDigest(b, image)()).NotTo(BeEmpty())
	})

	It("restores and keeps a copy that a workload started to use while it was deleted", func() {
		reg := registrytest.NewInProcess()
		DeferCleanup(reg.Close)
		b, copier := keeperWith(reg, inventory.Options{})
		image := unique("raced") + ":1"
		copy := copied(copier, b, image)
		digest := statusOf(b, image)().Digest
		ns := "retention"

		// The first DELETE of the copy waits until a Deployment naming it exists: it was created between the
		// keeper's check of the API server and the delete.
		var once sync.Once
		late := workloadtest.Deployment(ns, unique("late"), nil, []string{copy})
		reg.Use(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodDelete {
					once.Do(func() { Expect(k8sClient.Create(ctx, late)).To(Succeed()) })
				}
				next.ServeHTTP(w, r)
			})
		})
		raced := metricValue("image_clone_retention_deletions_total", map[string]string{"result": "raced"})()

		Eventually(metricValue("image_clone_retention_deletions_total", map[string]string{"result": "raced"})).Should(BeNumerically(">", raced))
		Eventually(phaseOf(b, image)).Should(Equal(v1alpha1.PhaseReady))
		Eventually(backupDigest(b, image)).Should(Equal(digest))
		Consistently(phaseOf(b, image), 2*retention).Should(Equal(v1alpha1.PhaseReady))
		Expect(eventsOf(imageBackup(b, image)())()).To(ContainElement(
			HavePrefix("Warning BackupLost: Copy lost (retention deleted it while Deployment " + ns + "/" + late.Name + " started to use it)")))
		ref, err := name.NewDigest(mapping(b, image).Target.Context().String()+"@"+digest, name.Insecure)
		Expect(err).NotTo(HaveOccurred())
		_, err = remote.Head(ref)
		Expect(err).NotTo(HaveOccurred(), "the manifest is back by digest too")
	})

	It("deletes a tag alone when another copy's tag points to the same manifest", func() {
		reg := registrytest.NewInProcess()
		DeferCleanup(reg.Close)
		b, copier := keeperWith(reg, inventory.Options{})
		repo := unique("shared")
		// Two tags of one upstream repository at one digest, as nginx:1.27 and nginx:stable often are.
		digest := pushUpstream("library/" + repo + ":a")
		src, err := name.NewTag(upstream.Backend+"/library/"+repo+":a", name.Insecure)
		Expect(err).NotTo(HaveOccurred())
		idx, err := remote.Index(src)
		Expect(err).NotTo(HaveOccurred())
		Expect(remote.WriteIndex(src.Context().Tag("b"), idx)).To(Succeed())
		for _, tag := range []string{"a", "b"} {
			m := mapping(b, repo+":"+tag)
			_, err := copier.Copy(ctx, registry.CopyRequest{Source: m.Source, Target: m.Target})
			Expect(err).NotTo(HaveOccurred())
			Eventually(phaseOf(b, repo+":"+tag)).Should(Equal(v1alpha1.PhaseReady))
		}
		Expect(k8sClient.Create(ctx, workloadtest.Deployment("retention", unique("b"), nil, []string{mapping(b, repo+":b").PodImage()}))).To(Succeed())

		Eventually(imageBackup(b, repo+":a")).Should(BeNil())
		Expect(backupDigest(b, repo+":a")()).To(BeEmpty())
		Consistently(backupDigest(b, repo+":b"), 2*retention).Should(Equal(digest.String()))
		Expect(phaseOf(b, repo+":b")()).To(Equal(v1alpha1.PhaseReady))
	})
})
