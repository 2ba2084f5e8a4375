package registry_test

import (
	"encoding/base64"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

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

func resolve(kc authn.Keychain, reg string) authn.Authenticator {
	GinkgoHelper()
	r, err := name.NewRegistry(reg)
	Expect(err).NotTo(HaveOccurred())
	auth, err := kc.Resolve(r)
	Expect(err).NotTo(HaveOccurred())
	return auth
}

var _ = Describe("reading registry credentials from a Docker config file", func() {
	var keychain authn.Keychain

	BeforeEach(func() {
		var err error
		keychain, err = registry.DockerConfigKeychain(writeConfig(`{"auths": {
			"registry.example.com:5000": {"auth": "` + basicAuth("user", "pass") + `"},
			"https://index.docker.io/v1/": {"auth": "` + basicAuth("hubuser", "hubpass") + `"},
			"ghcr.io": {"username": "ghuser", "password": "ghpass"},
			"quay.io": {}
		}}`))
		Expect(err).NotTo(HaveOccurred())
	})

	DescribeTable("resolves the credentials of each registry",
		func(reg, wantUser, wantPass string) {
			cfg, err := resolve(keychain, reg).Authorization()
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg.Username).To(Equal(wantUser))
			Expect(cfg.Password).To(Equal(wantPass))
		},
		Entry("a registry with a port", "registry.example.com:5000", "user", "pass"),
		Entry("Docker Hub by its canonical name", "index.docker.io", "hubuser", "hubpass"),
		Entry("Docker Hub by its short name", "docker.io", "hubuser", "hubpass"),
		Entry("username and password fields", "ghcr.io", "ghuser", "ghpass"),
	)

	DescribeTable("accesses other registries anonymously",
		func(reg string) {
			Expect(resolve(keychain, reg)).To(Equal(authn.Anonymous))
		},
		Entry("a registry without an entry", "gcr.io"),
		Entry("the same host on another port", "registry.example.com"),
		Entry("an entry without credentials", "quay.io"),
	)

	DescribeTable("finds Docker Hub credentials under every name pull secrets give it",
		func(key string) {
			kc, err := registry.DockerConfigKeychain(writeConfig(authsFor(key, "hubuser", "hubpass")))
			Expect(err).NotTo(HaveOccurred())
			for _, hub := range []string{"docker.io", "index.docker.io"} {
				cfg, err := resolve(kc, hub).Authorization()
				Expect(err).NotTo(HaveOccurred())
				Expect(cfg.Username).To(Equal("hubuser"), hub)
				Expect(cfg.Password).To(Equal("hubpass"), hub)
			}
			Expect(resolve(kc, "registry-1.docker.io")).To(Equal(authn.Anonymous), "another host")
		},
		Entry("the legacy URL docker login writes", "https://index.docker.io/v1/"),
		Entry("the canonical host", "index.docker.io"),
		Entry("the short host", "docker.io"),
	)

	It("prefers Docker Hub's legacy URL over its host names", func() {
		kc, err := registry.DockerConfigKeychain(writeConfig(`{"auths": {
			"docker.io": {"auth": "` + basicAuth("short", "pass") + `"},
			"index.docker.io": {"auth": "` + basicAuth("host", "pass") + `"},
			"https://index.docker.io/v1/": {"auth": "` + basicAuth("legacy", "pass") + `"}
		}}`))
		Expect(err).NotTo(HaveOccurred())
		cfg, err := resolve(kc, "docker.io").Authorization()
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Username).To(Equal("legacy"))
	})

	It("accesses registries anonymously while the file is missing, and follows it as it appears and changes", func() {
		path := filepath.Join(GinkgoT().TempDir(), "config.json")
		kc, err := registry.DockerConfigKeychain(path)
		Expect(err).NotTo(HaveOccurred(), "the Secret holding the file is optional")
		Expect(resolve(kc, "registry.example.com")).To(Equal(authn.Anonymous))

		credentials := func() authn.AuthConfig {
			GinkgoHelper()
			cfg, err := resolve(kc, "registry.example.com").Authorization()
			Expect(err).NotTo(HaveOccurred())
			return *cfg
		}
		writeConfigAt(path, authsFor("registry.example.com", "user", "first"))
		Expect(credentials()).To(And(HaveField("Username", "user"), HaveField("Password", "first")))

		By("using rotated credentials without a restart")
		writeConfigAt(path, authsFor("registry.example.com", "user", "second"))
		Expect(credentials()).To(And(HaveField("Username", "user"), HaveField("Password", "second")))

		By("falling back to anonymous access once the file is gone")
		Expect(os.Remove(path)).To(Succeed())
		Expect(resolve(kc, "registry.example.com")).To(Equal(authn.Anonymous))
	})

	It("reports a file that breaks after start without echoing its secrets", func() {
		path := writeConfig(authsFor("registry.example.com", "user", "pass"))
		kc, err := registry.DockerConfigKeychain(path)
		Expect(err).NotTo(HaveOccurred())

		writeConfigAt(path, `{"auths": {"registry.example.com": {"auth": "s3cr3t!value"}}}`)
		reg, err := name.NewRegistry("registry.example.com")
		Expect(err).NotTo(HaveOccurred())
		_, err = kc.Resolve(reg)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(path))
		Expect(err.Error()).NotTo(ContainSubstring("s3cr3t"))
	})

	DescribeTable("rejects a broken file without echoing its secrets",
		func(content, secret string) {
			path := writeConfig(content)
			_, err := registry.DockerConfigKeychain(path)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(path))
			Expect(err.Error()).NotTo(ContainSubstring(secret))
		},
		Entry("invalid JSON", `{"auths": {"r.example.com": {"auth": "s3cr3t-value`, "s3cr3t-value"),
		Entry("auth that is not base64", `{"auths": {"r.example.com": {"auth": "s3cr3t!value"}}}`, "s3cr3t"),
		Entry("auth without a colon", `{"auths": {"r.example.com": {"auth": "`+
			base64.StdEncoding.EncodeToString([]byte("s3cr3t-password"))+`"}}}`, "s3cr3t-password"),
	)

	It("does not pass on what a failing credential helper prints", func() {
		bin := GinkgoT().TempDir()
		Expect(os.WriteFile(filepath.Join(bin, "docker-credential-leaky"),
			[]byte("#!/bin/sh\necho helper-printed-s3cr3t\nexit 1\n"), 0o755)).To(Succeed())
		GinkgoT().Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		kc, err := registry.DockerConfigKeychain(writeConfig(`{"credHelpers": {"leaky.example.com": "leaky"}}`))
		Expect(err).NotTo(HaveOccurred())

		reg, err := name.NewRegistry("leaky.example.com")
		Expect(err).NotTo(HaveOccurred())
		_, err = kc.Resolve(reg)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("leaky.example.com"))
		Expect(err.Error()).NotTo(ContainSubstring("s3cr3t"))
	})

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
			kc, err := registry.DockerConfigKeychain(writeConfig(authsFor(protected, "copier", "copier-s3cr3t")))
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
				kc, err := registry.DockerConfigKeychain(writeConfig(config()))
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
	GinkgoHelper()
	proxy, err := registrytest.RequireBasicAuth(host, user, pass)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(proxy.Close)
	return proxy.Host
}
