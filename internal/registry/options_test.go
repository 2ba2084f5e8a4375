package registry_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

var _ = Describe("parsing a --source-mirror flag", func() {
	DescribeTable("accepts REGISTRY=HOST[:PORT][/PATH] and normalizes the registry",
		func(flag, wantRegistry string, wantMirror registry.Mirror) {
			from, mirror, err := registry.ParseMirror(flag)
			Expect(err).NotTo(HaveOccurred())
			Expect(from).To(Equal(wantRegistry))
			Expect(mirror).To(Equal(wantMirror))
		},
		Entry("Docker Hub by its canonical name", "index.docker.io=127.0.0.1:5002",
			"index.docker.io", registry.Mirror{Registry: "127.0.0.1:5002"}),
		Entry("Docker Hub by its short name", "docker.io=127.0.0.1:5002",
			"index.docker.io", registry.Mirror{Registry: "127.0.0.1:5002"}),
		Entry("a mirror below a path prefix", "ghcr.io=127.0.0.1:5002/ghcr",
			"ghcr.io", registry.Mirror{Registry: "127.0.0.1:5002", Prefix: "ghcr"}),
		Entry("a nested path prefix with a trailing slash", "ghcr.io=mirror.example.com/cache/ghcr/",
			"ghcr.io", registry.Mirror{Registry: "mirror.example.com", Prefix: "cache/ghcr"}),
		Entry("a trailing slash without a path", "quay.io=mirror.example.com:443/",
			"quay.io", registry.Mirror{Registry: "mirror.example.com:443"}),
		Entry("a registry with a port", "localhost:5000=127.0.0.1:5002",
			"localhost:5000", registry.Mirror{Registry: "127.0.0.1:5002"}),
	)

	DescribeTable("rejects a malformed value, quoting it",
		func(flag, wantMessage string) {
			_, _, err := registry.ParseMirror(flag)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring("%q", flag))
			Expect(err.Error()).To(ContainSubstring(wantMessage))
		},
		Entry("without =", "ghcr.io", "want REGISTRY=HOST[:PORT][/PATH]"),
		Entry("with a scheme", "ghcr.io=https://x", "without a scheme"),
		Entry("with a plain HTTP scheme", "ghcr.io=http://127.0.0.1:5002", "without a scheme"),
		Entry("without a registry", "=127.0.0.1:5002", "want REGISTRY=HOST[:PORT][/PATH]"),
		Entry("without a mirror", "ghcr.io=", "want REGISTRY=HOST[:PORT][/PATH]"),
		Entry("with nothing on either side", "=", "want REGISTRY=HOST[:PORT][/PATH]"),
		Entry("with an invalid registry", "ghcr io=127.0.0.1:5002", `registry "ghcr io"`),
		Entry("with a path on the registry", "ghcr.io/team=127.0.0.1:5002", `registry "ghcr.io/team"`),
		Entry("with an invalid mirror host", "ghcr.io=bad host:5002", `mirror host "bad host:5002"`),
		Entry("with an invalid mirror port", "ghcr.io=127.0.0.1:port", `mirror host "127.0.0.1:port"`),
		Entry("with a path but no mirror host", "ghcr.io=/ghcr", `mirror host ""`),
		Entry("with an invalid mirror path", "ghcr.io=127.0.0.1:5002/Upper", `mirror path "Upper"`),
	)
})
