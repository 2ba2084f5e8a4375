//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// The specs here replace the local cluster's controller with processes of their own, whose source mirror is
// a slow proxy in front of the upstream registry, so that a copy is reliably in flight when they kill one.
var _ = Describe("controller crashes", Ordered, func() {
	ctx := context.Background()
	// drip slows the blob downloads that pass slowUpstream, in front of the upstream registry.
	drip := &registrytest.Faults{}
	var slowUpstream *registrytest.Registry

	BeforeAll(func() {
		slowUpstream = registrytest.Front(upstreamHost, drip.Middleware)
		DeferCleanup(slowUpstream.Close)
		stopLocalController()
		DeferCleanup(restoreLocalCluster)
	})

	// slowImage pushes a two-platform image whose copy through the drip proxy takes several seconds.
	slowImage := func() (image, backupImage, repo string) {
		repo = fmt.Sprintf("library/slow-%06d", rand.IntN(1_000_000))
		idx, err := registrytest.RandomIndex(2, 1<<20)
		Expect(err).NotTo(HaveOccurred())
		Expect(remote.WriteIndex(mustRef(upstreamHost+"/"+repo+":1"), idx)).To(Succeed())
		return strings.TrimPrefix(repo, "library/") + ":1", backupHost + "/index_docker_io/" + repo + ":1", repo
	}

	// copyInFlight succeeds once layer downloads have started: through the drip a 1 MiB layer takes over three
	// seconds, so the copy cannot be complete yet.
	copyInFlight := func(string) func(Gomega) {
		return func(g Gomega) {
			g.Expect(drip.Hits()).To(BeNumerically(">=", 3))
		}
	}

	It("never references a partial copy when killed mid-copy, and finishes after a restart", func() {
		drip.Set(registrytest.Fault{Name: "slow upstream", Match: registrytest.BlobGets, Drip: 100 * time.Millisecond})
		first := startController("crash-1", slowUpstream.Host)
		image, backupImage, repo := slowImage()
		ns := newNamespace()
		d := newDeployment(ns, "app", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())

		Eventually(copyInFlight(repo)).Should(Succeed())
		Expect(first.Process.Signal(syscall.SIGKILL)).To(Succeed())
		_ = first.Wait()

		Expect(templateImages(d)()).To(Equal([]string{image}), "the workload must not point at a partial copy")
		_, err := remote.Head(mustRef(backupImage))
		Expect(isNotFound(err)).To(BeTrue(), "the backup tag must not exist before the copy is complete: %v", err)

		drip.Clear()
		second := startController("crash-2", slowUpstream.Host)
		DeferCleanup(func() { stopProcess(second) })
		Eventually(templateImages(d)).Should(Equal([]string{backupImage}))
		idx, err := remote.Index(mustRef(backupImage))
		Expect(err).NotTo(HaveOccurred())
		Expect(validate.Index(idx)).To(Succeed())
	})

	It("hands over to the other replica when the leader dies mid-copy", func() {
		drip.Set(registrytest.Fault{Name: "slow upstream", Match: registrytest.BlobGets, Drip: 100 * time.Millisecond})
		leader := startController("leader", slowUpstream.Host, "--leader-elect")
		Eventually(leaseHolder).ShouldNot(BeEmpty())
		firstHolder := leaseHolder()
		standby := startController("standby", slowUpstream.Host, "--leader-elect")
		DeferCleanup(func() { stopProcess(standby) })

		image, backupImage, repo := slowImage()
		ns := newNamespace()
		d := newDeployment(ns, "app", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Eventually(copyInFlight(repo)).Should(Succeed())
		Expect(leader.Process.Signal(syscall.SIGKILL)).To(Succeed())
		_ = leader.Wait()
		drip.Clear()

		By("the standby taking the lease once it expires, and converging")
		Eventually(leaseHolder, "60s").ShouldNot(Equal(firstHolder))
		Eventually(templateImages(d)).Should(Equal([]string{backupImage}))
		idx, err := remote.Index(mustRef(backupImage))
		Expect(err).NotTo(HaveOccurred())
		Expect(validate.Index(idx)).To(Succeed())
	})
})

// startController runs a controller process like the local cluster's, with its source mirror for Docker Hub at
// mirror, its own metrics, probe and webhook ports, and extra flags; it returns once the process is ready.
// Its webhook is served where the API server does not call it (the local controller's port stays unused), so
// that two such processes can run at once, and with a certificate directory of its own.
func startController(name, mirror string, extra ...string) *exec.Cmd {
	GinkgoHelper()
	localDir := localDir()
	probePort := strconv.Itoa(19000 + rand.IntN(1000))
	webhookPort := strconv.Itoa(20000 + rand.IntN(1000))
	args := append([]string{
		"--kubeconfig=" + filepath.Join(localDir, "controller.kubeconfig"),
		"--backup-registry=" + backupHost,
		"--source-mirror=index.docker.io=" + mirror,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=127.0.0.1:" + probePort,
		"--webhook-host=127.0.0.1",
		"--webhook-port=" + webhookPort,
		"--webhook-cert-dir=" + GinkgoT().TempDir(),
		"--webhook-cert-names=localhost",
	}, extra...)
	cmd := exec.CommandContext(context.Background(), filepath.Join(root, "bin", "image-clone-controller"), args...)
	cmd.Env = append(os.Environ(), "POD_NAMESPACE=image-clone-system")
	logFile, err := os.Create(filepath.Join(localDir, "logs", "e2e-"+name+".log"))
	Expect(err).NotTo(HaveOccurred())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(logFile.Close)
	Eventually(func() (int, error) {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://127.0.0.1:"+probePort+"/readyz", nil)
		if err != nil {
			return 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, nil
	}, "60s").Should(Equal(http.StatusOK), "controller %s did not become ready; see %s", name, logFile.Name())
	return cmd
}

func stopProcess(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// stopLocalController stops the controller that `make local-up` started; restoreLocalCluster starts every
// component that is not running (local-up leaves running ones alone).
func stopLocalController() {
	GinkgoHelper()
	b, err := os.ReadFile(filepath.Join(localDir(), "pids", "controller.pid"))
	Expect(err).NotTo(HaveOccurred())
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	Expect(err).NotTo(HaveOccurred())
	proc, err := os.FindProcess(pid)
	Expect(err).NotTo(HaveOccurred())
	Expect(proc.Signal(syscall.SIGTERM)).To(Succeed())
	Eventually(func() error { return proc.Signal(syscall.Signal(0)) }, "30s").Should(HaveOccurred())
}

func restoreLocalCluster() {
	GinkgoHelper()
	cmd := exec.CommandContext(context.Background(), "hack/local-up.sh")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "LOCAL_DIR="+localDir(), "LOCAL_SEED=false")
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
}

// localDir is the local cluster's state directory, as an absolute path: local-up.sh recognizes its processes
// by the directory on their command lines.
func localDir() string {
	dir := os.Getenv("LOCAL_DIR")
	if dir == "" {
		dir = filepath.Join(root, ".local")
	}
	abs, err := filepath.Abs(dir)
	Expect(err).NotTo(HaveOccurred())
	return abs
}

func leaseHolder() string {
	lease := &coordinationv1.Lease{}
	key := client.ObjectKey{Namespace: "image-clone-system", Name: "image-clone-controller.image-clone-controller.io"}
	if err := k8sClient.Get(context.Background(), key, lease); err != nil || lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

func isNotFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}

var _ = Describe("an API server restart", func() {
	It("is ridden out: workloads created afterwards are still backed up", func() {
		ctx := context.Background()
		b, err := os.ReadFile(filepath.Join(localDir(), "pids", "kube-apiserver.pid"))
		Expect(err).NotTo(HaveOccurred())
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		Expect(err).NotTo(HaveOccurred())
		proc, err := os.FindProcess(pid)
		Expect(err).NotTo(HaveOccurred())
		Expect(proc.Signal(syscall.SIGKILL)).To(Succeed())
		Eventually(func() error { return proc.Signal(syscall.Signal(0)) }, "30s").Should(HaveOccurred())

		restoreLocalCluster()
		ns := newNamespace()
		d := newDeployment(ns, "after-restart", nil, []string{"nginx:1.23"})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Eventually(templateImages(d)).Should(Equal([]string{backupHost + "/index_docker_io/library/nginx:1.23"}))
	})
})
