package monitoring

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// rendered is the part of a rendered object the checks read.
type rendered struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		// ServiceMonitor
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []struct {
			Port string `json:"port"`
			Path string `json:"path"`
		} `json:"endpoints"`
		// Service
		Ports []struct {
			Name       string `json:"name"`
			TargetPort string `json:"targetPort"`
		} `json:"ports"`
		// Deployment
		Template struct {
			Spec struct {
				Containers []struct {
					Ports []struct {
						Name string `json:"name"`
					} `json:"ports"`
				} `json:"containers"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

// TestComponentScrapesTheMetricsService renders config/default with the monitoring component, as its
// kustomization tells users to, and checks that the ServiceMonitor selects the metrics Service alone, on a port
// the Service has and that leads to the controller's metrics port.
func TestComponentScrapesTheMetricsService(t *testing.T) {
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Kustomize takes no absolute paths.
	rel := func(path ...string) string {
		t.Helper()
		r, err := filepath.Rel(dir, filepath.Join(append([]string{abs}, path...)...))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	kustomization := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- " +
		rel("config", "default") + "\ncomponents:\n- " + rel("config", "components", "monitoring") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone // the kustomization lies outside the repository
	resources, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("rendering config/default with config/components/monitoring: %v", err)
	}

	var monitors, rules, services, deployments []rendered
	for _, res := range resources.Resources() {
		data, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		var obj rendered
		if err := yaml.Unmarshal(data, &obj); err != nil {
			t.Fatalf("decoding %s: %v", res.CurId(), err)
		}
		switch obj.Kind {
		case "ServiceMonitor":
			monitors = append(monitors, obj)
		case "PrometheusRule":
			rules = append(rules, obj)
		case "Service":
			services = append(services, obj)
		case "Deployment":
			deployments = append(deployments, obj)
		}
	}
	if len(monitors) != 1 || len(rules) != 1 || len(deployments) != 1 {
		t.Fatalf("rendered %d ServiceMonitors, %d PrometheusRules and %d Deployments, want one each", len(monitors), len(rules), len(deployments))
	}
	sm := monitors[0]
	if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Metadata.Name != "image-clone-controller" || sm.Metadata.Namespace != "image-clone-system" {
		t.Errorf("ServiceMonitor %s %s/%s, want monitoring.coreos.com/v1 image-clone-system/image-clone-controller", sm.APIVersion, sm.Metadata.Namespace, sm.Metadata.Name)
	}
	if pr := rules[0]; pr.Metadata.Name != "image-clone-controller" || pr.Metadata.Namespace != "image-clone-system" {
		t.Errorf("PrometheusRule %s/%s, want image-clone-system/image-clone-controller", pr.Metadata.Namespace, pr.Metadata.Name)
	}
	if len(sm.Spec.Selector.MatchLabels) == 0 || len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("the ServiceMonitor needs a label selector and one endpoint: %+v", sm.Spec)
	}

	var selected []rendered
	for _, svc := range services {
		if svc.Metadata.Namespace == sm.Metadata.Namespace && matches(svc.Metadata.Labels, sm.Spec.Selector.MatchLabels) {
			selected = append(selected, svc)
		}
	}
	if len(selected) != 1 || selected[0].Metadata.Name != "image-clone-controller-metrics" {
		var names []string
		for _, svc := range selected {
			names = append(names, svc.Metadata.Name)
		}
		t.Fatalf("the ServiceMonitor selects Services %v, want only image-clone-controller-metrics", names)
	}
	targetPort := ""
	for _, p := range selected[0].Spec.Ports {
		if p.Name == sm.Spec.Endpoints[0].Port {
			targetPort = p.TargetPort
		}
	}
	if targetPort == "" {
		t.Fatalf("the metrics Service has no port %q with a named targetPort", sm.Spec.Endpoints[0].Port)
	}
	found := false
	for _, c := range deployments[0].Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			found = found || p.Name == targetPort
		}
	}
	if !found {
		t.Errorf("the Deployment's containers have no port %q, which the metrics Service targets", targetPort)
	}
}

func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
