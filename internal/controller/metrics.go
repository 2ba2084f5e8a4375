package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var workloadsPatched = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "image_clone",
	Name:      "workloads_patched_total",
	Help:      "Workloads whose pod template was pointed at backup images, by kind.",
}, []string{"kind"})

func init() {
	metrics.Registry.MustRegister(workloadsPatched)
}
