package workload

import (
	"reflect"

	appsv1 "k8s.io/api/apps/v1"
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

// NewObject returns an empty object of the kind, e.g. &appsv1.Deployment{} for T = *appsv1.Deployment.
func NewObject[T client.Object]() T {
	return reflect.New(reflect.TypeFor[T]().Elem()).Interface().(T)
}
