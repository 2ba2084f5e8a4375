package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// rolloutsConfig sizes the rollouts row.
type rolloutsConfig struct {
	deployments, images int
	settleTimeout       time.Duration
}

func rolloutsConfigFor(env *benchEnv) rolloutsConfig {
	if env.smoke {
		return rolloutsConfig{deployments: 3, images: 2, settleTimeout: time.Minute}
	}
	return rolloutsConfig{deployments: 20, images: 5, settleTimeout: 3 * time.Minute}
}

// rollouts is what one phase of the row measured.
type rollouts struct {
	// replicaSets and generations per Deployment, once settled.
	replicaSets, generations []int
	// settle is the time from the first create to every Deployment settled.
	settle time.Duration
	// patched is how many workloads the controller patched; admission counts the webhook's results.
	patched   float64
	admission map[string]float64
}

func (r rollouts) meanReplicaSets() float64 { return meanInts(r.replicaSets) }

// runRollouts measures the rollouts row on a cluster of its own: the images are backed up first; then new
// Deployments with those images are created, with the webhook and after restarting the controller without it,
// and their ReplicaSets counted (the cluster's kube-controller-manager makes one per rollout).
func runRollouts(ctx context.Context, env *benchEnv) ([]Result, error) {
	cfg := rolloutsConfigFor(env)
	c, images, err := startWebhookCluster(ctx, cfg.images)
	defer c.stop(ctx)
	if err != nil {
		return nil, err
	}
	if err := backUpImages(ctx, c, "bench-rollouts-seed", images); err != nil {
		return nil, err
	}
	with, err := rolloutPhase(ctx, c, cfg, images, "bench-rollouts-webhook")
	if err != nil {
		return nil, err
	}
	scaleLog("rollouts: restarting the controller with --webhook=false (LOCAL_WEBHOOK=false)")
	if err := c.setWebhook(ctx, false); err != nil {
		return nil, err
	}
	without, err := rolloutPhase(ctx, c, cfg, images, "bench-rollouts-no-webhook")
	if err != nil {
		return nil, err
	}

	row := fmt.Sprintf("rollouts: %d new Deployments, images already backed up", cfg.deployments)
	mean, generation := with.meanReplicaSets(), meanInts(with.generations)
	return []Result{
		{
			Row:     row,
			Measure: "ReplicaSets per Deployment (mean)",
			Values:  map[string]float64{"webhook": mean, "no webhook": without.meanReplicaSets()},
			Target:  "webhook = 1 (no webhook: 2)",
			Met:     scaleMet(mean == 1),
			Note: fmt.Sprintf("one per rollout, counted once every Deployment is settled (on the backup, observedGeneration = "+
				"generation, controller queues empty): webhook %s, no webhook %s; without the webhook the controller's patch "+
				"races the deployment controller's first sync, and a Deployment patched before it rolls out once; no webhook: "+
				"the same cluster's controller restarted with --webhook=false (LOCAL_WEBHOOK=false, which also deletes the "+
				"webhook configuration); %d images backed up first, Deployment replicas 1 on 1 kwok node; controller flags: %s",
				histogramOf(with.replicaSets), histogramOf(without.replicaSets), cfg.images, webhookControllerFlags()),
		},
		{
			Row:     row,
			Measure: "generations per Deployment (mean)",
			Values:  map[string]float64{"webhook": generation, "no webhook": meanInts(without.generations)},
			Target:  "webhook = 1",
			Met:     scaleMet(generation == 1),
			Note: fmt.Sprintf("a generation after the first is a change of the spec after creation; patched by the controller: "+
				"webhook %.0f, no webhook %.0f; webhook results: %s", with.patched, without.patched, scaleCounts(with.admission)),
		},
		{
			Row:     row,
			Measure: "seconds from the first create to every Deployment settled",
			Values:  map[string]float64{"webhook": with.settle.Seconds(), "no webhook": without.settle.Seconds()},
			Ratios:  map[string]float64{"webhook/no webhook": ratio(with.settle.Seconds(), without.settle.Seconds())},
			Note:    "created one after the other; settled as above",
		},
	}, nil
}

