//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

var _ = Describe("the local cluster", Ordered, func() {
	ctx := context.Background()
	var ns string
	var workloads []client.Object

	BeforeAll(func() {
		ns = newNamespace()
	})

	It("rolls Deployments and a DaemonSet out on their backup images", func() {
		// The images of the reference project's README, served by the upstream registry through --source-mirror.
		pinned := digestOf(upstreamHost + "/library/nginx:1.23")
		nginx := newDeployment(ns, "nginx", nil, []string{"nginx"})
		grafana := newDeployment(ns, "grafana", []string{"nginx:1.23"}, []string{"grafana/grafana:main"})
		exporter := newDeployment(ns, "speedtest-exporter", nil, []string{"ghcr.io/timebertt/speedtest-exporter:v0.1.0"})
		pinnedNginx := newDeployment(ns, "pinned", nil, []string{"docker.io/library/nginx@" + pinned.String()})
		fluentd := newDaemonSet(ns, "fluentd", nil, []string{"fluentd"})
		workloads = []client.Object{nginx, grafana, exporter, pinnedNginx, fluentd}
		for _, w := range workloads {
			Expect(k8sClient.Create(ctx, w)).To(Succeed())
		}

		want := map[string][]string{
			"nginx":              {backupHost + "/index_docker_io/library/nginx:latest"},
			"grafana":            {backupHost + "/index_docker_io/library/nginx:1.23", backupHost + "/index_docker_io/grafana/grafana:main"},
			"speedtest-exporter": {backupHost + "/ghcr_io/timebertt/speedtest-exporter:v0.1.0"},
			"pinned":             {backupHost + "/index_docker_io/library/nginx:sha256_" + pinned.Hex + "@" + pinned.String()},
			"fluentd":            {backupHost + "/index_docker_io/library/fluentd:latest"},
		}
		for _, w := range workloads {
			Eventually(templateImages(w)).Should(Equal(want[w.GetName()]), w.GetName())
		}

		By("running every pod on the rewritten images, with old ReplicaSets scaled to zero")
		for _, d := range []*appsv1.Deployment{nginx, grafana, exporter, pinnedNginx} {
			Eventually(deploymentRolledOut(d)).Should(Succeed(), d.Name)
			Eventually(podImages(ns, d.Spec.Selector.MatchLabels)).Should(HaveEach(Equal(want[d.Name])), d.Name)
		}
		nodes := &corev1.NodeList{}
		Expect(k8sClient.List(ctx, nodes)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(fluentd), fluentd)).To(Succeed())
			g.Expect(fluentd.Status.ObservedGeneration).To(Equal(fluentd.Generation))
			g.Expect(fluentd.Status.UpdatedNumberScheduled).To(BeEquivalentTo(len(nodes.Items)))
			g.Expect(fluentd.Status.NumberReady).To(BeEquivalentTo(len(nodes.Items)))
		}).Should(Succeed())
		Eventually(podImages(ns, fluentd.Spec.Selector.MatchLabels)).Should(And(
			HaveLen(len(nodes.Items)), HaveEach(Equal(want["fluentd"]))))
	})

	It("keeps a workload working after its public image is gone", func() {
		repo, image, backupImage, digest := pushRandomImage("vanishing")
		d := newDeployment(ns, "vanishing", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Eventually(templateImages(d)).Should(Equal([]string{backupImage}))
		Eventually(deploymentRolledOut(d)).Should(Succeed())

		By("deleting the image from the upstream registry")
		deleteUpstream(repo, digest)

		By("scaling up and replacing every pod, as a node rotation would")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
		d.Spec.Replicas = ptr.To[int32](3)
		Expect(k8sClient.Update(ctx, d)).To(Succeed())
		Expect(k8sClient.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns),
			client.MatchingLabels(d.Spec.Selector.MatchLabels))).To(Succeed())
		Eventually(deploymentRolledOut(d)).Should(Succeed())
		Eventually(podImages(ns, d.Spec.Selector.MatchLabels)).Should(And(HaveLen(3), HaveEach(Equal([]string{backupImage}))))

		By("serving every manifest and blob of the backup with the original digests")
		backupIndex, err := remote.Index(mustRef(backupImage))
		Expect(err).NotTo(HaveOccurred())
		Expect(backupIndex.Digest()).To(Equal(digest))
		Expect(validate.Index(backupIndex)).To(Succeed())
		manifest, err := backupIndex.IndexManifest()
		Expect(err).NotTo(HaveOccurred())
		var platforms []string
		for _, m := range manifest.Manifests {
			platforms = append(platforms, m.Platform.String())
		}
		Expect(platforms).To(ConsistOf("linux/amd64", "linux/arm64"))
	})

	It("never patches workloads in ignored namespaces or already on the backup registry", func() {
		ignoredNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "registry"}} // on the default ignore list
		Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx, ignoredNS))).To(Succeed())
		ignored := newDeployment("registry", fmt.Sprintf("ignored-%06d", rand.IntN(1_000_000)), nil, []string{"nginx:1.23"})
		onBackup := newDeployment(ns, "on-backup", nil, []string{backupHost + "/index_docker_io/library/nginx:1.23"})
		sentinel := newDeployment(ns, "sentinel", nil, []string{"nginx:1.23"})
		for _, w := range []client.Object{ignored, onBackup, sentinel} {
			Expect(k8sClient.Create(ctx, w)).To(Succeed())
		}
		Eventually(templateImages(sentinel)).Should(Equal([]string{backupHost + "/index_docker_io/library/nginx:1.23"}))
		Eventually(deploymentRolledOut(onBackup)).Should(Succeed())

		Expect(templateImages(ignored)()).To(Equal([]string{"nginx:1.23"}))
		Expect(ignored.Generation).To(BeEquivalentTo(1))
		Expect(templateImages(onBackup)()).To(Equal([]string{backupHost + "/index_docker_io/library/nginx:1.23"}))
		Expect(onBackup.Generation).To(BeEquivalentTo(1))
		workloads = append(workloads, onBackup, sentinel)
		DeferCleanup(func() { Expect(k8sClient.Delete(ctx, ignored)).To(Succeed()) })
	})

	It("neither patches nor copies anything again after a restart", func() {
		generations := map[string]int64{}
		for _, w := range workloads {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(w), w)).To(Succeed())
			generations[w.GetName()] = w.GetGeneration()
		}
		restart := exec.Command("hack/local-up.sh", "--restart-controller")
		restart.Dir = root
		out, err := restart.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))

		By("waiting until the restarted controller has reconciled every Deployment")
		// Listed after the restart: a Deployment that still exists existed when the controller's informer listed
		// (nothing is created meanwhile), whereas one listed before the restart may since have gone with the
		// namespace of an earlier spec.
		Eventually(func(g Gomega) {
			var deployments appsv1.DeploymentList
			g.Expect(k8sClient.List(ctx, &deployments)).To(Succeed())
			g.Expect(metric("controller_runtime_reconcile_total", map[string]string{"controller": "image-clone-deployment"})).To(
				BeNumerically(">=", len(deployments.Items)-countIgnored(deployments.Items)))
		}).Should(Succeed())

		for _, w := range workloads {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(w), w)).To(Succeed())
			Expect(w.GetGeneration()).To(Equal(generations[w.GetName()]), w.GetName()+" was patched again")
		}
		Expect(metric("image_clone_workloads_patched_total", nil)).To(BeZero())
		Expect(metric("image_clone_copies_total", map[string]string{"result": "copied"})).To(BeZero())
		Expect(metric("image_clone_copied_bytes_total", nil)).To(BeZero())
	})

	It("ships manifests the real API server accepts", func() {
		cmd := exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "--dry-run=server", "-k", "config/default")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(ContainSubstring("deployment.apps/image-clone-controller"))

		By("with the backup pull secret component turned on, as the README describes")
		overlay := GinkgoT().TempDir()
		abs, err := filepath.Abs(filepath.Join(root, "config"))
		Expect(err).NotTo(HaveOccurred())
		Expect(os.Symlink(abs, filepath.Join(overlay, "config"))).To(Succeed())
		Expect(os.MkdirAll(filepath.Join(overlay, "with-component"), 0o750)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(overlay, "with-component", "kustomization.yaml"), []byte(
			"resources:\n- ../config/default\ncomponents:\n- ../config/components/backup-pull-secret\n"), 0o600)).To(Succeed())
		cmd = exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "--dry-run=server", "-k", filepath.Join(overlay, "with-component"))
		out, err = cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(ContainSubstring("clusterrole.rbac.authorization.k8s.io/image-clone-controller-backup-pull-secret"))
		rendered, err := exec.Command("kubectl", "kustomize", filepath.Join(overlay, "with-component")).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(rendered))
		Expect(string(rendered)).To(ContainSubstring("--backup-pull-secret=backup-registry-pull"))
	})
})

