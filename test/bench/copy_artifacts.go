package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// The artifacts row follows the copy engine's rows of copy.go (init runs in file name order).
func init() {
	rows = append(rows, row{name: "artifacts", run: artifactsRow})
}

// artifactsRow measures what Options.Artifacts (--copy-referrers, on by default in the controller) costs. The
// promise it checks: for an image without signatures, attestations or referrers, at most 2 more requests per
// manifest at the source and no more blob requests, and a no-op copy that asks exactly what it asks without
// the option. Images of the same shape are copied with the option off and on, alternating, each into a fresh
// repository of both registries, on go-containerregistry's in-process registry (which serves the OCI 1.1
// referrers API) and on the distribution registry; requests are counted at the registries' proxies. An
// index with a cosign .sig tag and one referrer shows what copying artifacts costs when there are some.
//
// The copies run in the harness process, each with a fresh Copier (nothing remembered from an earlier copy);
// the no-op is a second Copy with the same Copier, as the long-running controller makes it, and another with
// a fresh one, as after a restart.
func artifactsRow(ctx context.Context, env *benchEnv) ([]Result, error) {
	kinds, err := env.artifactRegistryKinds()
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, k := range kinds {
			k.stop()
		}
	}()
	layerSize := int64(256 << 10)
	if env.smoke {
		layerSize = 1 << 10
	}
	images := artifactImages(layerSize)

	// samples[kind][image][mode] holds one sample per iteration.
	samples := make([][][2][]artifactSample, len(kinds))
	for k := range kinds {
		samples[k] = make([][2][]artifactSample, len(images))
	}
	for i := range env.iterations {
		for k, kind := range kinds {
			for m, img := range images {
				for _, mode := range inTurn([]string{artifactsOff, artifactsOn}, i) {
					on := mode == artifactsOn
					s, err := measureArtifactCopy(ctx, kind, img, on)
					if err != nil {
						return nil, fmt.Errorf("%s, %s, artifacts %s: %w", kind.name, img.slug, mode, err)
					}
					samples[k][m][modeIndex(on)] = append(samples[k][m][modeIndex(on)], s)
				}
			}
		}
	}

	var results []Result
	for k, kind := range kinds {
		for m, img := range images {
			results = append(results, env.artifactCopyResult(kind, img, samples[k][m]))
		}
		results = append(results, env.artifactNoopResult(kind, images, samples[k]))
	}
	return results, nil
}

const (
	artifactsOff = "off"
	artifactsOn  = "on"
)

func modeIndex(on bool) int {
	if on {
		return 1
	}
	return 0
}

// artifactRegistries are a source and a backup registry of one kind, reached through counting proxies.
type artifactRegistries struct {
	name     string
	src, dst *registrytest.Registry
	stop     func()
}

// artifactRegistryKinds starts a source and a backup registry of each kind the copier runs against.
func (env *benchEnv) artifactRegistryKinds() ([]artifactRegistries, error) {
	inSrc, inDst := registrytest.NewInProcess(), registrytest.NewInProcess()
	inProcess := artifactRegistries{name: "in-process registry", src: inSrc, dst: inDst, stop: func() { inSrc.Close(); inDst.Close() }}
	src, err := env.startRegistry("artifacts-source")
	if err != nil {
		inProcess.stop()
		return nil, err
	}
	dst, err := env.startRegistry("artifacts-backup")
	if err != nil {
		inProcess.stop()
		src.stop()
		return nil, err
	}
	distribution := artifactRegistries{name: "distribution registry", src: src.Registry, dst: dst.Registry, stop: func() { src.stop(); dst.stop() }}
	return []artifactRegistries{inProcess, distribution}, nil
}

// artifactImage is a kind of image the row copies; every measurement pushes a new one of that kind.
type artifactImage struct {
	slug, what string
	// manifests is how many manifests the image has (the index and its children), not counting artifacts.
	manifests int
	// artifacts is how many artifacts push pushes along with the image.
	artifacts int
	// push pushes a new image to repoTag in reg (through its proxy) and returns its digest and the artifacts
	// it pushed along: cosign tags and the digests of referrers.
	push func(reg *registrytest.Registry, repoTag string) (pushedArtifactImage, error)
}

type pushedArtifactImage struct {
	digest v1.Hash
	// tags maps the cosign tags pushed along to their digests; referrers are the referrers of digest.
	tags      map[string]v1.Hash
	referrers []v1.Hash
}

