package main

import (
	"context"
	"fmt"
	"strings"
)

// noopRow copies an image that the backup registry already holds. Both tools must notice and move no blob;
// what is left is the cost of finding out. Each measurement is a fresh process (a fresh Copier for ours,
// with nothing remembered), so both pay for new connections and the registries' auth pings.
func noopRow(ctx context.Context, env *benchEnv) ([]Result, error) {
	img, err := env.image(ctx, coldImage)
	if err != nil {
		return nil, err
	}
	backup, err := env.startRegistry("backup")
	if err != nil {
		return nil, err
	}
	defer backup.stop()
	const dstRepoTag = "backup/noop:v1"
	src, dst := env.source.Backend+"/"+coldImage, backup.Backend+"/"+dstRepoTag
	if _, err := env.runCrane(ctx, src, dst); err != nil {
		return nil, fmt.Errorf("filling the backup registry: %w", err)
	}

	// Milliseconds vary more than seconds: more samples.
	iterations := 5 * env.iterations
	samples := map[string][]sample{}
	const craneCode = "crane code"
	for i := range iterations {
		for _, who := range inTurn([]string{ours, crane, craneCode}, i) {
			var s sample
			var err error
			switch who {
			case ours:
				s, err = env.runOurs(ctx, "noop", false, src, dst)
			case crane:
				s, err = env.runCrane(ctx, src, dst)
			default:
				s, err = env.runCraneCode(ctx, src, dst)
			}
			if err != nil {
				return nil, err
			}
			samples[who] = append(samples[who], s)
		}
	}
	oursS, craneS, craneCodeS := samples[ours], samples[crane], samples[craneCode]
	call := func(s sample) float64 { return s.report.Total }
	const (
		oursCall  = "ours (call)"
		oursProc  = "ours (process)"
		craneCall = "crane (call)"
		craneProc = "crane (process)"
	)
	ms := func(x float64) float64 { return x * 1000 }
	values := map[string]float64{
		oursCall:  ms(medianOf(oursS, call)),
		oursProc:  ms(medianOf(oursS, wall)),
		craneCall: ms(medianOf(craneCodeS, call)),
		craneProc: ms(medianOf(craneS, wall)),
	}
	ratios := map[string]float64{
		"ours call/crane call":       medianPaired(oursS, call, craneCodeS, call),
		"ours call/crane process":    medianPaired(oursS, call, craneS, wall),
		"ours process/crane process": medianPaired(oursS, wall, craneS, wall),
	}

	// One more copy each through the counting proxies proves that nothing was transferred.
	moved, manifests := map[string]float64{}, map[string]float64{}
	for _, who := range []string{ours, crane} {
		env.source.ResetRequests()
		backup.ResetRequests()
		srcP, dstP := env.source.Host+"/"+coldImage, backup.Host+"/"+dstRepoTag
		if who == ours {
			_, err = env.runOurs(ctx, "noop", false, srcP, dstP)
		} else {
			_, err = env.runCrane(ctx, srcP, dstP)
		}
		if err != nil {
			return nil, err
		}
		var n, m float64
		for _, reg := range []*server{env.source, backup} {
			n += float64(reg.BlobRequests())
			for _, req := range reg.Requests() {
				if strings.Contains(req.Path, "/manifests/") {
					m++
				}
			}
		}
		moved[who], manifests[who] = n, m
	}
	if err := checkCopied(ctx, "noop", backup.Backend, dstRepoTag, img); err != nil {
		return nil, err
	}

	return []Result{
		{
			Row:     "3 no-op copy (backup already complete)",
			Measure: fmt.Sprintf("milliseconds (median of %d)", iterations),
			Values:  values,
			Ratios:  ratios,
			Target:  "ours call <= crane call and <= crane process",
			Met:     env.judge(ratios["ours call/crane call"] <= 1 && ratios["ours call/crane process"] <= 1),
			Note: ratioNote + "; call: the copy call in a fresh process (new connections, auth pings), which is what the long-running " +
				"controller pays; process: wall time including process start, where ours also initializes the controller's " +
				"package graph (client-go, controller-runtime metrics)",
		},
		{
			Row:     "3 no-op copy: blob requests",
			Measure: "requests reading or writing blobs, both registries",
			Values:  moved,
			Target:  "ours = 0",
			Met:     env.judge(moved[ours] == 0),
		},
		{
			Row:     "3 no-op copy: manifest requests",
			Measure: "manifest requests, both registries",
			Values:  manifests,
			Target:  "ours <= 2 (the source tag and the backup, one HEAD each)",
			Met:     env.judge(manifests[ours] <= 2),
			Note:    "the backup is asked on every copy, so a copy lost since is made again before a workload is pointed at it",
		},
	}, nil
}
