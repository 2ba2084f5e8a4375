package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// Names of the contenders in Result.Values.
const (
	ours   = "ours"
	crane  = "crane"
	skopeo = "skopeo"
	raw    = "raw floor"
)

// sample is one measurement of one contender.
type sample struct {
	// seconds is the wall time of the copy: from starting the tool's process until it exited.
	seconds float64
	// rssMiB is the peak resident set size of the process (0 for in-process contenders).
	rssMiB float64
	// cpu is the CPU time (user + system) the copying client used, in seconds.
	cpu float64
	// registryCPU is the CPU time the source and backup registries used during the copy, in seconds.
	registryCPU float64
	// report holds what our child process reported about its Copy calls (ours only).
	report copyOnceReport
}

var profileSeq atomic.Int64

// runOurs copies the pairs (SRC DST ...) with our copier in a child process: one after the other, or all at
// the same time if concurrent.
func (env *benchEnv) runOurs(ctx context.Context, label string, concurrent bool, pairs ...string) (sample, error) {
	return env.runChild(ctx, ours, label, concurrent, pairs...)
}

// runCraneCode copies the pairs with crane's copy code in a child process of the harness (see craneCopy).
func (env *benchEnv) runCraneCode(ctx context.Context, pairs ...string) (sample, error) {
	return env.runChild(ctx, crane, "crane", false, pairs...)
}

func (env *benchEnv) runChild(ctx context.Context, engine, label string, concurrent bool, pairs ...string) (sample, error) {
	args := []string{copyOnceFlag, "-engine", engine, "-layer-jobs", strconv.Itoa(env.layerJobs), "-max-copies", strconv.Itoa(env.maxCopies)}
	if concurrent {
		args = append(args, "-concurrent")
	}
	if env.cpuProfile != "" {
		n := profileSeq.Add(1)
		args = append(args, "-cpuprofile", filepath.Join(env.cpuProfile, fmt.Sprintf("%s-%d.pprof", label, n)),
			"-trace-requests", filepath.Join(env.cpuProfile, fmt.Sprintf("%s-%d.requests", label, n)))
	}
	s, stdout, err := runProcess(env.command(ctx, env.self, append(args, pairs...)...))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(stdout, &s.report); err != nil {
		return s, fmt.Errorf("reading the report of our copy: %w: %s", err, stdout)
	}
	return s, nil
}

// runCrane copies src to dst with crane copy, which copies every platform of an index.
func (env *benchEnv) runCrane(ctx context.Context, src, dst string) (sample, error) {
	s, _, err := runProcess(env.command(ctx, env.crane, "copy", src, dst))
	return s, err
}

// runSkopeo copies src to dst with skopeo copy --all, keeping its blob info cache (which remembers where
// blobs were seen, so it can mount them) in cacheDir: an empty directory makes a cold copy.
func (env *benchEnv) runSkopeo(ctx context.Context, cacheDir, src, dst string) (sample, error) {
	cmd := env.command(ctx, env.skopeo, "--insecure-policy", "copy", "--all", "--preserve-digests",
		"--src-tls-verify=false", "--dest-tls-verify=false", "docker://"+src, "docker://"+dst)
	if err := skopeoCache(cmd, cacheDir); err != nil {
		return sample{}, err
	}
	s, _, err := runProcess(cmd)
	return s, err
}

// skopeoCache points skopeo's blob info cache at dir. As root, skopeo always uses /var/lib/containers/cache;
// run as nobody it uses $XDG_DATA_HOME/containers/cache, which the harness controls.
func skopeoCache(cmd *exec.Cmd, dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o700); err != nil {
		return err
	}
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"XDG_CONFIG_HOME="+dir, "TMPDIR="+dir)
	if os.Geteuid() != 0 {
		return nil
	}
	const nobody = 65534
	// nobody needs to get through the directories above to reach its own.
	for d := filepath.Dir(dir); d != "/" && d != "."; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, "run")} {
		if err := os.Chown(d, nobody, nobody); err != nil {
			return err
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	return nil
}

// command returns a command that runs bin through the launcher, which reports its peak RSS (see
// test/bench/launch); run it with runProcess.
func (env *benchEnv) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, env.launcher, append([]string{bin}, args...)...)
}

// runProcess runs a command of env.command and measures its wall time and peak RSS.
func runProcess(cmd *exec.Cmd) (sample, []byte, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	rssR, rssW, err := os.Pipe()
	if err != nil {
		return sample{}, nil, err
	}
	defer rssR.Close()
	cmd.ExtraFiles = []*os.File{rssW}
	start := time.Now()
	err = cmd.Start()
	_ = rssW.Close()
	if err == nil {
		err = cmd.Wait()
	}
	s := sample{seconds: time.Since(start).Seconds()}
	if err != nil {
		return s, nil, fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args[1:], " "), err, lastLines(stderr.String(), 5))
	}
	usage, err := io.ReadAll(rssR)
	if err != nil {
		return s, nil, err
	}
	var kb, user, sys float64
	if _, err := fmt.Sscan(string(usage), &kb, &user, &sys); err != nil {
		return s, nil, fmt.Errorf("reading the launcher's report %q: %w", usage, err)
	}
	s.rssMiB, s.cpu = kb/1024, user+sys
	return s, stdout.Bytes(), nil
}

