package controller_test

import (
	"context"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

var _ = Describe("signatures and attestations that cannot be copied", func() {
	ctx := context.Background()

	// failReferrers makes the upstream answer 500 to every referrers request for repo.
	failReferrers := func(repo string) {
		upstream.Use(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if strings.Contains(req.URL.Path, "/"+repo+"/referrers/") {
					http.Error(w, "injected", http.StatusInternalServerError)
					return
				}
				next.ServeHTTP(w, req)
			})
		})
		DeferCleanup(upstream.ResetMiddleware)
	}
	withArtifacts := func(optional bool) *registry.Copier {
		opts := copierOptions()
		opts.Artifacts, opts.ArtifactsOptional = true, optional
		return registry.New(opts)
	}

	It("keeps the workload on its original image until they can be copied", func() {
		image := unique("signed") + ":1.0"
		pushUpstream("library/" + image)
		failReferrers("library/" + strings.Split(image, ":")[0])
		DeferCleanup(gate.Route(image, withArtifacts(false)))
		d := newDeployment(newNamespace(nil), "app", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())

		Eventually(eventsOf(d)).Should(ContainElement(And(HavePrefix("Warning "+controller.ReasonBackupFailed),
			ContainSubstring("signatures and attestations"))))
		Consistently(templateImages(d)).WithTimeout(2 * time.Second).Should(Equal([]string{image}))
	})

	It("points the workload at the copy and warns with --referrers-optional", func() {
		image := unique("optional") + ":1.0"
		pushUpstream("library/" + image)
		failReferrers("library/" + strings.Split(image, ":")[0])
		DeferCleanup(gate.Route(image, withArtifacts(true)))
		d := newDeployment(newNamespace(nil), "app", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())

		Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
		Eventually(eventsOf(d)).Should(ContainElement(And(HavePrefix("Warning "+controller.ReasonBackupIncomplete),
			ContainSubstring(image), ContainSubstring("signature policy may reject"))))
	})
})
