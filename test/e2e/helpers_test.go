//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

func newNamespace() string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}
	Expect(k8sClient.Create(context.Background(), ns)).To(Succeed())
	DeferCleanup(func() { Expect(k8sClient.Delete(context.Background(), ns)).To(Succeed()) })
	return ns.Name
}

// newDeployment, newDaemonSet, newStatefulSet, newCronJob and newJob build workloads whose pods are labelled
// app=<name>.
var (
	newDeployment  = workloadtest.Deployment
	newDaemonSet   = workloadtest.DaemonSet
	newStatefulSet = workloadtest.StatefulSet
	newCronJob     = workloadtest.CronJob
	newJob         = workloadtest.Job
)

// templateImages returns the init container images followed by the container images of a workload.
func templateImages(obj client.Object) func() []string {
	return func() []string {
		GinkgoHelper()
		images, err := workloadtest.TemplateImages(context.Background(), k8sClient, obj)
		Expect(err).NotTo(HaveOccurred())
		return images
	}
}

// podImages returns the images of every Running pod matching labels, one slice per pod.
func podImages(ns string, labels map[string]string) func() [][]string {
	return func() [][]string {
		GinkgoHelper()
		pods := &corev1.PodList{}
		Expect(k8sClient.List(context.Background(), pods, client.InNamespace(ns), client.MatchingLabels(labels))).To(Succeed())
		var out [][]string
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
				out = append(out, workloadtest.ContainerImages(p.Spec))
			}
		}
		return out
	}
}

// deploymentRolledOut succeeds once every replica runs the current template and old ReplicaSets are at zero.
func deploymentRolledOut(d *appsv1.Deployment) func(Gomega) {
	return func(g Gomega) {
		ctx := context.Background()
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		g.Expect(d.Status.ObservedGeneration).To(Equal(d.Generation))
		g.Expect(d.Status.UpdatedReplicas).To(Equal(want))
		g.Expect(d.Status.ReadyReplicas).To(Equal(want))
		g.Expect(d.Status.Replicas).To(Equal(want), "old pods still exist")

		sets := &appsv1.ReplicaSetList{}
		g.Expect(k8sClient.List(ctx, sets, client.InNamespace(d.Namespace), client.MatchingLabels(d.Spec.Selector.MatchLabels))).To(Succeed())
		for _, rs := range sets.Items {
			if rs.Spec.Template.Spec.Containers[0].Image != d.Spec.Template.Spec.Containers[0].Image {
				g.Expect(rs.Status.Replicas).To(BeZero(), "old ReplicaSet "+rs.Name+" not scaled to zero")
			}
		}
	}
}

// backupStorage is the root directory of the local backup registry's filesystem storage.
func backupStorage() string {
	return filepath.Join(localDir(), "registry", "backup", "data")
}

// removeFromStorage deletes path, below the backup registry's storage root, at once: it is renamed out of the
// registry's reach first, since the controller may be writing below it (restoring what it found lost) while a
// plain recursive delete runs.
func removeFromStorage(path string) {
	GinkgoHelper()
	trash, err := os.MkdirTemp(filepath.Dir(backupStorage()), "wiped-")
	Expect(err).NotTo(HaveOccurred())
	Expect(os.Rename(path, filepath.Join(trash, filepath.Base(path)))).To(Succeed())
	Expect(os.RemoveAll(trash)).To(Succeed())
}
