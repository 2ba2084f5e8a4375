package controller_test

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

var _ = Describe("backups as the backup registry holds them now", func() {
	ctx := context.Background()

	It("never points a new workload at a copy the backup lost, and restores it for the first workload", func() {
		app := unique("lost")
		digest := pushUpstream("library/" + app + ":1")
		image := app + ":1"
		backupRef, err := name.ParseReference(backupOf(image))
		Expect(err).NotTo(HaveOccurred())
		ns := newNamespace(nil)
		first := newDeployment(ns, "first", nil, []string{image})
		Expect(k8sClient.Create(ctx, first)).To(Succeed())
		Eventually(templateImages(first)).Should(Equal([]string{backupOf(image)}))

		By("losing the copy in the backup registry")
		Expect(backupReg.LoseRepository(backupRef.Context().RepositoryStr(), "1")).To(Succeed())
		_, err = remote.Head(backupRef)
		Expect(err).To(HaveOccurred())

		By("holding the copy for a second workload with the same image: it is not patched meanwhile")
		copied := counterValue("image_clone_copies_total", map[string]string{"result": "copied"})
		release := gate.Hold(image)
		second := newDeployment(ns, "second", nil, []string{image})
		Expect(k8sClient.Create(ctx, second)).To(Succeed())
		Eventually(func() bool { return gate.Waiting(image) }).Should(BeTrue(), "the second workload asks for a copy")
		Expect(templateImages(second)()).To(Equal([]string{image}), "not patched while its copy is missing")
		release()

		Eventually(templateImages(second)).Should(Equal([]string{backupOf(image)}))
		Expect(counterValue("image_clone_copies_total", map[string]string{"result": "copied"})).To(BeNumerically(">", copied),
			"copied again, not answered from what the process remembered")
		idx, err := remote.Index(backupRef)
		Expect(err).NotTo(HaveOccurred())
		Expect(idx.Digest()).To(Equal(digest))
		Expect(validate.Index(idx)).To(Succeed())

		By("losing it again: the first workload's next reconcile restores it")
		Expect(backupReg.LoseRepository(backupRef.Context().RepositoryStr(), "1")).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(first), first)).To(Succeed())
		first.Annotations = map[string]string{"example.com/touched": "yes"}
		Expect(k8sClient.Update(ctx, first)).To(Succeed())
		Eventually(func() error {
			idx, err := remote.Index(backupRef)
			if err != nil {
				return err
			}
			return validate.Index(idx)
		}).Should(Succeed())
	})

	It("requeues a workload whose registry asked for a long pause instead of holding a worker", func() {
		limited := &registrytest.Faults{}
		limitedUpstream := registrytest.Front(upstream.Host, limited.Middleware)
		DeferCleanup(limitedUpstream.Close)
		waiting := []string{unique("paused-a") + ":1", unique("paused-b") + ":1"}
		opts := copierOptions()
		opts.Mirrors = map[string]registry.Mirror{"index.docker.io": {Registry: limitedUpstream.Host}}
		paused := registry.New(opts)
		for _, image := range waiting {
			pushUpstream("library/" + image)
			DeferCleanup(gate.Route(image, paused))
		}
		limited.Set(registrytest.Fault{Name: "rate limited", Status: http.StatusTooManyRequests, RetryAfter: "120",
			Match: func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/paused-") }})

		By("keeping both of the suite's Deployment workers busy with rate-limited workloads, if they were held")
		ns := newNamespace(nil)
		var workloads []client.Object
		for i, image := range waiting {
			d := newDeployment(ns, []string{"paused-a", "paused-b"}[i], nil, []string{image})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			workloads = append(workloads, d)
		}
		for _, d := range workloads {
			Eventually(eventsOf(d)).Should(ContainElement(And(HavePrefix("Warning "+controller.ReasonBackupFailed),
				ContainSubstring("the registry asked to come back in 2m0s; retrying then"))))
		}

		By("reconciling another workload meanwhile")
		healthy := unique("healthy") + ":1"
		pushUpstream("library/" + healthy)
		other := newDeployment(ns, "healthy", nil, []string{healthy})
		Expect(k8sClient.Create(ctx, other)).To(Succeed())
		Eventually(templateImages(other), 30*time.Second).Should(Equal([]string{backupOf(healthy)}))

		for i, d := range workloads {
			Expect(templateImages(d)()).To(Equal([]string{waiting[i]}), "not patched while the registry asks to wait")
		}
		Expect(limited.Hits()).To(Equal(len(waiting)), "each paused workload asked once, and waits for the requeue")
	})
})
