package inventory_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/inventory"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

var _ = Describe("usage writes", func() {
	ctx := context.Background()

	It("writes the usage of a copy many new workloads use every UsageWriteInterval, not once per workload", func() {
		const (
			workloads = 40
			interval  = 2 * time.Second
		)
		reg := registrytest.NewInProcess()
		DeferCleanup(reg.Close)
		// Verified once an hour: the only status writes of the spec are the copy's and those of its usage.
		b, copier := keeperWith(reg, inventory.Options{VerifyInterval: time.Hour, UsageWriteInterval: interval})
		image := unique("burst") + ":1"
		pod := copied(copier, b, image)
		name := imageBackup(b, image)().Name

		watcher, err := client.NewWithWatch(restConfig, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		w, err := watcher.Watch(ctx, &v1alpha1.ImageBackupList{},
			client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(w.Stop)
		var writes []time.Time
		counted := make(chan int32, 1)
		go func() {
			defer GinkgoRecover()
			for ev := range w.ResultChan() {
				if ev.Type != watch.Modified {
					continue
				}
				writes = append(writes, time.Now())
				if n := ev.Object.(*v1alpha1.ImageBackup).Status.UsedBy.Count; n == workloads {
					counted <- n
					return
				}
			}
		}()

		for i := range workloads {
			Expect(k8sClient.Create(ctx, workloadtest.Deployment("usage-writes", fmt.Sprintf("%s-%02d", name, i), nil, []string{pod}))).To(Succeed())
		}
		Eventually(counted).Should(Receive(BeEquivalentTo(workloads)), "every workload is counted in the end")
		// Writes are at least interval apart: as many as the intervals the writes spanned, plus the first (and one
		// for a watch that delivered the first of them late).
		span := writes[len(writes)-1].Sub(writes[0])
		Expect(len(writes)).To(BeNumerically("<=", 2+int(span/interval)),
			"%d status writes over %s for %d new workloads", len(writes), span, workloads)
		Expect(len(writes)).To(BeNumerically("<", workloads/2))
		Expect(statusOf(b, image)().Phase).To(Equal(v1alpha1.PhaseReady))
	})
})
