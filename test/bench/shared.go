package main

import (
	"context"
	"fmt"
	"path/filepath"
)

// sharedLayersRow copies a base image into one repository of an empty backup registry, then an image that
// shares most of its layers into another repository, and measures the second copy. Each contender does both
// copies itself, so each knows in its own way where the shared layers already are: our copier remembers the
// blobs it verified in the backup registry, skopeo keeps them in its blob info cache. Upload bytes are counted
// by a proxy in front of the backup registry, not taken from the tools.
func sharedLayersRow(ctx context.Context, env *benchEnv) ([]Result, error) {
	base, err := env.image(ctx, coldImage)
	if err != nil {
		return nil, err
	}
	app, err := env.image(ctx, sharedImage)
	if err != nil {
		return nil, err
	}
	var unique int64 // bytes of app's blobs that the backup registry does not hold after the base copy
	for d, size := range app.blobs {
		if _, ok := base.blobs[d]; !ok {
			unique += size
		}
	}
	const baseRepoTag, appRepo = "backup/base:v1", "backup/app"
	src := func(repoTag string) string { return env.source.Backend + "/" + repoTag }
	contenders := []string{ours, skopeo, crane}
	if env.skopeo == "" {
		contenders = []string{ours, crane}
	}

	type result struct {
		seconds  float64
		uploaded int64
		mounts   int
	}
	results := map[string][]result{}
	for i := range env.iterations {
		for _, who := range inTurn(contenders, i) {
			err := env.withFreshBackup(func(backup *server) error {
				// Both copies go through the counting proxy, for every contender alike.
				baseDst, appDst := backup.Host+"/"+baseRepoTag, backup.Host+"/"+appRepo+":v1"
				var r result
				switch who {
				case ours:
					s, err := env.runOurs(ctx, "shared", false, src(coldImage), baseDst, src(sharedImage), appDst)
					if err != nil {
						return err
					}
					r.seconds = s.report.Seconds[1] // the app copy, by a copier that copied the base before
				case skopeo:
					cache := filepath.Join(env.tmp, fmt.Sprintf("skopeo-shared-%d", i))
					if _, err := env.runSkopeo(ctx, cache, src(coldImage), baseDst); err != nil {
						return err
					}
					s, err := env.runSkopeo(ctx, cache, src(sharedImage), appDst)
					if err != nil {
						return err
					}
					r.seconds = s.seconds
				case crane:
					if _, err := env.runCrane(ctx, src(coldImage), baseDst); err != nil {
						return err
					}
					s, err := env.runCrane(ctx, src(sharedImage), appDst)
					if err != nil {
						return err
					}
					r.seconds = s.seconds
				}
				r.uploaded, r.mounts = backup.UploadedBytesTo(appRepo), backup.Mounts(appRepo)
				results[who] = append(results[who], r)
				return checkCopied(ctx, who, backup.Backend, appRepo+":v1", app)
			})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", who, err)
			}
		}
	}

	timeSamples := map[string][]sample{}
	for who, rs := range results {
		for _, r := range rs {
			timeSamples[who] = append(timeSamples[who], sample{seconds: r.seconds})
		}
	}
	times, uploaded, mounts := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for who, rs := range results {
		var ts, us, ms []float64
		for _, r := range rs {
			ts, us, ms = append(ts, r.seconds), append(us, float64(r.uploaded)), append(ms, float64(r.mounts))
		}
		times[who], uploaded[who], mounts[who] = median(ts), median(us), median(ms)
	}
	uploadRatio := ratio(uploaded[ours], float64(unique))
	shared := app.size() - unique
	what := fmt.Sprintf("%s of %s shared with a base image in another backup repository", mib(shared), mib(app.size()))

	timeResult := Result{
		Row:     "2 shared layers: copy time",
		Measure: env.measure("seconds"),
		Values:  times,
		Ratios:  map[string]float64{"ours/crane": oursOver(timeSamples, crane, wall)},
		Note: ratioNote + "; ours: the Copy call of a process that copied the base image before (the controller is long-running); " +
			"peers: process wall time after copying the base image themselves",
	}
	if env.skopeo != "" {
		timeResult.Ratios["ours/skopeo warm"] = oursOver(timeSamples, skopeo, wall)
		timeResult.Target = "ours/skopeo warm <= 1.0"
		timeResult.Met = env.judge(timeResult.Ratios["ours/skopeo warm"] <= 1)
		timeResult.Note += "; skopeo warm: its blob info cache knows where the base image's layers are"
	} else {
		timeResult.Note += "; skopeo not installed, skipped"
	}

	values := map[string]float64{"unique": float64(unique) / (1 << 20)}
	for who, u := range uploaded {
		values[who] = u / (1 << 20)
	}
	ratios := map[string]float64{"ours/unique": uploadRatio}
	if env.skopeo != "" {
		ratios["skopeo/unique"] = ratio(uploaded[skopeo], float64(unique))
	}
	ratios["crane/unique"] = ratio(uploaded[crane], float64(unique))
	return []Result{
		{
			Row:     "2 shared layers: bytes uploaded, " + what,
			Measure: env.measure("MiB uploaded, counted at the registry"),
			Values:  values,
			Ratios:  ratios,
			Target:  "ours/unique = 1.00",
			Met:     env.judge(uploaded[ours] == float64(unique)),
			Note: fmt.Sprintf("blobs mounted from the base repository: ours %.0f, %s; unique = bytes of blobs the backup did not hold",
				mounts[ours], peerMounts(env, mounts)),
		},
		timeResult,
	}, nil
}

func peerMounts(env *benchEnv, mounts map[string]float64) string {
	s := fmt.Sprintf("crane %.0f", mounts[crane])
	if env.skopeo != "" {
		s = fmt.Sprintf("skopeo %.0f, %s", mounts[skopeo], s)
	}
	return s
}