func artifactImages(layerSize int64) []artifactImage {
	const layers = 2
	pushIndex := func(reg *registrytest.Registry, repoTag string) (pushedArtifactImage, error) {
		d, err := reg.PushIndex(repoTag, layers, layerSize)
		return pushedArtifactImage{digest: d}, err
	}
	return []artifactImage{
		{slug: "index", what: "2-platform index without artifacts (3 manifests)", manifests: 3, push: pushIndex},
		{slug: "image", what: "single-platform image without artifacts (1 manifest)", manifests: 1,
			push: func(reg *registrytest.Registry, repoTag string) (pushedArtifactImage, error) {
				d, err := reg.PushImage(repoTag, layers, layerSize)
				return pushedArtifactImage{digest: d}, err
			}},
		{slug: "signed", what: "2-platform index with a cosign .sig tag and 1 referrer (an SBOM) on the index", manifests: 3, artifacts: 2,
			push: func(reg *registrytest.Registry, repoTag string) (pushedArtifactImage, error) {
				p, err := pushIndex(reg, repoTag)
				if err != nil {
					return p, err
				}
				ref, err := name.ParseReference(reg.Host + "/" + repoTag)
				if err != nil {
					return p, err
				}
				repo := ref.Context()
				tag := p.digest.Algorithm + "-" + p.digest.Hex + ".sig"
				sig, err := pushSignatureTag(repo, tag)
				if err != nil {
					return p, err
				}
				sbom, err := pushReferrer(repo, p.digest, types.OCIImageIndex, "application/spdx+json")
				if err != nil {
					return p, err
				}
				p.tags, p.referrers = map[string]v1.Hash{tag: sig}, []v1.Hash{sbom}
				return p, nil
			}},
	}
}

// pushSignatureTag pushes a small image under a cosign tag (sha256-<hex>.sig) in repo, as cosign sign does.
func pushSignatureTag(repo name.Repository, tag string) (v1.Hash, error) {
	img, err := random.Image(256, 1)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(repo.Tag(tag), img); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing %s:%s: %w", repo, tag, err)
	}
	return img.Digest()
}

// pushReferrer pushes an OCI artifact whose subject is subject (of media type mt) into repo by digest, as oras
// attach does; go-containerregistry keeps the fallback tag index where the registry has no referrers API.
func pushReferrer(repo name.Repository, subject v1.Hash, mt types.MediaType, artifactType string) (v1.Hash, error) {
	img, err := random.Image(256, 1)
	if err != nil {
		return v1.Hash{}, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.MediaType(artifactType))
	sub, err := remote.Head(repo.Digest(subject.String()))
	if err != nil {
		return v1.Hash{}, err
	}
	withSubject, ok := mutate.Subject(img, v1.Descriptor{MediaType: mt, Digest: subject, Size: sub.Size}).(v1.Image)
	if !ok {
		return v1.Hash{}, errors.New("an image with a subject is no longer an image")
	}
	digest, err := withSubject.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(repo.Digest(digest.String()), withSubject); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing a referrer of %s@%s: %w", repo, subject, err)
	}
	return digest, nil
}

// requestCounts are the requests one registry received, by kind.
type requestCounts struct {
	// manifests are requests under /manifests/ (HEAD, GET, PUT); blobs any request under /blobs/ (HEAD
	// included, and uploads); tags tag lists; referrers requests to the referrers API; other the rest (the
	// /v2/ pings).
	manifests, blobs, tags, referrers, other int
}

func countRequests(reqs []registrytest.Request) requestCounts {
	var c requestCounts
	for _, r := range reqs {
		switch {
		case strings.Contains(r.Path, "/referrers/"):
			c.referrers++
		case strings.HasSuffix(r.Path, "/tags/list"):
			c.tags++
		case strings.Contains(r.Path, "/manifests/"):
			c.manifests++
		case strings.Contains(r.Path, "/blobs/"):
			c.blobs++
		default:
			c.other++
		}
	}
	return c
}

func (c requestCounts) total() int { return c.manifests + c.blobs + c.tags + c.referrers + c.other }

// artifactSample is one image copied with the option off or on: the requests at the source and the backup of
// the cold copy, of a second copy with the same Copier and of one with a fresh Copier, and how long the cold
// Copy call took.
type artifactSample struct {
	cold, noop, restart [2]requestCounts // [source, backup]
	seconds             float64
}

var artifactRepoSeq atomic.Int64

