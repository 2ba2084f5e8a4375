package workload

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
)

func TestIgnoredNamespaces(t *testing.T) {
	for _, tc := range []struct {
		name      string
		flagValue []string
		own       string
		want      []string
	}{
		{"empty flag still ignores kube-system and the controller's namespace", nil, "image-clone-system",
			[]string{"kube-system", "image-clone-system"}},
		{"flag adds to the list", []string{"registry", "kube-public"}, "image-clone-system",
			[]string{"kube-system", "registry", "kube-public", "image-clone-system"}},
		{"no POD_NAMESPACE outside a cluster", []string{"registry"}, "", []string{"kube-system", "registry"}},
		{"each namespace once", []string{"kube-system", "ops", "ops", "", "image-clone-system"}, "image-clone-system",
			[]string{"kube-system", "ops", "image-clone-system"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IgnoredNamespaces(tc.flagValue, tc.own); !slices.Equal(got, tc.want) {
				t.Errorf("IgnoredNamespaces(%q, %q) = %q, want %q", tc.flagValue, tc.own, got, tc.want)
			}
		})
	}
}

func TestNewBackupServer(t *testing.T) {
	for _, tc := range []struct {
		backup    string
		service   string // namespace/name, "" for none
		clusterIP string
	}{
		{backup: "registry.registry:5001", service: "registry/registry"},
		{backup: "registry.registry.svc:5001", service: "registry/registry"},
		{backup: "registry.registry.svc.cluster.local:5001/mirror", service: "registry/registry"},
		{backup: "zot.ops.svc.k8s.example.org", service: "ops/zot"},
		{backup: "10.96.0.11:5001", clusterIP: "10.96.0.11"},
		{backup: "10.96.0.11/backup", clusterIP: "10.96.0.11"},
		{backup: "[fd00:0:0::11]:5001", clusterIP: "fd00::11"},
		{backup: "[fd00::11]", clusterIP: "fd00::11"},
		// Not a Service: neither DNS form, an address the API server never allocates, or an impossible name.
		{backup: "registry.example.com"},
		{backup: "registry.example.com:5000"},
		{backup: "localhost:5000"},
		{backup: "127.0.0.1:5000"},
		{backup: "[::1]:5000"},
		{backup: "169.254.1.1:5000"},
		{backup: "0-registry.ops.svc:5000"}, // Service names start with a letter
	} {
		t.Run(tc.backup, func(t *testing.T) {
			b, err := imageref.ParseBackup(tc.backup)
			if err != nil {
				t.Fatal(err)
			}
			s := newBackupServer(b)
			service := ""
			if s.service.Name != "" {
				service = s.service.String()
			}
			if service != tc.service || s.clusterIP != tc.clusterIP {
				t.Errorf("got service %q, cluster IP %q; want %q, %q", service, s.clusterIP, tc.service, tc.clusterIP)
			}
		})
	}
}

// TestServiceClusterIPs covers what the envtest specs cannot: envtest's API server is single-stack, so no
// Service there has an IPv6 second cluster IP. Both sides of the lookup are canonical (see TestNewBackupServer
// for the host), so a backup registry addressed as [fd00:0::11] finds the Service that lists fd00:0:0::11.
func TestServiceClusterIPs(t *testing.T) {
	for _, tc := range []struct {
		name string
		obj  client.Object
		want []string
	}{
		{"dual-stack, second IP non-canonical", &corev1.Service{Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.11", ClusterIPs: []string{"10.96.0.11", "fd00:0:0::11"},
		}}, []string{"10.96.0.11", "fd00::11"}},
		{"IPv6 first", &corev1.Service{Spec: corev1.ServiceSpec{
			ClusterIP: "FD00::0011", ClusterIPs: []string{"FD00::0011", "10.96.0.11"},
		}}, []string{"fd00::11", "10.96.0.11"}},
		{"clusterIPs not filled in yet", &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.11"}},
			[]string{"10.96.0.11"}},
		{"headless", &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "None", ClusterIPs: []string{"None"}}}, nil},
		{"ExternalName", &corev1.Service{Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "registry.example.com",
		}}, nil},
		{"not a Service", &corev1.ConfigMap{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := serviceClusterIPs(tc.obj); !slices.Equal(got, tc.want) {
				t.Errorf("serviceClusterIPs = %q, want %q", got, tc.want)
			}
		})
	}
}
