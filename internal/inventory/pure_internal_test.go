package inventory

import (
	"encoding/json"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

func TestTrimForUsageKeepsWhatTheIndexReads(t *testing.T) {
	b, err := imageref.ParseBackup("backup.example/b")
	if err != nil {
		t.Fatal(err)
	}
	policy := workload.NewPolicy(b, nil, nil)
	spec := corev1.PodSpec{
		InitContainers:   []corev1.Container{{Name: "init", Image: "busybox:1.36", Command: []string{"sh"}}},
		Containers:       []corev1.Container{{Name: "app", Image: "backup.example/b/index_docker_io/library/nginx:1.23", Env: []corev1.EnvVar{{Name: "A", Value: "b"}}}},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "pull"}},
	}
	owner := []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "d", UID: "u", Controller: ptr.To(true)}}
	meta := metav1.ObjectMeta{Namespace: "ns", Name: "x", OwnerReferences: owner, Labels: map[string]string{"a": "b"},
		Annotations: map[string]string{"big": "value"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}}
	var rev revisionData
	rev.Spec.Template.Spec = spec
	raw, err := json.Marshal(rev)
	if err != nil {
		t.Fatal(err)
	}
	objects := []client.Object{
		&corev1.Pod{ObjectMeta: meta, Spec: spec, Status: corev1.PodStatus{Phase: corev1.PodRunning}},
		&appsv1.ReplicaSet{ObjectMeta: meta, Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](0), Template: corev1.PodTemplateSpec{Spec: spec}}},
		&appsv1.ControllerRevision{ObjectMeta: meta, Data: runtime.RawExtension{Raw: raw}, Revision: 3},
	}
	for _, obj := range objects {
		u := userOf(obj)
		if u == nil {
			t.Fatalf("%T is not a user kind", obj)
		}
		want := targets(policy, u.spec(obj))
		if len(want) != 2 {
			t.Fatalf("%s: want the copy and the copy of busybox, got %v", u.kind, want)
		}
		trimmed, err := TrimForUsage(obj)
		if err != nil {
			t.Fatal(err)
		}
		got := trimmed.(client.Object)
		if g := targets(policy, u.spec(got)); len(g) != len(want) || g[0] != want[0] || g[1] != want[1] {
			t.Errorf("%s: trimmed object names %v, want %v", u.kind, g, want)
		}
		if got.GetManagedFields() != nil || got.GetAnnotations() != nil || got.GetLabels() != nil {
			t.Errorf("%s: metadata not trimmed: %+v", u.kind, got)
		}
		if c := metav1.GetControllerOf(got); c == nil || c.UID != "u" {
			t.Errorf("%s: lost its controller reference", u.kind)
		}
	}
	if p := objects[0].(*corev1.Pod); p.Status.Phase != "" || p.Spec.ImagePullSecrets != nil || p.Spec.Containers[0].Env != nil {
		t.Errorf("pod kept more than its images: %+v", p)
	}
}

func TestDisplaySize(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 1023: "1023B", 1024: "1.0KiB", 18 * 1024: "18.0KiB",
		72_251_392: "68.9MiB", 3 << 30: "3.0GiB"} {
		if got := displaySize(n); got != want {
			t.Errorf("displaySize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestShortDigest(t *testing.T) {
	for in, want := range map[string]string{
		"sha256:899190c37de8abcdef": "899190c37de8", "sha256:abc": "sha256:abc", "": "",
	} {
		if got := shortDigest(in); got != want {
			t.Errorf("shortDigest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIntervalSpreadsCopiesWithinATenth(t *testing.T) {
	k := &Keeper{opts: Options{VerifyInterval: time.Hour}}
	seen := map[time.Duration]bool{}
	for _, name := range []string{"nginx-1-23-aaaa", "grafana-main-bbbb", "fluentd-latest-cccc", "x", "y", "z"} {
		d := k.interval(name)
		if d < time.Hour || d >= 66*time.Minute {
			t.Errorf("interval(%q) = %s, want within [1h, 1h6m)", name, d)
		}
		if d != k.interval(name) {
			t.Errorf("interval(%q) is not the same every time", name)
		}
		seen[d] = true
	}
	if len(seen) < 3 {
		t.Errorf("intervals do not spread: %v", seen)
	}
}

func TestUsageOnly(t *testing.T) {
	before := v1alpha1.ImageBackupStatus{Phase: v1alpha1.PhaseReady, Digest: "sha256:aa", UsedBy: v1alpha1.Usage{Count: 1}}
	at := metav1.NewTime(time.Unix(1_700_000_000, 0))
	for _, tc := range []struct {
		name   string
		change func(*v1alpha1.ImageBackupStatus)
		want   bool
	}{
		{"count", func(s *v1alpha1.ImageBackupStatus) { s.UsedBy.Count = 2 }, true},
		{"listed workloads", func(s *v1alpha1.ImageBackupStatus) {
			s.UsedBy.Workloads = []v1alpha1.WorkloadReference{{Kind: "Deployment", Namespace: "a", Name: "b"}}
		}, true},
		{"retained", func(s *v1alpha1.ImageBackupStatus) { s.UsedBy.Retained = 3 }, true},
		{"nothing needs it any more", func(s *v1alpha1.ImageBackupStatus) { s.UsedBy, s.UnusedSince = v1alpha1.Usage{}, &at }, false},
		{"phase", func(s *v1alpha1.ImageBackupStatus) { s.Phase = v1alpha1.PhaseLost }, false},
		{"verified", func(s *v1alpha1.ImageBackupStatus) { s.UsedBy.Count, s.LastVerified = 2, &at }, false},
	} {
		after := before.DeepCopy()
		tc.change(after)
		if got := usageOnly(&before, after); got != tc.want {
			t.Errorf("%s: usageOnly = %v, want %v", tc.name, got, tc.want)
		}
	}
}
