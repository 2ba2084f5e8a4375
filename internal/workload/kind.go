package workload

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Kind describes one workload kind to the generic reconciler and to the admission webhook; the pod template
// accessor is the only kind-specific code.
type Kind[T client.Object] struct {
	// Name is the Kind as users see it, e.g. "Deployment"; it names the controller and labels metrics.
	Name string
	// PodTemplate returns the object's pod template, which the reconciler rewrites in place.
	PodTemplate func(T) *corev1.PodTemplateSpec
	// TemplatePath is the JSON pointer of the pod template in the object, e.g. "/spec/template".
	TemplatePath string
	// NewList returns an empty list of the kind, used to find the workloads of a namespace.
	NewList func() client.ObjectList
	// ImmutableTemplate marks a kind whose pod template cannot change once the object exists (Jobs): the
	// reconciler backs its images up without patching it, and the webhook rewrites it on CREATE only.
	ImmutableTemplate bool
	// CreatedFrom names the kinds whose objects create objects of this kind from a template of their own (a
	// CronJob its Jobs): an object that one of them controls is backed up through its owner's template.
	CreatedFrom []string
}

// Deployments is the Kind of apps/v1 Deployments.
var Deployments = Kind[*appsv1.Deployment]{
	Name:         "Deployment",
	PodTemplate:  func(d *appsv1.Deployment) *corev1.PodTemplateSpec { return &d.Spec.Template },
	TemplatePath: "/spec/template",
	NewList:      func() client.ObjectList { return &appsv1.DeploymentList{} },
}

// DaemonSets is the Kind of apps/v1 DaemonSets.
var DaemonSets = Kind[*appsv1.DaemonSet]{
	Name:         "DaemonSet",
	PodTemplate:  func(d *appsv1.DaemonSet) *corev1.PodTemplateSpec { return &d.Spec.Template },
	TemplatePath: "/spec/template",
	NewList:      func() client.ObjectList { return &appsv1.DaemonSetList{} },
}

// StatefulSets is the Kind of apps/v1 StatefulSets.
var StatefulSets = Kind[*appsv1.StatefulSet]{
	Name:         "StatefulSet",
	PodTemplate:  func(s *appsv1.StatefulSet) *corev1.PodTemplateSpec { return &s.Spec.Template },
	TemplatePath: "/spec/template",
	NewList:      func() client.ObjectList { return &appsv1.StatefulSetList{} },
}

// CronJobs is the Kind of batch/v1 CronJobs: the template of the Jobs they create.
var CronJobs = Kind[*batchv1.CronJob]{
	Name:         "CronJob",
	PodTemplate:  func(c *batchv1.CronJob) *corev1.PodTemplateSpec { return &c.Spec.JobTemplate.Spec.Template },
	TemplatePath: "/spec/jobTemplate/spec/template",
	NewList:      func() client.ObjectList { return &batchv1.CronJobList{} },
}

// Jobs is the Kind of batch/v1 Jobs, whose pod template is immutable.
var Jobs = Kind[*batchv1.Job]{
	Name:              "Job",
	PodTemplate:       func(j *batchv1.Job) *corev1.PodTemplateSpec { return &j.Spec.Template },
	TemplatePath:      "/spec/template",
	NewList:           func() client.ObjectList { return &batchv1.JobList{} },
	ImmutableTemplate: true,
	CreatedFrom:       []string{"CronJob"},
}

// KindNames are the names of every kind, as --workload-kinds takes them.
var KindNames = []string{Deployments.Name, DaemonSets.Name, StatefulSets.Name, CronJobs.Name, Jobs.Name}

// ParseKinds checks a list of kind names (case-insensitive) and returns each once, spelled as in KindNames.
func ParseKinds(names []string) ([]string, error) {
	var kinds []string
	for _, name := range names {
		i := slices.IndexFunc(KindNames, func(k string) bool { return strings.EqualFold(k, strings.TrimSpace(name)) })
		if i < 0 {
			return nil, fmt.Errorf("unknown workload kind %q: the kinds are %s", name, strings.Join(KindNames, ", "))
		}
		if !slices.Contains(kinds, KindNames[i]) {
			kinds = append(kinds, KindNames[i])
		}
	}
	if len(kinds) == 0 {
		return nil, fmt.Errorf("no workload kind: name at least one of %s", strings.Join(KindNames, ", "))
	}
	return kinds, nil
}

// NewObject returns an empty object of the kind, e.g. &appsv1.Deployment{} for T = *appsv1.Deployment.
func NewObject[T client.Object]() T {
	return reflect.New(reflect.TypeFor[T]().Elem()).Interface().(T)
}
