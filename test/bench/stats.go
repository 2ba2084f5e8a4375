package main

import (
	"fmt"
	"slices"
)

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianOf returns the median of f over samples.
func medianOf(samples []sample, f func(sample) float64) float64 {
	xs := make([]float64, len(samples))
	for i, s := range samples {
		xs[i] = f(s)
	}
	return median(xs)
}

func wall(s sample) float64 { return s.seconds }
func rss(s sample) float64  { return s.rssMiB }

// ratio returns a/b, or 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// judge returns whether ok, or nil in smoke mode, whose tiny images make the targets meaningless.
func (env *benchEnv) judge(ok bool) *bool {
	if env.smoke {
		return nil
	}
	return &ok
}

// measure names the statistic of a row's values.
func (env *benchEnv) measure(unit string) string {
	if env.iterations == 1 {
		return unit + " (1 run)"
	}
	return fmt.Sprintf("%s (median of %d)", unit, env.iterations)
}

func mib(bytes int64) string {
	switch {
	case bytes >= 1<<20:
		return fmt.Sprintf("%d MiB", bytes>>20)
	case bytes >= 1<<10:
		return fmt.Sprintf("%d KiB", bytes>>10)
	}
	return fmt.Sprintf("%d B", bytes)
}

// mbps is the throughput of moving bytes in seconds, in MB/s (10^6 bytes, as the issue states it).
func mbps(bytes int64, seconds float64) float64 { return ratio(float64(bytes)/1e6, seconds) }

// inTurn returns the contenders in the order of iteration i: each takes the lead in turn, so that no contender
// always runs first after a registry start, or right after a particular other one.
func inTurn(contenders []string, i int) []string {
	n := len(contenders)
	order := make([]string, 0, n)
	for j := range n {
		order = append(order, contenders[(i+j)%n])
	}
	return order
}

// oursOver is the median over iterations of f(our sample) / f(peer's sample). Contenders of one iteration run
// back to back, so a load that drifts during the run (the machine is shared) cancels out of each ratio; the
// ratio of the medians would not cancel it.
func oursOver(samples map[string][]sample, peer string, f func(sample) float64) float64 {
	return medianPaired(samples[ours], f, samples[peer], f)
}

// medianPaired is the median over iterations i of fa(as[i]) / fb(bs[i]).
func medianPaired(as []sample, fa func(sample) float64, bs []sample, fb func(sample) float64) float64 {
	ratios := make([]float64, 0, len(as))
	for i := range min(len(as), len(bs)) {
		ratios = append(ratios, ratio(fa(as[i]), fb(bs[i])))
	}
	return median(ratios)
}

// ratioNote says how the ratios of a row are computed.
const ratioNote = "ratios: median of the per-iteration ratios (contenders alternate, back to back)"
