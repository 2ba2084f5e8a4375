package admission

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The results of an admission request, the values of the result label.
const (
	// resultRewritten: at least one image (or the backup pull secret) was rewritten.
	resultRewritten = "rewritten"
	// resultNoCopy: some external image has no verified copy yet (or its namespace lacks the backup pull
	// secret); the reconciler copies it and patches the workload.
	resultNoCopy = "unchanged-no-copy"
	// resultError: reading the namespace, the pull secrets or a registry failed or ran out of time.
	resultError = "unchanged-error"
	// resultSkipped: nothing to do — the workload is opted out, ignored, serves the backup registry, has no
	// external image, or the request is not a CREATE or UPDATE of a pod template kind.
	resultSkipped = "skipped"
)

var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "image_clone",
		Name:      "admission_requests_total",
		Help:      "Admission requests for workloads, by kind and result (rewritten, unchanged-no-copy, unchanged-error, skipped).",
	}, []string{"kind", "result"})
	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "image_clone",
		Name:      "admission_duration_seconds",
		Help:      "Time the webhook took to answer an admission request, by kind.",
		Buckets:   []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	}, []string{"kind"})
)

func init() {
	metrics.Registry.MustRegister(requestsTotal, requestDuration)
}