// rolloutPhase creates cfg.deployments Deployments in a new namespace ns, waits until all are settled and
// counts their ReplicaSets and generations.
func rolloutPhase(ctx context.Context, c *localCluster, cfg rolloutsConfig, images []string, ns string) (rollouts, error) {
	var out rollouts
	if err := createNamespace(ctx, c, ns); err != nil {
		return out, err
	}
	before, err := c.controllerMetrics(ctx)
	if err != nil {
		return out, err
	}
	scaleLog("rollouts: creating %d Deployments in %s", cfg.deployments, ns)
	start := time.Now()
	for i := range cfg.deployments {
		d := scaleDeployment(ns, fmt.Sprintf("r-%03d", i), images[i%len(images)], 1)
		if _, err := c.client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			return out, err
		}
	}
	if err := waitSettled(ctx, c, ns, cfg); err != nil {
		return out, err
	}
	out.settle = time.Since(start)
	// A reconcile still under way could patch once more: wait for the controller to be done, then check again.
	if err := c.waitQuiet(ctx, 30*time.Second); err != nil {
		return out, err
	}
	if err := waitSettled(ctx, c, ns, cfg); err != nil {
		return out, err
	}
	after, err := c.controllerMetrics(ctx)
	if err != nil {
		return out, err
	}
	out.patched = after.Sum("image_clone_workloads_patched_total", nil) - before.Sum("image_clone_workloads_patched_total", nil)
	out.admission = scaleDelta(before, after, "image_clone_admission_requests_total", "result")

	deployments, err := c.client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return out, err
	}
	replicaSets, err := c.client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return out, err
	}
	owned := map[string]int{}
	for _, rs := range replicaSets.Items {
		if ref := metav1.GetControllerOf(&rs); ref != nil && ref.Kind == "Deployment" {
			owned[ref.Name]++
		}
	}
	for _, d := range deployments.Items {
		out.replicaSets = append(out.replicaSets, owned[d.Name])
		out.generations = append(out.generations, int(d.Generation))
	}
	scaleLog("rollouts: %s settled in %s, %.2f ReplicaSets per Deployment", ns, out.settle.Round(10*time.Millisecond), out.meanReplicaSets())
	return out, nil
}

// waitSettled waits until every Deployment of ns runs from the backup registry and the deployment controller
// has acted on its latest generation (which it does after creating the ReplicaSet of that generation).
func waitSettled(ctx context.Context, c *localCluster, ns string, cfg rolloutsConfig) error {
	prefix := c.backupRegistry() + "/"
	var settled int
	err := scalePoll(ctx, 100*time.Millisecond, cfg.settleTimeout, "every Deployment of "+ns+" to settle", func() (bool, error) {
		list, err := c.client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		settled = 0
		for i := range list.Items {
			if d := &list.Items[i]; onBackup(d, prefix) && isObserved(d) {
				settled++
			}
		}
		return settled == cfg.deployments, nil
	})
	if err != nil {
		return fmt.Errorf("%d of %d settled: %w%s", settled, cfg.deployments, err, c.controllerLogTail())
	}
	return nil
}

func isObserved(d *appsv1.Deployment) bool { return d.Status.ObservedGeneration == d.Generation }

func meanInts(xs []int) float64 {
	if len(xs) == 0 {
		return 0
	}
	sum := 0
	for _, x := range xs {
		sum += x
	}
	return float64(sum) / float64(len(xs))
}

// histogramOf renders how many elements have each value, e.g. "18 with 1, 2 with 2".
func histogramOf(xs []int) string {
	counts := map[int]int{}
	for _, x := range xs {
		counts[x]++
	}
	parts := make([]string, 0, len(counts))
	for _, x := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d with %d", counts[x], x))
	}
	return strings.Join(parts, ", ")
}
