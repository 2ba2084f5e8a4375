// Package metricstest reads Prometheus metrics in tests as the samples of the text format, so that a test can
// add up a counter over its labels, or group it by one. Scrape reads the /metrics endpoint of another process
// (the controller, the distribution registry), which prometheus/testutil cannot reach, with expfmt's parser;
// Gather reads a registry of the test's own process.
package metricstest

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one line of the text format: a histogram is its _bucket, _sum and _count samples, as there.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Samples are the samples of one scrape or gathering.
type Samples []Sample

// Scrape reads the metrics that url serves in the Prometheus text format.
func Scrape(ctx context.Context, client *http.Client, url string) (Samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// Uncompressed: gzip would cost the scraped process far more CPU than frequent scrapes are worth.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parse(resp.Body)
}

// parse reads metrics in the Prometheus text format.
func parse(r io.Reader) (Samples, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	return flatten(slices.Collect(maps.Values(families))), nil
}

// Gather reads the metrics of a registry in this process, such as controller-runtime's metrics.Registry.
func Gather(g prometheus.Gatherer) (Samples, error) {
	families, err := g.Gather()
	if err != nil {
		return nil, err
	}
	return flatten(families), nil
}

// Sum adds the samples of metric name whose labels include all of match (every sample of it for nil).
func (s Samples) Sum(name string, match map[string]string) float64 {
	var total float64
	for _, p := range s {
		if p.Name == name && hasLabels(p.Labels, match) {
			total += p.Value
		}
	}
	return total
}

// By adds the samples of metric name, grouped by the value of label ("" for samples without it).
func (s Samples) By(name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, p := range s {
		if p.Name == name {
			out[p.Labels[label]] += p.Value
		}
	}
	return out
}

func hasLabels(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// flatten returns the samples of the families as the text format writes them.
func flatten(families []*dto.MetricFamily) Samples {
	var out Samples
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out = append(out, samplesOf(f.GetName(), labels, m)...)
		}
	}
	return out
}

func samplesOf(name string, labels map[string]string, m *dto.Metric) Samples {
	switch {
	case m.Counter != nil:
		return Samples{{name, labels, m.GetCounter().GetValue()}}
	case m.Gauge != nil:
		return Samples{{name, labels, m.GetGauge().GetValue()}}
	case m.Untyped != nil:
		return Samples{{name, labels, m.GetUntyped().GetValue()}}
	case m.Histogram != nil:
		h := m.GetHistogram()
		var out Samples
		for _, b := range h.GetBucket() {
			out = append(out, Sample{name + "_bucket", with(labels, "le", b.GetUpperBound()), float64(b.GetCumulativeCount())})
		}
		if n := len(h.GetBucket()); n == 0 || !math.IsInf(h.GetBucket()[n-1].GetUpperBound(), 1) {
			// A gathered histogram leaves out the +Inf bucket that the text format writes.
			out = append(out, Sample{name + "_bucket", with(labels, "le", math.Inf(1)), float64(h.GetSampleCount())})
		}
		return append(out, Sample{name + "_sum", labels, h.GetSampleSum()}, Sample{name + "_count", labels, float64(h.GetSampleCount())})
	case m.Summary != nil:
		sm := m.GetSummary()
		var out Samples
		for _, q := range sm.GetQuantile() {
			out = append(out, Sample{name, with(labels, "quantile", q.GetQuantile()), q.GetValue()})
		}
		return append(out, Sample{name + "_sum", labels, sm.GetSampleSum()}, Sample{name + "_count", labels, float64(sm.GetSampleCount())})
	}
	return nil
}

// with returns labels and one more, as the text format writes a bucket's or quantile's bound.
func with(labels map[string]string, name string, bound float64) map[string]string {
	out := maps.Clone(labels)
	out[name] = strconv.FormatFloat(bound, 'g', -1, 64)
	return out
}
