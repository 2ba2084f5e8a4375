package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// usageIndex is the cache index of the objects of every user kind by the backup references (Mapping.Target)
// their pod templates name, as copies or through their sources.
const usageIndex = "inventory.backups"

// maxListed bounds Usage.Workloads.
const maxListed = 10

// user is a kind of object whose pod template can need a copy.
type user struct {
	kind    string
	newObj  func() client.Object
	newList func() client.ObjectList
	// spec returns the pod spec of an object of the kind, or nil.
	spec func(client.Object) *corev1.PodSpec
	// workload marks the kinds users create and a copy is listed as used by; objects of the other kinds
	// (ReplicaSets, ControllerRevisions, Pods, Jobs) that a controller owns are counted as retained only.
	workload bool
}

// users are every kind that can need a copy: what runs (Pods), what will run (the workloads' templates), and
// what a rollback would run (ReplicaSets and ControllerRevisions).
var users = []user{
	{kind: "Deployment", workload: true, newObj: func() client.Object { return &appsv1.Deployment{} },
		newList: func() client.ObjectList { return &appsv1.DeploymentList{} },
		spec:    func(o client.Object) *corev1.PodSpec { return &o.(*appsv1.Deployment).Spec.Template.Spec }},
	{kind: "DaemonSet", workload: true, newObj: func() client.Object { return &appsv1.DaemonSet{} },
		newList: func() client.ObjectList { return &appsv1.DaemonSetList{} },
		spec:    func(o client.Object) *corev1.PodSpec { return &o.(*appsv1.DaemonSet).Spec.Template.Spec }},
	{kind: "StatefulSet", workload: true, newObj: func() client.Object { return &appsv1.StatefulSet{} },
		newList: func() client.ObjectList { return &appsv1.StatefulSetList{} },
		spec:    func(o client.Object) *corev1.PodSpec { return &o.(*appsv1.StatefulSet).Spec.Template.Spec }},
	{kind: "CronJob", workload: true, newObj: func() client.Object { return &batchv1.CronJob{} },
		newList: func() client.ObjectList { return &batchv1.CronJobList{} },
		spec: func(o client.Object) *corev1.PodSpec {
			return &o.(*batchv1.CronJob).Spec.JobTemplate.Spec.Template.Spec
		}},
	{kind: "Job", workload: true, newObj: func() client.Object { return &batchv1.Job{} },
		newList: func() client.ObjectList { return &batchv1.JobList{} },
		spec:    func(o client.Object) *corev1.PodSpec { return &o.(*batchv1.Job).Spec.Template.Spec }},
	{kind: "ReplicaSet", workload: true, newObj: func() client.Object { return &appsv1.ReplicaSet{} },
		newList: func() client.ObjectList { return &appsv1.ReplicaSetList{} },
		spec:    func(o client.Object) *corev1.PodSpec { return &o.(*appsv1.ReplicaSet).Spec.Template.Spec }},
	{kind: "ControllerRevision", newObj: func() client.Object { return &appsv1.ControllerRevision{} },
		newList: func() client.ObjectList { return &appsv1.ControllerRevisionList{} },
		spec:    func(o client.Object) *corev1.PodSpec { return revisionSpec(o.(*appsv1.ControllerRevision)) }},
	{kind: "Pod", workload: true, newObj: func() client.Object { return &corev1.Pod{} },
		newList: func() client.ObjectList { return &corev1.PodList{} },
		spec:    func(o client.Object) *corev1.PodSpec { return &o.(*corev1.Pod).Spec }},
}

