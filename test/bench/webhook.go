package main

// Rows "admission" and "rollouts": the mutating admission webhook on a private instance of the cluster of
// `make local-up` (see scale_cluster.go), which calls the controller's webhook at https://localhost:PORT.
//
//   - admission (webhook_admission.go): server-side dry-run creates of Deployments whose images are backed
//     up, paced at a fixed rate, against the same requests in a namespace the webhook leaves out: the latency
//     the webhook adds, its own handler time and failed admissions.
//   - rollouts (webhook_rollouts.go): ReplicaSets per new Deployment whose image is backed up, with the
//     webhook (rewritten at admission: one rollout) and with the controller restarted with --webhook=false
//     (patched after creation: two, unless the patch beats the deployment controller to the new object).
//
// Like the scale rows they have no peer tool; the peer is the same cluster without the webhook in the path.
// Exact counts (failures, ReplicaSets) are judged with -smoke too, latencies are not.
//
// Environment, for investigations:
//
//	WEBHOOK_CONTROLLER_ARGS  more controller flags for both rows, e.g. "--workload-pull-secrets=false"

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func init() {
	rows = append(rows,
		row{name: "admission", run: runAdmission},
		row{name: "rollouts", run: runRollouts},
	)
}

// startWebhookCluster starts a private local cluster with one kwok node whose controller serves the webhook,
// pushes images img-000:1 ... to its upstream registry and returns them. The caller must call stop, also when
// this fails.
func startWebhookCluster(ctx context.Context, images int, controllerArgs ...string) (*localCluster, []string, error) {
	args := append(slices.Clone(controllerArgs), strings.Fields(os.Getenv("WEBHOOK_CONTROLLER_ARGS"))...)
	c, err := startLocalCluster(ctx, clusterOptions{nodes: 1, controllerArgs: args, webhook: true})
	if err != nil {
		return c, nil, err
	}
	scaleLog("controller log: %s (BENCH_KEEP_TMP=1 keeps it)", c.controllerLog())
	if err := pushScaleImages(ctx, c.upstreamRegistry(), images); err != nil {
		return c, nil, err
	}
	names := make([]string, images)
	for i := range names {
		names[i] = scaleImage(i)
	}
	return c, names, nil
}

// backUpImages has the controller back up images: it creates one Deployment per image in namespace ns (their
// copies do not exist, so the webhook admits them unchanged) and waits until the controller has pointed each
// at its copy.
func backUpImages(ctx context.Context, c *localCluster, ns string, images []string) error {
	if err := createNamespace(ctx, c, ns); err != nil {
		return err
	}
	start := time.Now()
	for i, image := range images {
		d := scaleDeployment(ns, fmt.Sprintf("seed-%03d", i), image, 1)
		if _, err := c.client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	prefix := c.backupRegistry() + "/"
	err := scalePoll(ctx, 100*time.Millisecond, 2*time.Minute, "the controller to back up the images", func() (bool, error) {
		list, err := c.client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		n := 0
		for i := range list.Items {
			if onBackup(&list.Items[i], prefix) {
				n++
			}
		}
		return n == len(images), nil
	})
	if err != nil {
		return fmt.Errorf("%w%s", err, c.controllerLogTail())
	}
	scaleLog("%d images backed up in %s", len(images), time.Since(start).Round(10*time.Millisecond))
	return nil
}

func createNamespace(ctx context.Context, c *localCluster, ns string) error {
	_, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	return err
}

// onBackup reports whether every container of d runs an image of the backup registry (prefix is "HOST/").
func onBackup(d *appsv1.Deployment, prefix string) bool {
	for _, c := range d.Spec.Template.Spec.Containers {
		if !strings.HasPrefix(c.Image, prefix) {
			return false
		}
	}
	return true
}

// webhookControllerFlags describes the controller's flags beyond local-up's, for the notes.
func webhookControllerFlags(rowArgs ...string) string {
	args := append(slices.Clone(rowArgs), strings.Fields(os.Getenv("WEBHOOK_CONTROLLER_ARGS"))...)
	if len(args) == 0 {
		return "defaults"
	}
	return "defaults plus " + strings.Join(args, " ")
}