func mustRef(s string) name.Reference {
	GinkgoHelper()
	ref, err := name.ParseReference(s)
	Expect(err).NotTo(HaveOccurred())
	return ref
}

func digestOf(ref string) v1.Hash {
	GinkgoHelper()
	desc, err := remote.Head(mustRef(ref))
	Expect(err).NotTo(HaveOccurred())
	return desc.Digest
}

// countIgnored counts the Deployments the controller never reconciles (in namespaces it ignores by default).
func countIgnored(items []appsv1.Deployment) int {
	n := 0
	for _, d := range items {
		switch d.Namespace {
		case "kube-system", "kube-public", "kube-node-lease", "local-path-storage", "registry", "image-clone-system":
			n++
		}
	}
	return n
}

// metric sums the samples of a metric from the controller's /metrics whose labels include match.
func metric(name string, match map[string]string) float64 {
	GinkgoHelper()
	samples, err := metricstest.Scrape(context.Background(), http.DefaultClient, metricsURL)
	Expect(err).NotTo(HaveOccurred())
	return samples.Sum(name, match)
}

var _ = Describe("a backup registry that loses a copy", func() {
	ctx := context.Background()

	It("never points a workload at a copy the backup registry lost, and restores it", func() {
		ns := newNamespace()
		repo, image, backupImage, digest := pushRandomImage("lost")

		first := newDeployment(ns, "first", nil, []string{image})
		Expect(k8sClient.Create(ctx, first)).To(Succeed())
		Eventually(templateImages(first)).Should(Equal([]string{backupImage}))

		restored := func() float64 { return metric("image_clone_restores_total", map[string]string{"result": "restored"}) }
		lose := func() {
			GinkgoHelper()
			storage := filepath.Join(backupStorage(), "docker", "registry", "v2", "repositories", "index_docker_io", filepath.FromSlash(repo))
			Expect(storage).To(BeADirectory())
			restoredBefore := restored()
			removeFromStorage(storage)
			if _, err := remote.Head(mustRef(backupImage)); err == nil {
				// The keeper may have verified the copy at that moment and restored it already, which it counts.
				Eventually(restored).Should(BeNumerically(">", restoredBefore), "the backup registry must really have lost the copy")
			}
		}
		By("wiping the copy's storage in the backup registry")
		lose()

		By("creating a second workload with the same image: patched only once the copy is back and verified")
		// Written again by the reconciler's copy, or by the keeper's restore if it verified the copy first.
		written := func() float64 {
			return metric("image_clone_copies_total", map[string]string{"result": "copied"}) + restored()
		}
		writtenBefore := written()
		second := newDeployment(ns, "second", nil, []string{image})
		Expect(k8sClient.Create(ctx, second)).To(Succeed())
		Eventually(templateImages(second)).Should(Equal([]string{backupImage}))
		backupIndex, err := remote.Index(mustRef(backupImage))
		Expect(err).NotTo(HaveOccurred(), "a patched workload's copy exists")
		Expect(backupIndex.Digest()).To(Equal(digest))
		Expect(validate.Index(backupIndex)).To(Succeed())
		Eventually(written).Should(BeNumerically(">", writtenBefore), "copied or restored again")
		Eventually(deploymentRolledOut(second)).Should(Succeed())

		By("wiping it again: the first workload's next reconcile restores it, and scaled-up pods start")
		lose()
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(first), first)).To(Succeed())
		first.Spec.Replicas = ptr.To[int32](2)
		Expect(k8sClient.Update(ctx, first)).To(Succeed())
		Eventually(func() error {
			idx, err := remote.Index(mustRef(backupImage))
			if err != nil {
				return err
			}
			return validate.Index(idx)
		}).Should(Succeed())
		Eventually(deploymentRolledOut(first)).Should(Succeed())
		Eventually(podImages(ns, first.Spec.Selector.MatchLabels)).Should(And(HaveLen(2), HaveEach(Equal([]string{backupImage}))))
	})
})

