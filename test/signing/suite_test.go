// Package signing proves, with the clients signature policies and their users run (cosign, oras, installed by
// the Makefile into bin/), that a copy made with Options.Artifacts verifies as its source does: cosign
// signatures and attestations in both of cosign's layouts (the legacy .sig/.att tags and the OCI 1.1 bundle
// referrers) and an SBOM attached with oras, against the distribution registry (no referrers API: fallback
// tags) and go-containerregistry's in-process registry (referrers API).
package signing_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
)

var (
	cosign, oras string
	// keyDir holds cosign.key and cosign.pub, made once for the suite, with an empty password.
	keyDir string
)

func TestSigning(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Signing Suite")
}

var _ = BeforeSuite(func() {
	var err error
	cosign, err = testbin.Client("cosign", "COSIGN_BINARY")
	Expect(err).NotTo(HaveOccurred())
	oras, err = testbin.Client("oras", "ORAS_BINARY")
	Expect(err).NotTo(HaveOccurred())
	keyDir = GinkgoT().TempDir()
	run(cosign, "generate-key-pair", "--output-key-prefix", filepath.Join(keyDir, "cosign"))
})

// run runs a client with an empty cosign password, no home directory to read or write, and no network beyond
// loopback needed, and returns its standard output; it fails the spec with the client's output if it fails.
func run(binary string, args ...string) string {
	GinkgoHelper()
	return runIn("", binary, args...)
}

// runIn is run in the working directory dir.
func runIn(dir, binary string, args ...string) string {
	GinkgoHelper()
	// A minute is ample for a client on loopback; a hung one fails the spec instead of the suite timeout.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	home := GinkgoT().TempDir()
	cmd.Env = []string{"COSIGN_PASSWORD=", "HOME=" + home, "DOCKER_CONFIG=" + home, "PATH=/usr/bin:/bin"}
	var stdout, stderr safeBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	Expect(err).NotTo(HaveOccurred(), "%s %v\nstdout: %s\nstderr: %s", filepath.Base(binary), args, stdout.String(), stderr.String())
	return stdout.String()
}
