// Package workloadtest builds workloads (Deployments, DaemonSets, StatefulSets, CronJobs, Jobs) for tests and reads back what the controller did to
// them: their images and the Events recorded about them.
package workloadtest

import (
	"context"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// PodTemplate returns a pod template labelled app=<app> with one init container per initImages entry and
// one container per images entry.
func PodTemplate(app string, initImages, images []string) corev1.PodTemplateSpec {
	t := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}}}
	for i, image := range initImages {
		t.Spec.InitContainers = append(t.Spec.InitContainers, corev1.Container{Name: fmt.Sprintf("init-%d", i), Image: image})
	}
	for i, image := range images {
		t.Spec.Containers = append(t.Spec.Containers, corev1.Container{Name: fmt.Sprintf("main-%d", i), Image: image})
	}
	return t
}

// Deployment returns a Deployment whose pods are labelled app=<name>.
func Deployment(ns, name string, initImages, images []string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: PodTemplate(name, initImages, images),
		},
	}
}

// DaemonSet returns a DaemonSet whose pods are labelled app=<name>.
func DaemonSet(ns, name string, initImages, images []string) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: PodTemplate(name, initImages, images),
		},
	}
}

// StatefulSet returns a StatefulSet whose pods are labelled app=<name>.
func StatefulSet(ns, name string, initImages, images []string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.StatefulSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: PodTemplate(name, initImages, images),
		},
	}
}

// CronJob returns a CronJob that runs every hour, whose pods are labelled app=<name>.
func CronJob(ns, name string, initImages, images []string) *batchv1.CronJob {
	template := PodTemplate(name, initImages, images)
	template.Spec.RestartPolicy = corev1.RestartPolicyNever
	return &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: batchv1.CronJobSpec{
			Schedule:    "0 * * * *",
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: template}},
		},
	}
}

// Job returns a Job whose pods are labelled app=<name>.
func Job(ns, name string, initImages, images []string) *batchv1.Job {
	template := PodTemplate(name, initImages, images)
	template.Spec.RestartPolicy = corev1.RestartPolicyNever
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       batchv1.JobSpec{Template: template},
	}
}

// ContainerImages returns the init container images followed by the container images of a pod spec.
func ContainerImages(spec corev1.PodSpec) []string {
	var images []string
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		images = append(images, c.Image)
	}
	return images
}

// TemplateImages reads a workload into obj and returns its pod template's images.
func TemplateImages(ctx context.Context, c client.Client, obj client.Object) ([]string, error) {
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return nil, err
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return ContainerImages(o.Spec.Template.Spec), nil
	case *appsv1.DaemonSet:
		return ContainerImages(o.Spec.Template.Spec), nil
	case *appsv1.StatefulSet:
		return ContainerImages(o.Spec.Template.Spec), nil
	case *batchv1.CronJob:
		return ContainerImages(o.Spec.JobTemplate.Spec.Template.Spec), nil
	case *batchv1.Job:
		return ContainerImages(o.Spec.Template.Spec), nil
	}
	return nil, fmt.Errorf("%T is not a workload", obj)
}

// Events returns "<Type> <Reason>: <note>" for every Event recorded about obj, repeated as often as the
// event happened (a repeated event is one object with a series count).
func Events(ctx context.Context, c client.Client, obj client.Object) ([]string, error) {
	list := &eventsv1.EventList{}
	if err := c.List(ctx, list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil, err
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name != obj.GetName() {
			continue
		}
		times := 1
		if e.Series != nil {
			times = max(1, int(e.Series.Count))
		}
		for range times {
			out = append(out, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Note))
		}
	}
	return out, nil
}

// DockerConfigSecret returns a kubernetes.io/dockerconfigjson pull secret with user's credentials for host.
func DockerConfigSecret(namespace, name, host, user, pass string) (*corev1.Secret, error) {
	data, err := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"username": user, "password": pass}}})
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: data},
	}, nil
}
