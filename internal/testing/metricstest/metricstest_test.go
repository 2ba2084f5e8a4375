package metricstest_test

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
)

func testRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	copies := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "copies_total", Help: "h"}, []string{"result", "kind"})
	copies.WithLabelValues("copied", "Deployment").Add(2)
	copies.WithLabelValues("copied", "DaemonSet").Add(3)
	copies.WithLabelValues("failed", "Deployment").Inc()
	took := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "took_seconds", Help: "h", Buckets: []float64{1}}, []string{"controller"})
	took.WithLabelValues("a").Observe(0.5)
	took.WithLabelValues("a").Observe(2)
	reg.MustRegister(copies, took)
	return reg
}

func check(t *testing.T, s metricstest.Samples) {
	t.Helper()
	if got := s.Sum("copies_total", map[string]string{"result": "copied"}); got != 5 {
		t.Errorf("copied: %v, want 5", got)
	}
	if got := s.Sum("copies_total", nil); got != 6 {
		t.Errorf("all copies: %v, want 6", got)
	}
	if got, want := s.By("copies_total", "kind"), map[string]float64{"Deployment": 3, "DaemonSet": 3}; !maps.Equal(got, want) {
		t.Errorf("by kind: %v, want %v", got, want)
	}
	if got := s.Sum("took_seconds_sum", map[string]string{"controller": "a"}); got != 2.5 {
		t.Errorf("histogram sum: %v, want 2.5", got)
	}
	if got := s.Sum("took_seconds_count", nil); got != 2 {
		t.Errorf("histogram count: %v, want 2", got)
	}
	if got := s.Sum("took_seconds_bucket", map[string]string{"le": "1"}); got != 1 {
		t.Errorf("bucket le=1: %v, want 1", got)
	}
	if got := s.Sum("took_seconds_bucket", map[string]string{"le": "+Inf"}); got != 2 {
		t.Errorf("bucket le=+Inf: %v, want 2", got)
	}
}

func TestScrapeReadsWhatGatherDoes(t *testing.T) {
	reg := testRegistry()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	scraped, err := metricstest.Scrape(context.Background(), http.DefaultClient, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	check(t, scraped)
	gathered, err := metricstest.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	check(t, gathered)
}

func TestScrapeFailsOnAnErrorStatus(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, err := metricstest.Scrape(context.Background(), http.DefaultClient, srv.URL); err == nil {
		t.Error("no error for a 404")
	}
}
