package controller_test

import (
	"context"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

var _ = Describe("bad input", func() {
	ctx := context.Background()

	It("reports invalid and absurdly long references and still backs up the valid images", func() {
		good := unique("good-neighbour") + ":1"
		pushUpstream("library/" + good)
		tooLong := "registry.example.com/" + strings.Repeat("a", 300) + ":1"
		badDigest := "nginx@sha256:abc"
		ns := newNamespace(nil)
		d := newDeployment(ns, "app", []string{badDigest}, []string{good, tooLong})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())

		Eventually(templateImages(d)).Should(Equal([]string{badDigest, backupOf(good), tooLong}))
		Eventually(eventsOf(d)).Should(ContainElements(
			And(HavePrefix("Warning "+controller.ReasonBackupFailed), ContainSubstring(badDigest)),
			And(HavePrefix("Warning "+controller.ReasonBackupFailed), ContainSubstring(tooLong[:40])),
		))
	})

	It("handles a pod template with a thousand containers in one patch", func() {
		images := make([]string, 0, 1000)
		distinct := make([]string, 0, 20)
		for i := range 20 {
			image := unique(fmt.Sprintf("many-%02d", i)) + ":1"
			pushUpstream("library/" + image)
			distinct = append(distinct, image)
		}
		for i := range 1000 {
			images = append(images, distinct[i%len(distinct)])
		}
		ns := newNamespace(nil)
		d := newDeployment(ns, "crowded", nil, images)
		// Containers need distinct names; the apiserver checks.
		for i := range d.Spec.Template.Spec.Containers {
			d.Spec.Template.Spec.Containers[i].Name = fmt.Sprintf("c-%04d", i)
		}
		Expect(k8sClient.Create(ctx, d)).To(Succeed())

		want := make([]string, len(images))
		for i, image := range images {
			want[i] = backupOf(image)
		}
		Eventually(templateImages(d)).Should(Equal(want))
		Expect(d.Generation).To(BeEquivalentTo(2), "every image in one patch")
		Expect(d.Spec.Template.Spec.Containers).To(HaveLen(1000))
	})

	It("reports an image index that references a manifest its registry does not have, and backs up the other images", func() {
		broken := unique("incomplete-index") + ":1"
		missing := pushIncompleteIndex("library/" + broken)
		good := unique("good-neighbour") + ":1"
		pushUpstream("library/" + good)
		ns := newNamespace(nil)
		d := newDeployment(ns, "app", nil, []string{broken, good})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())

		// The broken index is permanent, so it does not hold the good image back.
		Eventually(templateImages(d)).Should(Equal([]string{broken, backupOf(good)}))
		Eventually(eventsOf(d)).Should(ContainElement(And(
			HavePrefix("Warning "+controller.ReasonBackupFailed),
			ContainSubstring("Cannot back up image "+broken+": the image index is incomplete in the source registry"),
			ContainSubstring("references manifest "+missing.String()+", which the registry does not have"),
		)))
		Expect(inBackup(broken)).To(BeFalse(), "no backup tag for the broken index")
	})

	It("refuses an image larger than --max-image-size before moving a blob, and backs up the other images", func() {
		large := unique("too-large") + ":1"
		pushUpstream("library/" + large) // two platforms of two 1 KiB layers: over 4 KiB
		limited := copierOptions()
		limited.MaxImageSize = 4 << 10
		DeferCleanup(gate.Route(large, registry.New(limited)))
		good := unique("good-neighbour") + ":1"
		pushUpstream("library/" + good)
		upstream.ResetRequests()
		ns := newNamespace(nil)
		d := newDeployment(ns, "app", nil, []string{large, good})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())

		Eventually(templateImages(d)).Should(Equal([]string{large, backupOf(good)}))
		Eventually(eventsOf(d)).Should(ContainElement(And(
			HavePrefix("Warning "+controller.ReasonBackupFailed),
			ContainSubstring("Cannot back up image "+large),
			MatchRegexp(`is [0-9.]+ KiB \([0-9]+ bytes\), larger than --max-image-size allows \(4 KiB\)`),
		)))
		Expect(inBackup(large)).To(BeFalse(), "no backup tag for the refused image")
		repo := "/" + strings.TrimSuffix(large, ":1") + "/"
		for _, req := range upstream.Requests() {
			if strings.Contains(req.Path, repo) {
				Expect(req.IsBlob()).To(BeFalse(), "no blob of the refused image is read: %+v", req)
			}
		}
	})

	It("refuses indexes nested 50 levels deep and backs up the other images", func() {
		nested := unique("nested-index") + ":1"
		pushNestedIndex("library/"+nested, 50)
		good := unique("good-neighbour") + ":1"
		pushUpstream("library/" + good)
		ns := newNamespace(nil)
		d := newDeployment(ns, "app", nil, []string{nested, good})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())

		Eventually(templateImages(d)).Should(Equal([]string{nested, backupOf(good)}))
		Eventually(eventsOf(d)).Should(ContainElement(And(
			HavePrefix("Warning "+controller.ReasonBackupFailed),
			ContainSubstring("Cannot back up image "+nested),
			ContainSubstring("image indexes nest more than 8 levels deep"),
		)))
		Expect(inBackup(nested)).To(BeFalse(), "no backup tag for the nested index")
	})
})
