package registry_test

import (
	"encoding/json"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	"github.com/image-clone-controller/image-clone-controller/internal/dockerconfig"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// pullSecretKeychain returns the keychain of one kubernetes.io/dockerconfigjson pull secret for host, built the
// way the controller builds a workload's.
func pullSecretKeychain(host, user, pass string) authn.Keychain {
	GinkgoHelper()
	data, err := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"username": user, "password": pass}}})
	Expect(err).NotTo(HaveOccurred())
	kc, err := dockerconfig.FromSecret(corev1.Secret{
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: data},
	})
	Expect(err).NotTo(HaveOccurred())
	return kc
}

var _ = Describe("pulling sources with the caller's credentials", func() {
	var upstream, backup *registrytest.Registry
	var private string // host:port of the upstream behind basic authentication
	var copier *registry.Copier
	var tenant, stranger registry.Credentials

	BeforeEach(func() {
		upstream, backup = registrytest.NewInProcess(), registrytest.NewInProcess()
		DeferCleanup(upstream.Close)
		DeferCleanup(backup.Close)
		private = requireBasicAuth(upstream.Host, "tenant", "tenant-s3cr3t")
		// The controller's own keychain can read the private upstream too: it must not lend that to workloads.
		controllerKeychain, err := dockerconfig.FileKeychain(writeConfig(authsFor(private, "tenant", "tenant-s3cr3t")))
		Expect(err).NotTo(HaveOccurred())
		copier = registry.New(registry.Options{Keychain: controllerKeychain})
		tenant = registry.Credentials{Keychain: pullSecretKeychain(private, "tenant", "tenant-s3cr3t"), ID: "tenant"}
		stranger = registry.Credentials{Keychain: authn.NewMultiKeychain(), ID: ""}
	})

	It("copies with the workload's pull secret", func(ctx SpecContext) {
		want, err := upstream.PushIndex("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		got, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(private + "/app:v1"), Target: mustTag(backup.Host + "/app:v1"), Credentials: registry.Static(&tenant)})
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(want))
	})

	It("refuses a workload without credentials even though the controller's keychain could read the source", func(ctx SpecContext) {
		_, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		_, err = copier.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(private + "/app:v1"), Target: mustTag(backup.Host + "/app:v1"), Credentials: registry.Static(&stranger)})
		Expect(err).To(HaveOccurred())
		Expect(registry.ClassOf(err)).To(Equal(registry.AccessDenied), "class of %q", err)
		Expect(err.Error()).To(ContainSubstring("pull credentials"))
		// The backup's tag is looked up while the source is resolved; nothing is written there.
		for _, req := range backup.Requests() {
			Expect(req.Method).To(BeElementOf("GET", "HEAD"), "request %+v", req)
			Expect(req.IsBlob()).To(BeFalse(), "request %+v", req)
		}
	})

	It("makes every caller prove access, even to an image the backup already holds", func(ctx SpecContext) {
		want, err := upstream.PushIndex("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		dst := mustTag(backup.Host + "/app:v1")
		_, err = copier.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(private + "/app:v1"), Target: dst, Credentials: registry.Static(&tenant)})
		Expect(err).NotTo(HaveOccurred())

		for _, src := range []string{private + "/app:v1", private + "/app@" + want.String()} {
			_, err = copier.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(src), Target: dst, Credentials: registry.Static(&stranger)})
			Expect(err).To(HaveOccurred(), src)
			Expect(registry.ClassOf(err)).To(Equal(registry.AccessDenied), "class of %q", err)

			got, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(src), Target: dst, Credentials: registry.Static(&tenant)})
			Expect(err).NotTo(HaveOccurred(), src)
			Expect(got).To(Equal(want), src)
		}
	})

	It("reads a mirror with the controller's keychain", func(ctx SpecContext) {
		want, err := upstream.PushIndex("library/app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		controllerKeychain, err := dockerconfig.FileKeychain(writeConfig(authsFor(private, "tenant", "tenant-s3cr3t")))
		Expect(err).NotTo(HaveOccurred())
		mirrored := registry.New(registry.Options{
			Keychain: controllerKeychain,
			Mirrors:  map[string]registry.Mirror{name.DefaultRegistry: {Registry: private}},
		})
		got, err := mirrored.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef("index.docker.io/library/app:v1"), Target: mustTag(backup.Host + "/app:v1"), Credentials: registry.Static(&stranger)})
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(want))
	})

	It("uses the controller's keychain for the source when no caller credentials are given", func(ctx SpecContext) {
		want, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		dst := mustTag(backup.Host + "/app:v1")
		got, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(private + "/app:v1"), Target: dst})
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(want))
		desc, err := remote.Head(dst)
		Expect(err).NotTo(HaveOccurred())
		Expect(desc.Digest).To(Equal(want))
	})
})