// measureArtifactCopy pushes a new image of kind img to a fresh source repository and copies it into a fresh
// backup repository three times: cold, then again with the same Copier, then with a fresh one.
func measureArtifactCopy(ctx context.Context, regs artifactRegistries, img artifactImage, artifacts bool) (artifactSample, error) {
	repo := fmt.Sprintf("artifacts/%s-%d", img.slug, artifactRepoSeq.Add(1))
	pushed, err := img.push(regs.src, repo+":v1")
	if err != nil {
		return artifactSample{}, err
	}
	src, err := name.ParseReference(regs.src.Host + "/" + repo + ":v1")
	if err != nil {
		return artifactSample{}, err
	}
	dst, err := name.NewTag(regs.dst.Host + "/backup/" + repo + ":v1")
	if err != nil {
		return artifactSample{}, err
	}
	req := registry.CopyRequest{Source: src, Target: dst}
	opts := registry.Options{Artifacts: artifacts}

	var s artifactSample
	copyOnce := func(c *registry.Copier) ([2]requestCounts, time.Duration, error) {
		regs.src.ResetRequests()
		regs.dst.ResetRequests()
		start := time.Now()
		got, err := c.Copy(ctx, req)
		took := time.Since(start)
		if err != nil {
			return [2]requestCounts{}, took, err
		}
		if got != pushed.digest {
			return [2]requestCounts{}, took, fmt.Errorf("copied %s, pushed %s", got, pushed.digest)
		}
		return [2]requestCounts{countRequests(settled(regs.src)), countRequests(settled(regs.dst))}, took, nil
	}
	copier := registry.New(opts)
	var took time.Duration
	if s.cold, took, err = copyOnce(copier); err != nil {
		return s, fmt.Errorf("cold copy: %w", err)
	}
	s.seconds = took.Seconds()
	if s.noop, _, err = copyOnce(copier); err != nil {
		return s, fmt.Errorf("second copy: %w", err)
	}
	if s.restart, _, err = copyOnce(registry.New(opts)); err != nil {
		return s, fmt.Errorf("copy by a fresh copier: %w", err)
	}
	return s, checkArtifactCopy(regs.dst.Backend+"/backup/"+repo, pushed, artifacts)
}