// revisionData is the part of a DaemonSet's or StatefulSet's ControllerRevision that holds its pod template
// (the data is a patch of the owner's spec).
type revisionData struct {
	Spec struct {
		Template struct {
			Spec corev1.PodSpec `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

// revisionSpec returns the pod spec a ControllerRevision records, or nil if it records none.
func revisionSpec(rev *appsv1.ControllerRevision) *corev1.PodSpec {
	if len(rev.Data.Raw) == 0 {
		return nil
	}
	var data revisionData
	if err := json.Unmarshal(rev.Data.Raw, &data); err != nil {
		return nil
	}
	return &data.Spec.Template.Spec
}

// targets returns the backup references spec names: copies, and the copies of its external images.
func targets(policy *workload.Policy, spec *corev1.PodSpec) []string {
	if spec == nil {
		return nil
	}
	var out []string
	for _, img := range policy.Images(spec) {
		if img.Err == nil {
			out = append(out, img.Mapping.Target.String())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// imageNames returns the distinct images of spec's containers and initContainers, sorted: what targets maps.
func imageNames(spec *corev1.PodSpec) []string {
	if spec == nil {
		return nil
	}
	var out []string
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		out = append(out, c.Image)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// listed reports whether obj is a user's own object (listed in Usage.Workloads and counted in Usage.Count), as
// opposed to one a controller made from another object's template.
func listed(u user, obj client.Object) bool {
	return u.workload && metav1.GetControllerOf(obj) == nil
}

// usage is what needs one copy.
type usage struct {
	count, retained int32
	workloads       []v1alpha1.WorkloadReference
	// objects are the listed workloads, for Events.
	objects []client.Object
}

func (u *usage) needed() bool { return u.count+u.retained > 0 }

// add counts obj of kind k.
func (u *usage) add(k user, obj client.Object) {
	if !listed(k, obj) {
		u.retained++
		return
	}
	u.count++
	u.objects = append(u.objects, obj)
	u.workloads = append(u.workloads, v1alpha1.WorkloadReference{Kind: k.kind, Namespace: obj.GetNamespace(), Name: obj.GetName()})
}

// status returns u as ImageBackup status.
func (u *usage) status() v1alpha1.Usage {
	slices.SortFunc(u.workloads, func(a, b v1alpha1.WorkloadReference) int {
		return strings.Compare(a.Kind+"/"+a.Namespace+"/"+a.Name, b.Kind+"/"+b.Namespace+"/"+b.Name)
	})
	listed := u.workloads
	if len(listed) > maxListed {
		listed = listed[:maxListed]
	}
	return v1alpha1.Usage{Count: u.count, Retained: u.retained, Workloads: slices.Clone(listed)}
}

// cachedUsage returns what needs target, from the cache's usage index.
func cachedUsage(ctx context.Context, c client.Reader, target string) (*usage, error) {
	u := &usage{}
	for _, k := range users {
		list := k.newList()
		if err := c.List(ctx, list, client.MatchingFields{usageIndex: target}); err != nil {
			return nil, fmt.Errorf("listing %ss that use %s: %w", k.kind, target, err)
		}
		if err := meta.EachListItem(list, func(o runtime.Object) error {
			u.add(k, o.(client.Object))
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// liveUsers lists, past the cache, every object of the API server whose pod template names one of wanted, and
// returns the first it finds for each (kind/namespace/name). It reads every object of every user kind, a page
// at a time: it is the last word before a copy is deleted, so it must not trust a cache that may lag.
func liveUsers(ctx context.Context, api client.Reader, policy *workload.Policy, wanted map[string]bool) (map[string]string, error) {
	found := map[string]string{}
	for _, k := range users {
		cont := ""
		for {
			list := k.newList()
			if err := api.List(ctx, list, client.Limit(500), client.Continue(cont)); err != nil {
				return nil, fmt.Errorf("listing %ss from the API server: %w", k.kind, err)
			}
			if err := meta.EachListItem(list, func(o runtime.Object) error {
				obj := o.(client.Object)
				for _, t := range targets(policy, k.spec(obj)) {
					if wanted[t] && found[t] == "" {
						found[t] = k.kind + " " + obj.GetNamespace() + "/" + obj.GetName()
					}
				}
				return nil
			}); err != nil {
				return nil, err
			}
			lm, err := meta.ListAccessor(list)
			if err != nil {
				return nil, err
			}
			if cont = lm.GetContinue(); cont == "" {
				break
			}
		}
	}
	return found, nil
}

// CacheByObject is the cache configuration of the kinds only the inventory reads: each is trimmed by
// TrimForUsage.
func CacheByObject() map[client.Object]cache.ByObject {
	usage := cache.ByObject{Transform: TrimForUsage}
	return map[client.Object]cache.ByObject{&corev1.Pod{}: usage, &appsv1.ReplicaSet{}: usage, &appsv1.ControllerRevision{}: usage}
}

// TrimForUsage is the cache transform of the kinds the inventory alone reads (ReplicaSets, ControllerRevisions,
// Pods): it keeps their metadata (without managedFields and annotations) and the images of their pod specs,
// which is all the usage index reads, so that caching every Pod of a cluster costs a few hundred bytes each.
// Other objects are returned as they are.
func TrimForUsage(in any) (any, error) {
	switch o := in.(type) {
	case *corev1.Pod:
		trimMeta(&o.ObjectMeta)
		o.Spec = corev1.PodSpec{InitContainers: imagesOnly(o.Spec.InitContainers), Containers: imagesOnly(o.Spec.Containers)}
		o.Status = corev1.PodStatus{}
	case *appsv1.ReplicaSet:
		trimMeta(&o.ObjectMeta)
		spec := o.Spec.Template.Spec
		o.Spec = appsv1.ReplicaSetSpec{Replicas: o.Spec.Replicas}
		o.Spec.Template.Spec = corev1.PodSpec{InitContainers: imagesOnly(spec.InitContainers), Containers: imagesOnly(spec.Containers)}
		o.Status = appsv1.ReplicaSetStatus{}
	case *appsv1.ControllerRevision:
		trimMeta(&o.ObjectMeta)
		if spec := revisionSpec(o); spec != nil {
			var data revisionData
			data.Spec.Template.Spec = corev1.PodSpec{InitContainers: imagesOnly(spec.InitContainers), Containers: imagesOnly(spec.Containers)}
			raw, err := json.Marshal(data)
			if err != nil {
				return nil, err
			}
			o.Data = runtime.RawExtension{Raw: raw}
		} else {
			o.Data = runtime.RawExtension{}
		}
	}
	return in, nil
}

func trimMeta(m *metav1.ObjectMeta) {
	m.ManagedFields = nil
	m.Annotations = nil
	m.Labels = nil
}

func imagesOnly(containers []corev1.Container) []corev1.Container {
	if len(containers) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(containers))
	for i, c := range containers {
		out[i] = corev1.Container{Name: c.Name, Image: c.Image}
	}
	return out
}
