//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/inventory"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

// The specs here need the short verification interval that `make test-e2e` gives the local controller
// (E2E_CONTROLLER_ARGS in the Makefile): with the default hour, nothing they wait for would happen in time.
var _ = Describe("the ImageBackup inventory", func() {
	ctx := context.Background()

	It("restores every copy after the backup registry's storage is wiped, and scaled-up pods start", func() {
		ns := newNamespace()
		_, scaledImage, scaledBackup, scaledDigest := pushRandomImage("wiped")
		_, idleImage, idleBackup, _ := pushRandomImage("wiped-idle")
		scaled := newDeployment(ns, "scaled", nil, []string{scaledImage})
		// Nothing reconciles the idle workload after the wipe, so only the keeper can bring its copy back.
		idle := newDeployment(ns, "idle", nil, []string{idleImage})
		for _, d := range []client.Object{scaled, idle} {
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
		}
		Eventually(templateImages(scaled)).Should(Equal([]string{scaledBackup}))
		Eventually(templateImages(idle)).Should(Equal([]string{idleBackup}))
		Eventually(deploymentRolledOut(scaled)).Should(Succeed())
		Eventually(deploymentRolledOut(idle)).Should(Succeed())
		for _, backup := range []string{scaledBackup, idleBackup} {
			Eventually(imageBackupPhase(backup)).Should(Equal(v1alpha1.PhaseReady), backup)
		}

		By("recording every copy in the cluster whose source the upstream registry still has, and those it lost")
		restorable, lostForGood := map[string]string{}, map[string]string{}
		var idleCopied metav1.Time
		list := &v1alpha1.ImageBackupList{}
		Expect(k8sClient.List(ctx, list)).To(Succeed())
		for _, ib := range list.Items {
			upstream, mirrored := upstreamAt(ib.Spec.Source, ib.Status.Digest)
			if ib.Status.Phase != v1alpha1.PhaseReady || !mirrored || !strings.HasPrefix(ib.Spec.Backup, backupHost+"/") {
				continue // a copy of a registry an earlier spec ran and stopped, or not Ready: not comparable
			}
			if _, err := remote.Head(upstream); err != nil {
				Expect(isNotFound(err)).To(BeTrue(), "asking the upstream registry for %s: %v", upstream, err)
				lostForGood[ib.Name] = ib.Status.Digest
				continue
			}
			restorable[ib.Name] = ib.Status.Digest
			if ib.Spec.Backup == idleBackup {
				Expect(ib.Status.LastCopied).NotTo(BeNil(), "the idle workload's copy was made for it")
				idleCopied = *ib.Status.LastCopied
			}
			Expect(digestOf(ib.Spec.Backup).String()).To(Equal(ib.Status.Digest), ib.Spec.Backup)
		}
		Expect(restorable).To(HaveKey(inventory.ObjectName(scaledBackup)))
		Expect(restorable).To(HaveKey(inventory.ObjectName(idleBackup)))
		restoredBefore := metric("image_clone_restores_total", map[string]string{"result": "restored"})
		copiedBefore := metric("image_clone_copies_total", map[string]string{"result": "copied"})

		By("deleting everything under the backup registry's storage root, while the registry runs")
		// The local registry has no blob descriptor cache (hack/local-up.sh), so it serves from the files only
		// and needs no restart.
		wipeBackupStorage()

		By("scaling a Deployment up while its copy is gone")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(scaled), scaled)).To(Succeed())
		scaled.Spec.Replicas = ptr.To[int32](3)
		Expect(k8sClient.Update(ctx, scaled)).To(Succeed())

		By("seeing every copy back at the digest recorded before the wipe, and its ImageBackup Ready")
		for ibName, digest := range restorable {
			ib := &v1alpha1.ImageBackup{}
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ibName}, ib)).To(Succeed())
				desc, err := remote.Head(mustRef(ib.Spec.Backup))
				g.Expect(err).NotTo(HaveOccurred(), "the backup tag is not back yet")
				g.Expect(desc.Digest.String()).To(Equal(digest))
				g.Expect(ib.Status.Phase).To(Equal(v1alpha1.PhaseReady))
				g.Expect(ib.Status.Digest).To(Equal(digest))
			}).Should(Succeed(), ibName)
			idx, err := remote.Index(mustRef(ib.Spec.Backup))
			Expect(err).NotTo(HaveOccurred(), ib.Spec.Backup)
			Expect(validate.Index(idx)).To(Succeed(), ib.Spec.Backup)
		}
		By("marking those whose source is gone too Unrecoverable")
		for ibName := range lostForGood {
			Eventually(func() (v1alpha1.Phase, error) {
				ib := &v1alpha1.ImageBackup{}
				err := k8sClient.Get(ctx, client.ObjectKey{Name: ibName}, ib)
				return ib.Status.Phase, err
			}).Should(Equal(v1alpha1.PhaseUnrecoverable), ibName)
		}

		By("the keeper having restored the idle workload's copy, and told the workload")
		idleIB := &v1alpha1.ImageBackup{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: inventory.ObjectName(idleBackup)}, idleIB)).To(Succeed())
		// The copy was verified first a verify interval after it was made, so a restore is seconds later.
		Expect(idleIB.Status.LastCopied.After(idleCopied.Time)).To(BeTrue(), "lastCopied %s, before the wipe %s", idleIB.Status.LastCopied, idleCopied)
		Eventually(func() ([]string, error) { return workloadtest.Events(ctx, k8sClient, idle) }).Should(And(
			ContainElement(HavePrefix("Warning BackupLost: The backup "+idleBackup+" of index.docker.io/library/"+idleImage+" was lost")),
			ContainElement(HavePrefix("Normal Restored: The backup "+idleBackup+" was restored"))))
		// Each copy was written again by a restore of the keeper or by a copy of the workload reconciler (the
		// scaled Deployment's reconcile may come first); restores are counted when they end, before the status
		// says Ready, copies right after the copier reported them.
		Eventually(func() float64 {
			return metric("image_clone_restores_total", map[string]string{"result": "restored"}) - restoredBefore +
				metric("image_clone_copies_total", map[string]string{"result": "copied"}) - copiedBefore
		}).Should(BeNumerically(">=", len(restorable)))
		Expect(metric("image_clone_restores_total", map[string]string{"result": "restored"})).To(BeNumerically(">", restoredBefore))

		By("running the scaled-up Deployment's new pods on the restored copy")
		Eventually(deploymentRolledOut(scaled)).Should(Succeed())
		Eventually(podImages(ns, scaled.Spec.Selector.MatchLabels)).Should(And(HaveLen(3), HaveEach(Equal([]string{scaledBackup}))))
		Expect(digestOf(scaledBackup)).To(Equal(scaledDigest))
	})

	It("marks a copy whose image exists nowhere Unrecoverable, warns its workloads, and restores it once the image is back", func() {
		ns := newNamespace()
		repo, image, backup, idx := pushRandomIndex("nowhere")
		digest, err := idx.Digest()
		Expect(err).NotTo(HaveOccurred())
		d := newDeployment(ns, "doomed", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Eventually(templateImages(d)).Should(Equal([]string{backup}))
		Eventually(deploymentRolledOut(d)).Should(Succeed())
		ibName := inventory.ObjectName(backup)
		Eventually(imageBackupPhase(backup)).Should(Equal(v1alpha1.PhaseReady))

		By("deleting the image upstream and its copy in the backup registry (the manifests by digest)")
		deleteUpstream(repo, digest)
		Expect(remote.Delete(mustRef(strings.TrimSuffix(backup, ":1.0") + "@" + digest.String()))).To(Succeed())

		By("listing it Unrecoverable")
		Eventually(func(g Gomega) {
			row := imageBackupRow(g, ibName)
			g.Expect(row).To(HaveKeyWithValue("PHASE", string(v1alpha1.PhaseUnrecoverable)))
			g.Expect(row).To(HaveKeyWithValue("DIGEST", digest.Hex[:12]), "the digest it was copied at")
		}).Should(Succeed())
		Expect(metric("image_clone_backups_unrecoverable", nil)).To(BeNumerically(">=", 1))
		Expect(metric("image_clone_restores_total", map[string]string{"result": "unrecoverable"})).To(BeNumerically(">=", 1))

		By("warning on its workload that new pods will not start")
		Eventually(func() ([]string, error) { return workloadtest.Events(ctx, k8sClient, d) }).Should(ContainElement(And(
			HavePrefix("Warning Unrecoverable: Its image exists nowhere: new pods will not start."),
			ContainSubstring(backup), ContainSubstring(digest.String()))))

		By("pushing the image back upstream: the copy is restored at its digest")
		Expect(remote.WriteIndex(mustRef(upstreamHost+"/"+repo+":1.0"), idx)).To(Succeed())
		Eventually(imageBackupPhase(backup)).Should(Equal(v1alpha1.PhaseReady))
		backupIndex, err := remote.Index(mustRef(backup))
		Expect(err).NotTo(HaveOccurred())
		Expect(backupIndex.Digest()).To(Equal(digest))
		Expect(validate.Index(backupIndex)).To(Succeed())
		Eventually(func() ([]string, error) { return workloadtest.Events(ctx, k8sClient, d) }).Should(
			ContainElement(HavePrefix("Normal Restored: The backup " + backup + " was restored at " + digest.String())))

		By("starting new pods on it again")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
		d.Spec.Replicas = ptr.To[int32](2)
		Expect(k8sClient.Update(ctx, d)).To(Succeed())
		Eventually(deploymentRolledOut(d)).Should(Succeed())
		Eventually(podImages(ns, d.Spec.Selector.MatchLabels)).Should(And(HaveLen(2), HaveEach(Equal([]string{backup}))))
	})

	It("lists the README's examples with their source, digest, size, phase, verification and users", func() {
		ns := newNamespace()
		examples := map[string]struct{ source, upstream, backup string }{
			"nginx":              {"index.docker.io/library/nginx:latest", "library/nginx:latest", "index_docker_io/library/nginx:latest"},
			"grafana":            {"index.docker.io/grafana/grafana:main", "grafana/grafana:main", "index_docker_io/grafana/grafana:main"},
			"speedtest-exporter": {"ghcr.io/timebertt/speedtest-exporter:v0.1.0", "ghcr/timebertt/speedtest-exporter:v0.1.0", "ghcr_io/timebertt/speedtest-exporter:v0.1.0"},
			"fluentd":            {"index.docker.io/library/fluentd:latest", "library/fluentd:latest", "index_docker_io/library/fluentd:latest"},
		}
		workloads := []client.Object{
			newDeployment(ns, "nginx", nil, []string{"nginx"}),
			newDeployment(ns, "grafana", nil, []string{"grafana/grafana:main"}),
			newDeployment(ns, "speedtest-exporter", nil, []string{"ghcr.io/timebertt/speedtest-exporter:v0.1.0"}),
			newDaemonSet(ns, "fluentd", nil, []string{"fluentd"}),
		}
		for _, w := range workloads {
			Expect(k8sClient.Create(ctx, w)).To(Succeed())
		}
		for _, w := range workloads {
			Eventually(templateImages(w)).Should(Equal([]string{backupHost + "/" + examples[w.GetName()].backup}), w.GetName())
		}

		header := kubectlGet(Default, "imagebackups")[0]
		Expect(header).To(Equal([]string{"NAME", "SOURCE", "DIGEST", "SIZE", "PHASE", "VERIFIED", "USED BY", "AGE"}))
		for _, w := range workloads {
			example := examples[w.GetName()]
			backup := backupHost + "/" + example.backup
			digest := digestOf(upstreamHost + "/" + example.upstream)
			Eventually(func(g Gomega) {
				row := imageBackupRow(g, inventory.ObjectName(backup))
				g.Expect(row).To(HaveKeyWithValue("SOURCE", example.source))
				g.Expect(row).To(HaveKeyWithValue("BACKUP", backup))
				g.Expect(row).To(HaveKeyWithValue("DIGEST", digest.Hex[:12]))
				g.Expect(row).To(HaveKeyWithValue("SIZE", MatchRegexp(`^[0-9.]+(B|KiB|MiB|GiB)$`)))
				g.Expect(row).To(HaveKeyWithValue("PHASE", string(v1alpha1.PhaseReady)))
				g.Expect(row).To(HaveKeyWithValue("VERIFIED", MatchRegexp(`^[0-9][0-9a-z]*$`)), "an age, not <unknown>")
				usedBy, err := strconv.Atoi(row["USED BY"])
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(usedBy).To(BeNumerically(">=", 1))
			}).Should(Succeed(), w.GetName())
		}
	})
})

