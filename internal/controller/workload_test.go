package controller_test

import (
	"context"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

var _ = Describe("backing up workload images", func() {
	ctx := context.Background()

	Describe("reconciling a Deployment", func() {
		It("patches containers and initContainers once every copy is verified, keeping digests and pins", func() {
			web, sidecar, pinned := unique("web"), unique("sidecar"), unique("pinned")
			pushUpstream("library/" + web + ":1.0")
			sidecarDigest := pushUpstream("ghcr/acme/" + sidecar + ":v2")
			pinnedDigest := pushUpstream("library/" + pinned + ":1.25")
			webImage, sidecarImage := web+":1.0", "ghcr.io/acme/"+sidecar+":v2"
			pinnedImage := pinned + "@" + pinnedDigest.String()

			ns := newNamespace(nil)
			d := newDeployment(ns, "app", []string{pinnedImage}, []string{webImage, sidecarImage})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())

			Eventually(templateImages(d)).Should(Equal([]string{
				backupReg.Host + "/backup/index_docker_io/library/" + pinned + ":sha256_" + pinnedDigest.Hex + "@" + pinnedDigest.String(),
				backupReg.Host + "/backup/index_docker_io/library/" + web + ":1.0",
				backupReg.Host + "/backup/ghcr_io/acme/" + sidecar + ":v2",
			}))

			By("holding byte-identical copies of every platform in the backup registry")
			ref, err := name.ParseReference(backupOf(sidecarImage))
			Expect(err).NotTo(HaveOccurred())
			idx, err := remote.Index(ref)
			Expect(err).NotTo(HaveOccurred())
			Expect(idx.Digest()).To(Equal(sidecarDigest))
			manifest, err := idx.IndexManifest()
			Expect(err).NotTo(HaveOccurred())
			Expect(manifest.Manifests).To(HaveLen(2))

			By("recording which images were backed up")
			Eventually(eventsOf(d)).Should(ContainElement(And(
				HavePrefix("Normal "+controller.ReasonImagesBackedUp),
				ContainSubstring(webImage+" → "+backupOf(webImage)),
				ContainSubstring(sidecarDigest.String()),
			)))
			Expect(eventsOf(d)()).To(HaveExactElements(HavePrefix("Normal "+controller.ReasonImagesBackedUp)),
				"one patch, one event")
		})

		It("leaves images that already live in the backup registry untouched", func() {
			shared := unique("shared")
			pushUpstream("library/" + shared + ":1")
			ns := newNamespace(nil)
			// Back the image up through a first workload, then use the backup reference directly.
			first := newDeployment(ns, "first", nil, []string{shared + ":1"})
			Expect(k8sClient.Create(ctx, first)).To(Succeed())
			Eventually(templateImages(first)).Should(Equal([]string{backupOf(shared + ":1")}))

			onBackup := newDeployment(ns, "on-backup", nil, []string{backupOf(shared + ":1")})
			// Without the backup pull secret it would get that added ("adds the secret to a workload that already
			// runs from the backup").
			onBackup.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: backupPullSecret}}
			Expect(k8sClient.Create(ctx, onBackup)).To(Succeed())
			sentinel := newDeployment(ns, "sentinel", nil, []string{shared + ":1"})
			Expect(k8sClient.Create(ctx, sentinel)).To(Succeed())
			Eventually(templateImages(sentinel)).Should(Equal([]string{backupOf(shared + ":1")}))

			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(onBackup), onBackup)).To(Succeed())
			Expect(onBackup.Generation).To(BeEquivalentTo(1), "a workload on backup images must never be patched")
			Expect(eventsOf(onBackup)()).To(BeEmpty())
		})
	})

	Describe("reconciling a DaemonSet", func() {
		It("patches its images through the same reconciler", func() {
			agent := unique("fluentd")
			pushUpstream("library/" + agent + ":latest")
			ns := newNamespace(nil)
			ds := newDaemonSet(ns, "agent", []string{"ghcr.io/acme/" + agent + "-init:v1"}, []string{agent})
			pushUpstream("ghcr/acme/" + agent + "-init:v1")
			Expect(k8sClient.Create(ctx, ds)).To(Succeed())

			Eventually(templateImages(ds)).Should(Equal([]string{
				backupReg.Host + "/backup/ghcr_io/acme/" + agent + "-init:v1",
				backupReg.Host + "/backup/index_docker_io/library/" + agent + ":latest",
			}))
			Eventually(func() float64 {
				return counterValue("image_clone_workloads_patched_total", map[string]string{"kind": "DaemonSet"})
			}).Should(BeNumerically(">=", 1))
		})
	})

	Describe("opting out", func() {
		It("never patches workloads in ignored namespaces or with the opt-out annotation", func() {
			image := unique("optout") + ":1"
			pushUpstream("library/" + image)

			ignoredNS := &corev1.Namespace{}
			ignoredNS.Name = ignoredNamespace
			Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx, ignoredNS))).To(Succeed())
			inIgnoredNS := newDeployment(ignoredNamespace, unique("app"), nil, []string{image})
			Expect(k8sClient.Create(ctx, inIgnoredNS)).To(Succeed())

			optedOutNS := newNamespace(map[string]string{workload.IgnoreAnnotation: "true"})
			inOptedOutNS := newDeployment(optedOutNS, "app", nil, []string{image})
			Expect(k8sClient.Create(ctx, inOptedOutNS)).To(Succeed())

			ns := newNamespace(nil)
			optedOut := newDeployment(ns, "opted-out", nil, []string{image})
			optedOut.Annotations = map[string]string{workload.IgnoreAnnotation: "true"}
			Expect(k8sClient.Create(ctx, optedOut)).To(Succeed())
			sentinel := newDeployment(ns, "sentinel", nil, []string{image})
			Expect(k8sClient.Create(ctx, sentinel)).To(Succeed())

			// The sentinel, created last, proves the controller has seen all of them.
			Eventually(templateImages(sentinel)).Should(Equal([]string{backupOf(image)}))
			for _, d := range []client.Object{inIgnoredNS, inOptedOutNS, optedOut} {
				Consistently(templateImages(d), "1s").Should(Equal([]string{image}), d.GetNamespace()+"/"+d.GetName())
			}

			By("backing up a namespace's workloads once its opt-out annotation is removed")
			optedOutNamespace := &corev1.Namespace{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: optedOutNS}, optedOutNamespace)).To(Succeed())
			delete(optedOutNamespace.Annotations, workload.IgnoreAnnotation)
			Expect(k8sClient.Update(ctx, optedOutNamespace)).To(Succeed())
			Eventually(templateImages(inOptedOutNS)).Should(Equal([]string{backupOf(image)}))
		})
	})

	Describe("failures", func() {
		It("reports a missing image, patches nothing, and recovers once the image is published", func() {
			missing := unique("missing") + ":1"
			ns := newNamespace(nil)
			d := newDeployment(ns, "app", nil, []string{missing})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())

			Eventually(eventsOf(d)).Should(ContainElement(And(
				HavePrefix("Warning "+controller.ReasonBackupFailed),
				ContainSubstring("Cannot back up image "+missing+": the image does not exist in the registry"),
				Or(ContainSubstring("MANIFEST_UNKNOWN"), ContainSubstring("NAME_UNKNOWN")),
			)))
			Expect(templateImages(d)()).To(Equal([]string{missing}))

			pushUpstream("library/" + missing)
			Eventually(templateImages(d)).Should(Equal([]string{backupOf(missing)}))
		})

		It("does not let an image that can never be copied hold the others back", func() {
			good := unique("good") + ":1"
			pushUpstream("library/" + good)
			ns := newNamespace(nil)
			d := newDeployment(ns, "app", nil, []string{good, "Invalid/UPPER:case"})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())

			Eventually(templateImages(d)).Should(Equal([]string{backupOf(good), "Invalid/UPPER:case"}))
			Eventually(eventsOf(d)).Should(ContainElement(And(
				HavePrefix("Warning "+controller.ReasonBackupFailed),
				ContainSubstring("Invalid/UPPER:case"),
			)))
		})

		It("patches nothing while the upstream registry fails, then converges in one patch", func() {
			a, b := unique("flaky-a")+":1", unique("flaky-b")+":1"
			pushUpstream("library/" + a)
			pushUpstream("library/" + b)
			release := gate.Hold(b)
			ns := newNamespace(nil)
			d := newDeployment(ns, "app", nil, []string{a, b})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Eventually(func() bool { return gate.Waiting(b) }).Should(BeTrue())

			upstream.SetDown(true)
			DeferCleanup(upstream.SetDown, false) // never leave the registry down for the next spec
			release()
			Eventually(eventsOf(d)).Should(ContainElement(And(
				HavePrefix("Warning "+controller.ReasonBackupFailed), ContainSubstring(b))))
			Expect(templateImages(d)()).To(Equal([]string{a, b}), "patching the images that did copy alone would roll out twice")

			upstream.SetDown(false)
			Eventually(templateImages(d)).Should(Equal([]string{backupOf(a), backupOf(b)}))
			Expect(d.Generation).To(BeEquivalentTo(2), "exactly one patch")
		})
	})

	Describe("concurrency", func() {
		It("keeps a user's edit made while the images are copied", func() {
			image := unique("slow") + ":1"
			pushUpstream("library/" + image)
			release := gate.Hold(image)
			ns := newNamespace(nil)
			d := newDeployment(ns, "app", nil, []string{image})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Eventually(func() bool { return gate.Waiting(image) }).Should(BeTrue())

			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
			d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "EDITED", Value: "by-user"}}
			Expect(k8sClient.Update(ctx, d)).To(Succeed())
			release()

			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
			Expect(d.Spec.Template.Spec.Containers[0].Env).To(ConsistOf(corev1.EnvVar{Name: "EDITED", Value: "by-user"}))
		})

		It("never overwrites an image the user changed while the old one was copied", func() {
			old, replacement := unique("old")+":1", unique("new")+":1"
			pushUpstream("library/" + old)
			pushUpstream("library/" + replacement)
			release := gate.Hold(old)
			ns := newNamespace(nil)
			d := newDeployment(ns, "app", nil, []string{old})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Eventually(func() bool { return gate.Waiting(old) }).Should(BeTrue())

			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
			d.Spec.Template.Spec.Containers[0].Image = replacement
			Expect(k8sClient.Update(ctx, d)).To(Succeed())
			release()

			Eventually(templateImages(d)).Should(Equal([]string{backupOf(replacement)}))
			Expect(d.Generation).To(BeEquivalentTo(3), "the user's edit and one patch, none for the stale read")
		})

		It("copies an image shared by two workloads once", func() {
			image := unique("popular") + ":1"
			pushUpstream("library/" + image)
			copiedBefore := counterValue("image_clone_copies_total", map[string]string{"result": "copied"})
			release := gate.Hold(image)
			ns := newNamespace(nil)
			one := newDeployment(ns, "one", nil, []string{image})
			two := newDaemonSet(ns, "two", nil, []string{image})
			Expect(k8sClient.Create(ctx, one)).To(Succeed())
			Expect(k8sClient.Create(ctx, two)).To(Succeed())
			Eventually(func() bool { return gate.Waiting(image) }).Should(BeTrue())
			release()

			Eventually(templateImages(one)).Should(Equal([]string{backupOf(image)}))
			Eventually(templateImages(two)).Should(Equal([]string{backupOf(image)}))
			Expect(counterValue("image_clone_copies_total", map[string]string{"result": "copied"})).
				To(Equal(copiedBefore+1), "one copy for both workloads")
			manifestPuts := 0
			repo := "/v2/backup/index_docker_io/library/" + strings.Split(image, ":")[0] + "/manifests/"
			for _, r := range backupReg.Requests() {
				if r.Method == http.MethodPut && strings.HasPrefix(r.Path, repo) {
					manifestPuts++
				}
			}
			Expect(manifestPuts).To(Equal(3), "one index and its two platform manifests, written once")
		})
	})
})
