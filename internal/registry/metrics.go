package registry

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Results of a copy request, the values of the copies_total "result" label.
const (
	resultCopied  = "copied"  // bytes were moved and the copy verified
	resultPresent = "present" // the backup registry already held the digest
	resultCached  = "cached"  // this process verified the copy earlier; no registry request was needed
	resultFailed  = "failed"
)

var (
	copiesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "image_clone",
		Name:      "copies_total",
		Help:      "Image copy requests by result: copied, present (backup already held the digest), cached (verified earlier by this process), failed.",
	}, []string{"result"})
	copyDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "image_clone",
		Name:      "copy_duration_seconds",
		Help:      "Time to copy and verify one image that was not yet in the backup registry.",
		Buckets:   prometheus.ExponentialBuckets(0.05, 2.5, 12), // 50ms .. ~3h
	})
	copiedBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "image_clone",
		Name:      "copied_bytes_total",
		Help:      "Blob bytes uploaded to the backup registry.",
	})
)

func init() {
	metrics.Registry.MustRegister(copiesTotal, copyDuration, copiedBytes)
}
