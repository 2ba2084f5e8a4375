package controller

import (
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"
)

// TrimForCache is the informer cache transform for the objects the reconcilers watch: it drops what they never
// read, so that a cluster-wide cache of workloads stays small. Every object loses its managedFields; workloads
// (Deployments, DaemonSets, StatefulSets, CronJobs, Jobs) also lose their status and the kubectl
// last-applied-configuration annotation (a copy of the whole spec). What the reconcilers and their predicates read stays: metadata (name, namespace, generation,
// resourceVersion, deletionTimestamp, the other annotations) and the spec.
func TrimForCache() toolscache.TransformFunc {
	return func(in any) (any, error) {
		obj, err := meta.Accessor(in)
		if err != nil {
			return in, nil //nolint:nilerr // not an object (e.g. a tombstone): stored as it is
		}
		// Nil check: setting nil managed fields on an object that has none trips kubernetes/kubernetes#124337.
		if obj.GetManagedFields() != nil {
			obj.SetManagedFields(nil)
		}
		switch o := in.(type) {
		case *appsv1.Deployment:
			o.Status = appsv1.DeploymentStatus{}
		case *appsv1.DaemonSet:
			o.Status = appsv1.DaemonSetStatus{}
		case *appsv1.StatefulSet:
			o.Status = appsv1.StatefulSetStatus{}
		case *batchv1.CronJob:
			o.Status = batchv1.CronJobStatus{}
		case *batchv1.Job:
			o.Status = batchv1.JobStatus{}
		default:
			return in, nil
		}
		if annotations := obj.GetAnnotations(); annotations[corev1.LastAppliedConfigAnnotation] != "" {
			delete(annotations, corev1.LastAppliedConfigAnnotation)
			obj.SetAnnotations(annotations)
		}
		return in, nil
	}
}
