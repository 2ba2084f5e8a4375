package registry

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Results of a copy request, the values of the copies_total "result" label.
const (
	resultCopied  = "copied"  // this request moved the bytes and verified the copy
	resultJoined  = "joined"  // this request waited for another request's transfer of the same copy
	resultPresent = "present" // the backup registry already held the digest (one manifest HEAD there)
	resultFailed  = "failed"
)

var (
	copiesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "image_clone",
		Name:      "copies_total",
		Help:      "Image copy requests, each counted once, by result: copied (this request moved the bytes), joined (it waited for another request's transfer), present (the backup already held the digest), failed.",
	}, []string{"result"})
	tagCacheHits = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "image_clone",
		Name:      "tag_cache_hits_total",
		Help:      "Copy requests whose source tag was resolved within --tag-cache-ttl, answered without a request to the source registry.",
	})
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
	metrics.Registry.MustRegister(copiesTotal, copyDuration, copiedBytes, tagCacheHits)
}