// upstreamAt returns where the local cluster's controller pulls source at digest from (its --source-mirror
// flags), and false for a source it does not mirror.
func upstreamAt(source, digest string) (name.Reference, bool) {
	ref, err := name.ParseReference(source)
	if err != nil || digest == "" {
		return nil, false
	}
	var repo string
	switch ref.Context().RegistryStr() {
	case name.DefaultRegistry:
		repo = ref.Context().RepositoryStr()
	case "ghcr.io":
		repo = "ghcr/" + ref.Context().RepositoryStr()
	default:
		return nil, false
	}
	return mustRef(upstreamHost + "/" + repo + "@" + digest), true
}

// wipeBackupStorage deletes everything the backup registry stores.
func wipeBackupStorage() {
	GinkgoHelper()
	root := backupStorage()
	entries, err := os.ReadDir(root)
	Expect(err).NotTo(HaveOccurred())
	Expect(entries).NotTo(BeEmpty(), "the backup registry has stored nothing in %s: is that its root directory?", root)
	// What restores write meanwhile lands in a new tree, so the root is not checked to be empty afterwards.
	for _, e := range entries {
		removeFromStorage(filepath.Join(root, e.Name()))
	}
}

// imageBackupPhase returns the phase of the ImageBackup of the copy backup.
func imageBackupPhase(backup string) func() (v1alpha1.Phase, error) {
	return func() (v1alpha1.Phase, error) {
		ib := &v1alpha1.ImageBackup{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: inventory.ObjectName(backup)}, ib); err != nil {
			return "", err
		}
		if ib.Spec.Backup != backup {
			return "", StopTrying("ImageBackup " + ib.Name + " records " + ib.Spec.Backup + ", not " + backup)
		}
		return ib.Status.Phase, nil
	}
}

