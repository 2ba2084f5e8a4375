package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

// layerSize makes blobs large enough that "half a body" is a real cut in the middle of the content.
const layerSize = 256 << 10

var _ = Describe("registry faults", func() {
	ctx := context.Background()

	all := func(*http.Request) bool { return true }
	// blobs matches blob content in either direction: downloads from the upstream, uploads to the backup.
	blobs := func(r *http.Request) bool { return registrytest.BlobGets(r) || registrytest.BlobUploads(r) }

	faults := []registrytest.Fault{
		{Name: "500 on every request", Match: all, Status: http.StatusInternalServerError},
		{Name: "429 with Retry-After", Match: all, Status: http.StatusTooManyRequests, RetryAfter: "3"},
		{Name: "connection reset in the middle of a blob", Match: blobs, Reset: true},
		{Name: "truncated blob body", Match: blobs, Truncate: true},
		{Name: "blob bytes that do not match the digest", Match: blobs, Corrupt: true},
		{Name: "slow drip", Match: blobs, Drip: 2 * time.Second},
		{Name: "registry down", Match: all, Down: true},
	}

	for _, side := range []string{"upstream", "backup"} {
		for _, fault := range faults {
			It(fmt.Sprintf("survives %s from the %s registry", fault.Name, side), func() {
				inject := upstreamFaults
				if side == "backup" {
					inject = backupFaults
				}
				repo := fmt.Sprintf("library/fault-%06d", rand.IntN(1_000_000))
				digest, err := upstream.PushIndex(repo+":1", 2, layerSize)
				Expect(err).NotTo(HaveOccurred())
				image := repo[len("library/"):] + ":1"
				mapping, err := backupRef.Map(image)
				Expect(err).NotTo(HaveOccurred())

				inject.Set(fault)
				DeferCleanup(inject.Clear)
				ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "fault-"}}
				Expect(k8sClient.Create(ctx, ns)).To(Succeed())
				d := workloadtest.Deployment(ns.Name, "app", nil, []string{image})
				Expect(k8sClient.Create(ctx, d)).To(Succeed())

				By("reporting the fault in a Warning Event without patching the workload")
				Eventually(func() ([]string, error) { return workloadtest.Events(ctx, k8sClient, d) }).Should(ContainElement(And(
					HavePrefix("Warning "+controller.ReasonBackupFailed),
					ContainSubstring("Cannot back up image "+image),
				)))
				Eventually(inject.Hits).Should(BeNumerically(">=", 2), "the failed request is retried")
				Expect(workloadtest.TemplateImages(ctx, k8sClient, d)).To(Equal([]string{image}),
					"no workload may point at a copy before it is complete and verified")
				if fault.RetryAfter != "" {
					hits := inject.HitTimes()
					Expect(hits[1].Sub(hits[0])).To(BeNumerically(">=", 2900*time.Millisecond), "Retry-After is honoured")
				}

				By("converging once the fault clears")
				inject.Clear()
				Eventually(func() ([]string, error) { return workloadtest.TemplateImages(ctx, k8sClient, d) }).
					Should(Equal([]string{mapping.PodImage()}))

				By("holding a complete, byte-identical copy")
				direct, err := name.ParseReference(backup.Backend + "/" + mapping.Target.RepositoryStr() + ":" + mapping.Target.TagStr())
				Expect(err).NotTo(HaveOccurred())
				idx, err := remote.Index(direct)
				Expect(err).NotTo(HaveOccurred())
				Expect(idx.Digest()).To(Equal(digest))
				Expect(validate.Index(idx)).To(Succeed())
				Expect(k8sClient.Delete(ctx, ns, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
			})
		}
	}
})