// buildLauncher builds test/bench/launch into dir.
func buildLauncher(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "launch")
	goTool := cmp.Or(os.Getenv("GO"), "go")
	cmd := exec.CommandContext(ctx, goTool, "build", //nolint:gosec // G702: the Go toolchain that make bench names in GO
		"-o", out, "github.com/image-clone-controller/image-clone-controller/test/bench/launch")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the launcher: %w: %s", err, b)
	}
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// rawCopy is the floor of a copy: the same manifests and blobs moved with no client-side work (no digests
// computed, no existence checks, no verification), each blob streamed from a GET into a monolithic upload
// (POST, then PUT with the content), jobs blobs at a time.
func rawCopy(ctx context.Context, jobs int, srcHost, srcRepoTag, dstHost, dstRepoTag string) (sample, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: jobs}}
	defer client.CloseIdleConnections()
	srcRepo, srcTag, _ := strings.Cut(srcRepoTag, ":")
	dstRepo, dstTag, _ := strings.Cut(dstRepoTag, ":")
	start, cpuStart := time.Now(), selfCPU()

	indexRaw, indexType, err := getManifest(ctx, client, srcHost, srcRepo, srcTag)
	if err != nil {
		return sample{}, err
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(indexRaw, &index); err != nil {
		return sample{}, err
	}
	children := make([][]byte, len(index.Manifests))
	blobs := map[v1.Hash]bool{}
	var order []v1.Hash
	for i, child := range index.Manifests {
		raw, _, err := getManifest(ctx, client, srcHost, srcRepo, child.Digest.String())
		if err != nil {
			return sample{}, err
		}
		children[i] = raw
		var m v1.Manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			return sample{}, err
		}
		for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if !blobs[b.Digest] {
				blobs[b.Digest] = true
				order = append(order, b.Digest)
			}
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for _, digest := range order {
		g.Go(func() error { return rawBlob(gctx, client, srcHost, srcRepo, dstHost, dstRepo, digest) })
	}
	if err := g.Wait(); err != nil {
		return sample{}, err
	}
	for i, child := range index.Manifests {
		if err := putManifest(ctx, client, dstHost, dstRepo, child.Digest.String(), child.MediaType, children[i]); err != nil {
			return sample{}, err
		}
	}
	if err := putManifest(ctx, client, dstHost, dstRepo, dstTag, indexType, indexRaw); err != nil {
		return sample{}, err
	}
	return sample{seconds: time.Since(start).Seconds(), cpu: selfCPU() - cpuStart}, nil
}

// selfCPU returns the CPU time the harness process used so far, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// processCPU returns the CPU time process pid used so far, in seconds (0 if unknown).
func processCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may contain spaces) start with the state, field 3.
	_, rest, ok := strings.Cut(string(b), ") ")
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	var utime, stime float64
	_, _ = fmt.Sscan(f[11], &utime)
	_, _ = fmt.Sscan(f[12], &stime)
	return (utime + stime) / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every Linux architecture Go supports.
const clockTicks = 100

// withRegistryCPU runs copy and adds the CPU time the registries used meanwhile to its sample.
func withRegistryCPU(registries []*server, copy func() (sample, error)) (sample, error) {
	cpu := func() float64 {
		var t float64
		for _, r := range registries {
			t += processCPU(r.PID())
		}
		return t
	}
	before := cpu()
	s, err := copy()
	s.registryCPU = cpu() - before
	return s, err
}

func rawBlob(ctx context.Context, client *http.Client, srcHost, srcRepo, dstHost, dstRepo string, digest v1.Hash) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/v2/%s/blobs/%s", srcHost, srcRepo, digest), nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET blob %s: %s", digest, resp.Status)
	}
	loc, err := startUpload(ctx, client, dstHost, dstRepo, "")
	if err != nil {
		return err
	}
	return finishUpload(ctx, client, loc, digest, resp.Body, resp.ContentLength)
}

func getManifest(ctx context.Context, client *http.Client, host, repo, ref string) ([]byte, types.MediaType, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/v2/%s/manifests/%s", host, repo, ref), nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", strings.Join([]string{
		string(types.OCIImageIndex), string(types.OCIManifestSchema1), string(types.DockerManifestList), string(types.DockerManifestSchema2),
	}, ","))
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET manifest %s/%s: %s", repo, ref, resp.Status)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), types.MediaType(resp.Header.Get("Content-Type")), nil
}

// headDigest returns the digest repoRef resolves to on host ("" if it does not exist).
func headDigest(ctx context.Context, host, repoRef string) (string, error) {
	repo, ref, _ := strings.Cut(repoRef, ":")
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, fmt.Sprintf("http://%s/v2/%s/manifests/%s", host, repo, ref), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", string(types.OCIImageIndex)+","+string(types.DockerManifestList))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		return "", nil
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HEAD %s: %s", repoRef, resp.Status)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}

// checkCopied fails unless repoTag on host resolves to img's digest: every contender must produce an exact copy.
func checkCopied(ctx context.Context, who, host, repoTag string, img pushedImage) error {
	got, err := headDigest(ctx, host, repoTag)
	if err != nil {
		return fmt.Errorf("%s: checking the copy: %w", who, err)
	}
	if got != img.digest.String() {
		return fmt.Errorf("%s: %s/%s resolves to %q after the copy, want %s", who, host, repoTag, got, img.digest)
	}
	return nil
}
