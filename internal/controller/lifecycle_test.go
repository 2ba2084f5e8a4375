package controller_test

import (
	"context"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var _ = Describe("workload lifecycle", func() {
	ctx := context.Background()

	It("finishes the copy quietly when the workload is deleted while its image is copied", func() {
		image := unique("deleted") + ":1"
		digest := pushUpstream("library/" + image)
		release := gate.Hold(image)
		ns := newNamespace(nil)
		d := newDeployment(ns, "app", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Eventually(func() bool { return gate.Waiting(image) }).Should(BeTrue())

		Expect(k8sClient.Delete(ctx, d)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d))
		}).Should(BeTrue())
		release()

		By("keeping the verified copy for the next workload that needs it")
		ref, err := name.ParseReference(backupOf(image))
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() (string, error) {
			desc, err := remote.Head(ref)
			if err != nil {
				return "", err
			}
			return desc.Digest.String(), nil
		}).Should(Equal(digest.String()))

		By("backing up a workload created afterwards in the same namespace")
		again := newDeployment(ns, "again", nil, []string{image})
		Expect(k8sClient.Create(ctx, again)).To(Succeed())
		Eventually(templateImages(again)).Should(Equal([]string{backupOf(image)}))
	})
})
