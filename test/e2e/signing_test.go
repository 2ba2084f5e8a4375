//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
)

var _ = Describe("a signed image", func() {
	It("verifies with cosign at the reference the workload runs after the controller backed it up", func(ctx SpecContext) {
		cosign, err := testbin.Client("cosign", "COSIGN_BINARY")
		Expect(err).NotTo(HaveOccurred())
		dir := GinkgoT().TempDir()
		cosignRun := func(args ...string) string {
			GinkgoHelper()
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			cmd := exec.CommandContext(cctx, cosign, args...)
			cmd.Env = []string{"COSIGN_PASSWORD=", "HOME=" + dir, "DOCKER_CONFIG=" + dir, "PATH=/usr/bin:/bin"}
			out, err := cmd.CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "cosign %v: %s", args, out)
			return string(out)
		}
		cosignRun("generate-key-pair", "--output-key-prefix", filepath.Join(dir, "cosign"))
		sign := []string{"--key", filepath.Join(dir, "cosign.key"), "--allow-http-registry", "--use-signing-config=false", "--tlog-upload=false", "-y"}

		repo, image, backupImage, digest := pushRandomImage("signed")
		pinned := upstreamHost + "/" + repo + "@" + digest.String()
		cosignRun(append([]string{"sign"}, append(sign, pinned)...)...)
		cosignRun(append([]string{"sign", "--new-bundle-format=false"}, append(sign, pinned)...)...)

		d := newDeployment(newNamespace(), "signed", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Eventually(templateImages(d)).Should(Equal([]string{backupImage}))

		out := cosignRun("verify", "--key", filepath.Join(dir, "cosign.pub"), "--allow-http-registry", "--insecure-ignore-tlog", backupImage)
		Expect(out).To(ContainSubstring("https://sigstore.dev/cosign/sign/v1"))
	})
})
