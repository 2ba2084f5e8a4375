package registry_test

import (
	"encoding/base64"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/dockerconfig"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// writeConfig writes a Docker config file and returns its path.
func writeConfig(content string) string {
	GinkgoHelper()
	path := filepath.Join(GinkgoT().TempDir(), "config.json")
	writeConfigAt(path, content)
	return path
}

// writeConfigAt replaces the file at path in one step, as the kubelet updates a mounted Secret.
func writeConfigAt(path, content string) {
	GinkgoHelper()
	tmp := path + ".tmp"
	Expect(os.WriteFile(tmp, []byte(content), 0o600)).To(Succeed())
	Expect(os.Rename(tmp, path)).To(Succeed())
}

func authsFor(reg, user, pass string) string {
	return `{"auths": {"` + reg + `": {"auth": "` + basicAuth(user, pass) + `"}}}`
}

// The rules of the Docker config (which key matches which image, rotation, broken files) are tested in
// internal/dockerconfig; these specs prove the copier uses what the --registry-config keychain resolves.
var _ = Describe("copying with the credentials of a --registry-config file", func() {
	Describe("copying to a registry that requires credentials", func() {
		var upstream, backup *registrytest.Registry
		var protected string // host:port of the backup behind basic authentication

		BeforeEach(func() {
			upstream, backup = registrytest.NewInProcess(), registrytest.NewInProcess()
			DeferCleanup(upstream.Close)
			DeferCleanup(backup.Close)
			protected = requireBasicAuth(backup.Host, "copier", "copier-s3cr3t")
		})

		It("authenticates with the credentials of the config file", func(ctx SpecContext) {
			want, err := upstream.PushIndex("app:v1", testLayers, testLayerSize)
			Expect(err).NotTo(HaveOccurred())
			kc, err := dockerconfig.FileKeychain(writeConfig(authsFor(protected, "copier", "copier-s3cr3t")))
			Expect(err).NotTo(HaveOccurred())

			dst := mustTag(protected + "/backup/app:v1")
			Expect(registry.New(registry.Options{Keychain: kc}).Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(upstream.Host + "/app:v1"), Target: dst})).To(Equal(want))
			desc, err := remote.Head(dst, remote.WithAuth(&authn.Basic{Username: "copier", Password: "copier-s3cr3t"}))
			Expect(err).NotTo(HaveOccurred())
			Expect(desc.Digest).To(Equal(want))
		})

		DescribeTable("fails permanently without valid credentials",
			func(ctx SpecContext, config func() string) {
				_, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
				Expect(err).NotTo(HaveOccurred())
				kc, err := dockerconfig.FileKeychain(writeConfig(config()))
				Expect(err).NotTo(HaveOccurred())

				_, err = registry.New(registry.Options{Keychain: kc}).Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(upstream.Host + "/app:v1"), Target: mustTag(protected + "/backup/app:v1")})
				Expect(err).To(HaveOccurred())
				Expect(registry.ClassOf(err)).To(Equal(registry.AccessDenied), "class of %q", err)
				Expect(err.Error()).NotTo(ContainSubstring("s3cr3t"))
				Expect(backup.Requests()).To(BeEmpty(), "nothing got past authentication")
			},
			Entry("no credentials", func() string { return `{}` }),
			Entry("a wrong password", func() string { return authsFor(protected, "copier", "wrong-s3cr3t") }),
		)
	})
})

// requireBasicAuth puts a proxy that demands user:pass in front of the registry at host and returns its host.
func requireBasicAuth(host, user, pass string) string {
	front := registrytest.Front(host, registrytest.BasicAuth(user, pass))
	DeferCleanup(front.Close)
	return front.Host
}