// pushRandomImage pushes a random two-platform index to the upstream registry as the Docker Hub image
// <prefix>-<random>:1.0 and returns its repository there (library/...), the image as a workload names it, the
// backup reference the controller is expected to write, and its digest.
func pushRandomImage(prefix string) (repo, image, backupImage string, digest v1.Hash) {
	GinkgoHelper()
	repo, image, backupImage, idx := pushRandomIndex(prefix)
	digest, err := idx.Digest()
	Expect(err).NotTo(HaveOccurred())
	return repo, image, backupImage, digest
}

// pushRandomIndex is pushRandomImage returning the index itself, so that a spec can push it again after
// deleting it.
func pushRandomIndex(prefix string) (repo, image, backupImage string, idx v1.ImageIndex) {
	GinkgoHelper()
	repo = fmt.Sprintf("library/%s-%06d", prefix, rand.IntN(1_000_000))
	idx, err := registrytest.RandomIndex(2, 2048)
	Expect(err).NotTo(HaveOccurred())
	Expect(remote.WriteIndex(mustRef(upstreamHost+"/"+repo+":1.0"), idx)).To(Succeed())
	return repo, strings.TrimPrefix(repo, "library/") + ":1.0", backupHost + "/index_docker_io/" + repo + ":1.0", idx
}

// deleteUpstream deletes an image of pushRandomImage from the upstream registry and checks that it is gone.
func deleteUpstream(repo string, digest v1.Hash) {
	GinkgoHelper()
	Expect(remote.Delete(mustRef(upstreamHost + "/" + repo + "@" + digest.String()))).To(Succeed())
	_, err := remote.Head(mustRef(upstreamHost + "/" + repo + ":1.0"))
	Expect(err).To(HaveOccurred(), "the upstream image must really be gone")
}
