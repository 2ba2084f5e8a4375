package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// The copy engine's rows, in table order; rows of other files follow (init runs in file name order).
func init() {
	rows = append(rows,
		row{name: "copy", run: coldCopyRow},
		row{name: "shared", run: sharedLayersRow},
		row{name: "noop", run: noopRow},
		row{name: "parallel", run: parallelRow},
	)
}

// coldCopyRow copies the 2-platform index into an empty backup registry with every contender.
func coldCopyRow(ctx context.Context, env *benchEnv) ([]Result, error) {
	img, err := env.image(ctx, coldImage)
	if err != nil {
		return nil, err
	}
	src := env.source.Backend + "/" + coldImage
	const dstRepoTag = "backup/cold:v1"
	contenders := []string{ours, crane, skopeo, raw}
	if env.skopeo == "" {
		contenders = []string{ours, crane, raw}
	}

	samples := map[string][]sample{}
	for i := range env.iterations {
		for _, who := range inTurn(contenders, i) {
			err := env.withFreshBackup(func(backup *server) error {
				dst := backup.Backend + "/" + dstRepoTag
				s, err := withRegistryCPU([]*server{env.source, backup}, func() (sample, error) {
					switch who {
					case ours:
						return env.runOurs(ctx, "cold", false, src, dst)
					case crane:
						return env.runCrane(ctx, src, dst)
					case skopeo:
						return env.runSkopeo(ctx, filepath.Join(env.tmp, fmt.Sprintf("skopeo-cold-%d", i)), src, dst)
					default:
						return rawCopy(ctx, env.layerJobs, env.source.Backend, coldImage, backup.Backend, dstRepoTag)
					}
				})
				if err != nil {
					return fmt.Errorf("%s: %w", who, err)
				}
				samples[who] = append(samples[who], s)
				return checkCopied(ctx, who, backup.Backend, dstRepoTag, img)
			})
			if err != nil {
				return nil, err
			}
		}
	}

	times := map[string]float64{}
	for who, ss := range samples {
		times[who] = medianOf(ss, wall)
	}
	size := img.size()
	timeRatios := map[string]float64{
		"ours/crane":     oursOver(samples, crane, wall),
		"ours/raw floor": oursOver(samples, raw, wall),
	}
	call := medianOf(samples[ours], func(s sample) float64 { return s.report.Total })
	note := fmt.Sprintf("%s; ours %.0f MB/s (%.3f s in Copy, the rest is process start), crane %.0f MB/s, raw floor %.0f MB/s (in-process)",
		ratioNote, mbps(size, times[ours]), call, mbps(size, times[crane]), mbps(size, times[raw]))
	if env.skopeo != "" {
		timeRatios["ours/skopeo"] = oursOver(samples, skopeo, wall)
		note += fmt.Sprintf(", skopeo %.0f MB/s (empty blob cache)", mbps(size, times[skopeo]))
	} else {
		note += "; skopeo not installed (apt-get install skopeo), skipped"
	}
	timeMet := timeRatios["ours/crane"] <= 1.0 && timeRatios["ours/raw floor"] <= 1.3

	rssValues := map[string]float64{ours: medianOf(samples[ours], rss), crane: medianOf(samples[crane], rss)}
	if env.skopeo != "" {
		rssValues[skopeo] = medianOf(samples[skopeo], rss)
	}
	cpuValues := map[string]float64{}
	var regCPU []string
	for _, who := range contenders {
		cpuValues[who] = medianOf(samples[who], func(s sample) float64 { return s.cpu })
		regCPU = append(regCPU, fmt.Sprintf("%s %.2f", who, medianOf(samples[who], func(s sample) float64 { return s.registryCPU })))
	}
	what := fmt.Sprintf("2-platform index, %s", describeLayers(env, coldImage, size))
	return []Result{
		{
			Row:     "1 cold copy: " + what,
			Measure: env.measure("seconds"),
			Values:  times,
			Ratios:  timeRatios,
			Target:  "ours/crane <= 1.0, ours/raw floor <= 1.3",
			Met:     env.judge(timeMet),
			Note:    note,
		},
		{
			Row:     "1 cold copy: peak RSS",
			Measure: env.measure("MiB"),
			Values:  rssValues,
			Ratios:  map[string]float64{"ours/crane": oursOver(samples, crane, rss)},
			Target:  "ours < 64 MiB",
			Met:     env.judge(rssValues[ours] < 64),
			Note:    "peak RSS of the copying process (maxrss, read by test/bench/launch)",
		},
		{
			Row:     "1 cold copy: client CPU",
			Measure: env.measure("CPU seconds"),
			Values:  cpuValues,
			Ratios:  map[string]float64{"ours/crane": oursOver(samples, crane, func(s sample) float64 { return s.cpu })},
			Note:    "user+system time of the copying process; the two registries meanwhile used (CPU s): " + strings.Join(regCPU, ", "),
		},
	}, nil
}

// describeLayers describes an image's layers, e.g. "8 × 64 MiB layers (512 MiB)".
func describeLayers(env *benchEnv, repoTag string, size int64) string {
	spec, err := env.imageSpec(repoTag)
	if err != nil {
		return mib(size)
	}
	var parts []string
	counts := map[int64]int{}
	var order []int64
	for _, layers := range spec.layers {
		for _, l := range layers {
			if counts[l.size] == 0 {
				order = append(order, l.size)
			}
			counts[l.size]++
		}
	}
	for _, s := range order {
		parts = append(parts, fmt.Sprintf("%d×%s", counts[s], mib(s)))
	}
	return fmt.Sprintf("%s layers (%s)", strings.Join(parts, " + "), mib(size))
}
