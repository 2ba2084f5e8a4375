package main

import (
	"context"
	"fmt"
	"time"
)

// parallelRow copies manyImages distinct images that are all needed at once, as after a rollout of many
// workloads: ours copies them in one process at the same time (the controller's defaults bound how many
// images and blobs move at once); crane, a one-image tool, copies them one after the other.
func parallelRow(ctx context.Context, env *benchEnv) ([]Result, error) {
	var pairs []string
	var total int64
	images := make([]pushedImage, manyImages)
	for i := range manyImages {
		img, err := env.image(ctx, manyImage(i))
		if err != nil {
			return nil, err
		}
		images[i] = img
		total += img.size()
	}
	dstRepoTag := func(i int) string { return fmt.Sprintf("backup/many-%d:v1", i) }

	var oursT, craneT []float64
	for i := range env.iterations {
		for _, who := range inTurn([]string{ours, crane}, i) {
			err := env.withFreshBackup(func(backup *server) error {
				pairs = pairs[:0]
				for i := range manyImages {
					pairs = append(pairs, env.source.Backend+"/"+manyImage(i), backup.Backend+"/"+dstRepoTag(i))
				}
				if who == ours {
					s, err := env.runOurs(ctx, "parallel", true, pairs...)
					if err != nil {
						return err
					}
					oursT = append(oursT, s.seconds)
				} else {
					start := time.Now()
					for i := 0; i < len(pairs); i += 2 {
						if _, err := env.runCrane(ctx, pairs[i], pairs[i+1]); err != nil {
							return err
						}
					}
					craneT = append(craneT, time.Since(start).Seconds())
				}
				for i, img := range images {
					if err := checkCopied(ctx, who, backup.Backend, dstRepoTag(i), img); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
	}

	values := map[string]float64{ours: mbps(total, median(oursT)), crane: mbps(total, median(craneT))}
	// Throughput ratio of an iteration: crane's time over ours.
	speedup := make([]float64, 0, len(oursT))
	for i := range min(len(oursT), len(craneT)) {
		speedup = append(speedup, ratio(craneT[i], oursT[i]))
	}
	return []Result{{
		Row:     fmt.Sprintf("4 parallelism: %d distinct images at once, %s", manyImages, describeLayers(env, manyImage(0), total/manyImages)+" each"),
		Measure: env.measure("aggregate MB/s"),
		Values:  values,
		Ratios:  map[string]float64{"ours/crane": median(speedup)},
		Target:  "ours/crane >= 1.0",
		Met:     env.judge(median(speedup) >= 1),
		Note: fmt.Sprintf(ratioNote+"; ours: one process, all %d copies requested at once (4 images x 4 blobs at a time, the defaults), %.2f s; crane: %d sequential crane copy, %.2f s",
			manyImages, median(oursT), manyImages, median(craneT)),
	}}, nil
}