// checkArtifactCopy checks, bypassing the proxy, that the backup repository holds the image under its tag and,
// when artifacts were copied, its cosign tags and referrers.
func checkArtifactCopy(backupRepo string, pushed pushedArtifactImage, artifacts bool) error {
	repo, err := name.NewRepository(backupRepo)
	if err != nil {
		return err
	}
	want := map[string]v1.Hash{"v1": pushed.digest}
	if artifacts {
		for tag, d := range pushed.tags {
			want[tag] = d
		}
	}
	for tag, d := range want {
		desc, err := remote.Head(repo.Tag(tag))
		if err != nil {
			return fmt.Errorf("checking the backup: %w", err)
		}
		if desc.Digest != d {
			return fmt.Errorf("backup %s:%s is %s, want %s", repo, tag, desc.Digest, d)
		}
	}
	if !artifacts || len(pushed.referrers) == 0 {
		return nil
	}
	idx, err := remote.Referrers(repo.Digest(pushed.digest.String()))
	if err != nil {
		return fmt.Errorf("listing the referrers in the backup: %w", err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, want := range pushed.referrers {
		if !slices.ContainsFunc(m.Manifests, func(d v1.Descriptor) bool { return d.Digest == want }) {
			return fmt.Errorf("backup %s lacks referrer %s of %s", repo, want, pushed.digest)
		}
	}
	return nil
}

// settled returns the requests reg received once no more arrive for a few milliseconds: a response can reach
// the client a moment before the proxy records its request.
func settled(reg *registrytest.Registry) []registrytest.Request {
	reqs := reg.Requests()
	for range 100 {
		time.Sleep(2 * time.Millisecond)
		again := reg.Requests()
		if len(again) == len(reqs) {
			return again
		}
		reqs = again
	}
	return reqs
}

// medianCount is the median over samples of f.
func medianCount(samples []artifactSample, f func(artifactSample) int) float64 {
	xs := make([]float64, len(samples))
	for i, s := range samples {
		xs[i] = float64(f(s))
	}
	return median(xs)
}

// medianExtra is the median over iterations of f(on) - f(off): the two copies of an iteration run back to back.
func medianExtra(off, on []artifactSample, f func(artifactSample) int) float64 {
	xs := make([]float64, 0, len(off))
	for i := range min(len(off), len(on)) {
		xs = append(xs, float64(f(on[i])-f(off[i])))
	}
	return median(xs)
}

const (
	atSource = 0
	atBackup = 1
)

// artifactCopyResult reports the requests of the cold copies of one image kind on one registry kind.
func (env *benchEnv) artifactCopyResult(regs artifactRegistries, img artifactImage, samples [2][]artifactSample) Result {
	off, on := samples[0], samples[1]
	total := func(at int) func(artifactSample) int { return func(s artifactSample) int { return s.cold[at].total() } }
	blobs := func(s artifactSample) int { return s.cold[atSource].blobs + s.cold[atBackup].blobs }
	extraBlobs := medianExtra(off, on, blobs)
	srcExtra := medianExtra(off, on, total(atSource)) / float64(img.manifests)
	dstExtra := medianExtra(off, on, total(atBackup)) / float64(img.manifests)
	callMs := func(ss []artifactSample) float64 {
		xs := make([]float64, len(ss))
		for i, s := range ss {
			xs[i] = 1000 * s.seconds
		}
		return median(xs)
	}
	r := Result{
		Row:     fmt.Sprintf("5 artifacts: %s, %s: cold copy", regs.name, img.what),
		Measure: env.measure("requests"),
		Values: map[string]float64{
			"source off": medianCount(off, total(atSource)), "source on": medianCount(on, total(atSource)),
			"backup off": medianCount(off, total(atBackup)), "backup on": medianCount(on, total(atBackup)),
			"extra blob requests": extraBlobs,
		},
		Ratios: map[string]float64{"source extra/manifest": srcExtra, "backup extra/manifest": dstExtra},
		Note: fmt.Sprintf("source %s; backup %s; Copy call %.1f ms off, %.1f ms on",
			describeCounts(off, on, atSource), describeCounts(off, on, atBackup), callMs(off), callMs(on)),
	}
	if img.artifacts == 0 {
		r.Target = "source extra/manifest <= 2, extra blob requests (HEAD included, both registries) = 0"
		r.Met = env.judge(srcExtra <= 2 && extraBlobs == 0)
	} else {
		r.Note = fmt.Sprintf("what copying %d artifacts costs (not judged); ", img.artifacts) + r.Note
	}
	return r
}

// describeCounts spells out the median requests of the cold copies at one registry, by kind, off → on.
func describeCounts(off, on []artifactSample, at int) string {
	kinds := []struct {
		what string
		f    func(requestCounts) int
	}{
		{"manifest", func(c requestCounts) int { return c.manifests }},
		{"blob", func(c requestCounts) int { return c.blobs }},
		{"tag list", func(c requestCounts) int { return c.tags }},
		{"referrers", func(c requestCounts) int { return c.referrers }},
		{"other", func(c requestCounts) int { return c.other }},
	}
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		f := func(s artifactSample) int { return k.f(s.cold[at]) }
		parts = append(parts, fmt.Sprintf("%s %g→%g", k.what, medianCount(off, f), medianCount(on, f)))
	}
	return strings.Join(parts, ", ")
}

// artifactNoopResult reports the requests of the no-op copies of every image kind on one registry kind.
func (env *benchEnv) artifactNoopResult(regs artifactRegistries, images []artifactImage, samples [][2][]artifactSample) Result {
	values := map[string]float64{}
	equal := true
	var notes []string
	for m, img := range images {
		off, on := samples[m][0], samples[m][1]
		var parts []string
		for _, c := range []struct {
			what string
			f    func(artifactSample) [2]requestCounts
		}{
			{"same Copier", func(s artifactSample) [2]requestCounts { return s.noop }},
			{"fresh Copier", func(s artifactSample) [2]requestCounts { return s.restart }},
		} {
			var sides []string
			for at, where := range []string{"source", "backup"} {
				f := func(s artifactSample) int { return c.f(s)[at].total() }
				o, n := medianCount(off, f), medianCount(on, f)
				equal = equal && o == n
				sides = append(sides, fmt.Sprintf("%s %g/%g", where, o, n))
				if c.what == "same Copier" {
					values[img.slug+" "+artifactsOff] += o
					values[img.slug+" "+artifactsOn] += n
				}
			}
			parts = append(parts, c.what+" "+strings.Join(sides, " "))
		}
		notes = append(notes, img.slug+": "+strings.Join(parts, ", "))
	}
	return Result{
		Row:     fmt.Sprintf("5 artifacts: %s: no-op copy (second Copy of the same image)", regs.name),
		Measure: env.measure("requests, source + backup"),
		Values:  values,
		Target:  "on = off, at each registry, same Copier and fresh",
		Met:     env.judge(equal),
		Note: "values: the same Copier again, as the running controller copies; requests off/on, also with a fresh Copier " +
			"(after a restart): " + strings.Join(notes, "; "),
	}
}
