package signing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
)

// safeBuffer is a bytes.Buffer that a running command may write while the spec reads it.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// signFlags make cosign sign with the suite's key and no transparency log or signing config, which would need
// the network.
func signFlags() []string {
	return []string{"--key", filepath.Join(keyDir, "cosign.key"), "--allow-http-registry", "--use-signing-config=false", "--tlog-upload=false", "-y"}
}

func verifyFlags() []string {
	return []string{"--key", filepath.Join(keyDir, "cosign.pub"), "--allow-http-registry", "--insecure-ignore-tlog", "--output", "json"}
}

// registryKind starts a source and a backup registry of one implementation.
type registryKind struct {
	name  string
	start func() (src, dst *registrytest.Registry)
}

var kinds = []registryKind{
	{"the distribution registry (fallback tags)", func() (*registrytest.Registry, *registrytest.Registry) {
		binary, err := testbin.RegistryBinary()
		Expect(err).NotTo(HaveOccurred())
		src, err := registrytest.StartDistribution(binary, GinkgoT().TempDir())
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(src.Close)
		dst, err := registrytest.StartDistribution(binary, GinkgoT().TempDir())
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(dst.Close)
		return src, dst
	}},
	{"go-containerregistry's in-process registry (referrers API)", func() (*registrytest.Registry, *registrytest.Registry) {
		src, dst := registrytest.NewInProcess(), registrytest.NewInProcess()
		DeferCleanup(src.Close)
		DeferCleanup(dst.Close)
		return src, dst
	}},
}

var _ = Describe("a signed image backed up with its artifacts", func() {
	for _, kind := range kinds {
		It("verifies at the copy with cosign and lists its SBOM with oras, on "+kind.name, func(ctx SpecContext) {
			upstream, backup := kind.start()
			img, err := random.Image(1024, 2)
			Expect(err).NotTo(HaveOccurred())
			src, err := name.ParseReference(upstream.Host + "/library/signed:1.0")
			Expect(err).NotTo(HaveOccurred())
			Expect(remote.Write(src, img)).To(Succeed())
			digest, err := img.Digest()
			Expect(err).NotTo(HaveOccurred())
			pinned := src.Context().Digest(digest.String()).String()

			By("signing and attesting in both of cosign's layouts, and attaching an SBOM with oras")
			sbom := filepath.Join(GinkgoT().TempDir(), "sbom.json")
			Expect(os.WriteFile(sbom, []byte(`{"spdxVersion":"SPDX-2.3","SPDXID":"SPDXRef-DOCUMENT","name":"signed","dataLicense":"CC0-1.0","documentNamespace":"https://example.com/signed","creationInfo":{"created":"2026-01-01T00:00:00Z","creators":["Tool: test"]},"packages":[]}`), 0o600)).To(Succeed())
			run(cosign, append([]string{"sign", "--new-bundle-format=false"}, append(signFlags(), pinned)...)...)
			run(cosign, append([]string{"attest", "--new-bundle-format=false", "--type", "spdxjson", "--predicate", sbom}, append(signFlags(), pinned)...)...)
			run(cosign, append([]string{"sign"}, append(signFlags(), pinned)...)...)
			run(cosign, append([]string{"attest", "--type", "spdxjson", "--predicate", sbom}, append(signFlags(), pinned)...)...)
			// oras refuses absolute paths, which it would record in the artifact.
			runIn(filepath.Dir(sbom), oras, "attach", "--plain-http", "--no-tty", "--artifact-type", "application/spdx+json", pinned, "sbom.json:application/spdx+json")

			By("backing it up")
			target, err := name.NewTag(backup.Host + "/backup/index_docker_io/library/signed:1.0")
			Expect(err).NotTo(HaveOccurred())
			got, err := registry.New(registry.Options{Artifacts: true}).Copy(context.Background(), registry.CopyRequest{Source: src, Target: target})
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(digest))

			By("verifying the reference a workload now uses, as the source verifies")
			for _, ref := range []string{src.String(), target.String()} {
				signatures := run(cosign, append([]string{"verify"}, append(verifyFlags(), ref)...)...)
				Expect(criticalTypes(signatures)).To(ContainElement("https://sigstore.dev/cosign/sign/v1"), ref)
				run(cosign, append([]string{"verify-attestation", "--type", "spdxjson"}, append(verifyFlags(), ref)...)...)
			}

			By("verifying the legacy .sig and .att tags alone, as a cosign that predates bundles would")
			for _, tag := range []string{"sha256-" + digest.Hex + ".sig", "sha256-" + digest.Hex + ".att"} {
				want, err := remote.Head(src.Context().Tag(tag))
				Expect(err).NotTo(HaveOccurred())
				got, err := remote.Head(target.Context().Tag(tag))
				Expect(err).NotTo(HaveOccurred(), tag)
				Expect(got.Digest).To(Equal(want.Digest), tag)
			}
			// go-containerregistry's registry reports a referrer's config media type as its artifact type, so the
			// referrers are compared by digest: the copy lists every one the source lists.
			atSource, atCopy := discover(src.String()), discover(target.String())
			Expect(atSource).To(ContainElement(HaveField("ArtifactType", Or(Equal("application/spdx+json"), Equal("application/vnd.oci.empty.v1+json")))))
			Expect(atCopy).To(HaveLen(len(atSource)))
			for _, r := range atSource {
				Expect(atCopy).To(ContainElement(HaveField("Digest", r.Digest)))
			}
		})
	}
})

// referrer is one entry of oras discover's JSON output.
type referrer struct {
	ArtifactType string `json:"artifactType"`
	Digest       string `json:"digest"`
}

// discover lists the referrers of ref with oras.
func discover(ref string) []referrer {
	GinkgoHelper()
	var out struct {
		Referrers []referrer `json:"referrers"`
	}
	Expect(json.Unmarshal([]byte(run(oras, "discover", "--plain-http", "--format", "json", ref)), &out)).To(Succeed())
	return out.Referrers
}

// criticalTypes returns the critical.type of every signature cosign verify printed (it also accepts
// attestations, whose type is their predicate's).
func criticalTypes(out string) []string {
	GinkgoHelper()
	var sigs []struct {
		Critical struct {
			Type string `json:"type"`
		} `json:"critical"`
	}
	Expect(json.Unmarshal([]byte(lastJSONLine(out)), &sigs)).To(Succeed(), out)
	var types []string
	for _, s := range sigs {
		types = append(types, s.Critical.Type)
	}
	return types
}

// lastJSONLine returns the last line of out that starts a JSON array (cosign prints a header first).
func lastJSONLine(out string) string {
	lines := bytes.Split([]byte(out), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if bytes.HasPrefix(bytes.TrimSpace(lines[i]), []byte("[")) {
			return string(lines[i])
		}
	}
	return out
}
