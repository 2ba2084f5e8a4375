package inventory

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
)

var (
	verifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "image_clone",
		Name:      "verifications_total",
		Help:      "Verifications of backups, by depth (shallow: a manifest HEAD; deep: every manifest and blob) and result (intact, lost, moved, error).",
	}, []string{"depth", "result"})
	restores = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "image_clone",
		Name:      "restores_total",
		Help:      "Restores of lost backups from their sources at the recorded digest, by result (restored, failed, unrecoverable).",
	}, []string{"result"})
	restoredBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "image_clone",
		Name:      "restored_bytes_total",
		Help:      "Blob bytes uploaded to the backup registry by restores.",
	})
	retirements = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "image_clone",
		Name:      "retention_deletions_total",
		Help:      "Backups retention acted on, by result: deleted, dry-run (would be deleted), refused (the registry refused the delete), raced (a user appeared during the delete; restored).",
	}, []string{"result"})
)

// phases are every Phase, so that the gauges report 0 for the phases no backup is in.
var phases = []v1alpha1.Phase{v1alpha1.PhaseCopying, v1alpha1.PhaseReady, v1alpha1.PhaseFailed, v1alpha1.PhaseLost,
	v1alpha1.PhaseRestoring, v1alpha1.PhaseUnrecoverable}

// phaseCounts is the gauges of backups by phase: the phase of every ImageBackup the keeper reconciled, counted
// at scrape time. A replica that does not lead reports zeros.
type phaseCounts struct {
	mu     sync.Mutex
	phases map[string]v1alpha1.Phase
}

func newPhaseCounts() *phaseCounts { return &phaseCounts{phases: map[string]v1alpha1.Phase{}} }

func (p *phaseCounts) set(key string, phase v1alpha1.Phase) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phases[key] = phase
}

func (p *phaseCounts) forget(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.phases, key)
}

func (p *phaseCounts) counts() map[v1alpha1.Phase]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[v1alpha1.Phase]int, len(phases))
	for _, phase := range p.phases {
		out[phase]++
	}
	return out
}

var (
	backupsDesc       = prometheus.NewDesc("image_clone_backups", "ImageBackups by phase.", []string{"phase"}, nil)
	unrecoverableDesc = prometheus.NewDesc("image_clone_backups_unrecoverable",
		"ImageBackups whose image neither the backup nor the source registry holds: new pods of their workloads cannot start.", nil, nil)
)

// collector exports the phase gauges of the keepers of the process (one, outside tests), summed.
type collector struct {
	mu     sync.Mutex
	counts []*phaseCounts
}

// exported is the collector registered with the metrics registry; every keeper attaches to it.
var exported = &collector{}

func (c *collector) attach(p *phaseCounts) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts = append(c.counts, p)
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- backupsDesc
	ch <- unrecoverableDesc
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	all := c.counts
	c.mu.Unlock()
	counts := map[v1alpha1.Phase]int{}
	for _, p := range all {
		for phase, n := range p.counts() {
			counts[phase] += n
		}
	}
	for _, phase := range phases {
		ch <- prometheus.MustNewConstMetric(backupsDesc, prometheus.GaugeValue, float64(counts[phase]), string(phase))
	}
	ch <- prometheus.MustNewConstMetric(unrecoverableDesc, prometheus.GaugeValue, float64(counts[v1alpha1.PhaseUnrecoverable]))
}

func init() {
	metrics.Registry.MustRegister(verifications, restores, restoredBytes, retirements, exported)
}