// imageBackupRow returns the row of ImageBackup ibName in `kubectl get imagebackups -o wide`, by column.
func imageBackupRow(g Gomega, ibName string) map[string]string {
	table := kubectlGet(g, "imagebackups", "-o", "wide")
	for _, cells := range table[1:] {
		if cells[0] == ibName {
			row := map[string]string{}
			for i, column := range table[0] {
				row[column] = cells[i]
			}
			return row
		}
	}
	var names []string
	for _, cells := range table[1:] {
		names = append(names, cells[0])
	}
	g.Expect(names).To(ContainElement(ibName), "kubectl lists no such ImageBackup")
	return nil
}

// columnGap separates the columns of kubectl's tables: at least two spaces (a header such as "USED BY" holds one).
var columnGap = regexp.MustCompile(` {2,}`)

// kubectlGet runs `kubectl get ARGS` against the local cluster and returns its table: the header's column
// names first, then each row's cells. The cells are cut at the columns' positions in the header, where kubectl
// aligns them, so cells may hold spaces.
func kubectlGet(g Gomega, args ...string) [][]string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig, "get"}, args...)...).CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	starts := []int{0}
	for _, m := range columnGap.FindAllStringIndex(lines[0], -1) {
		starts = append(starts, m[1])
	}
	cut := func(line string) []string {
		cells := make([]string, len(starts))
		for i, start := range starts {
			end := len(line)
			if i+1 < len(starts) {
				end = min(starts[i+1], len(line))
			}
			if start < end {
				cells[i] = strings.TrimSpace(line[start:end])
			}
		}
		return cells
	}
	table := make([][]string, 0, len(lines))
	for _, line := range lines {
		table = append(table, cut(line))
	}
	return table
}
