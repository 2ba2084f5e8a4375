package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// write creates the file rel under root with data.
func write(t *testing.T, root, rel, data string) {
	t.Helper()
	path := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, root, rel string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func present(root, rel string) bool {
	_, err := os.Stat(filepath.Join(root, filepath.FromSlash(rel)))
	return err == nil
}

const role = `---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: image-clone-controller
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get]
`

func TestSyncCopiesWhatExistsAndRemovesWhatIsGone(t *testing.T) {
	root := t.TempDir()
	write(t, root, "config/crd/bases/a.yaml", "---\nkind: CustomResourceDefinition\n")
	write(t, root, "config/rbac/role.yaml", role)
	write(t, root, chart+"/crds/stale.yaml", "kind: CustomResourceDefinition\n")
	write(t, root, chart+"/files/prometheusrule-spec.yaml", "groups: []\n")
	write(t, root, chart+"/files/grafana-dashboard.json", "{}")

	if err := syncChart(root, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := read(t, root, chart+"/crds/a.yaml"); !strings.HasSuffix(got, "\nkind: CustomResourceDefinition\n") || strings.Contains(got, "---") {
		t.Errorf("crds/a.yaml = %q, want the CRD after a header, without the document separator", got)
	}
	if got := read(t, root, chart+"/files/clusterrole-rules.yaml"); !strings.HasSuffix(got, "\n- apiGroups: [\"\"]\n  resources: [pods]\n  verbs: [get]\n") {
		t.Errorf("clusterrole-rules.yaml = %q, want the ClusterRole's rules as written", got)
	}
	for _, gone := range []string{"/crds/stale.yaml", "/files/prometheusrule-spec.yaml", "/files/grafana-dashboard.json"} {
		if present(root, chart+gone) {
			t.Errorf("%s is still there, though its source is not", gone)
		}
	}

	write(t, root, "config/components/monitoring/prometheusrule.yaml",
		"# The alerts.\napiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: x\nspec:\n  groups:\n  - name: g\n    rules:\n    # What A means.\n    - alert: A\n      annotations:\n        summary: '{{ $value }} lost'\n# Trailing.\n")
	write(t, root, "config/grafana/image-clone-controller.json", `{"title": "x"}`+"\n")
	if err := syncChart(root, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := read(t, root, chart+"/files/prometheusrule-spec.yaml"); !strings.HasSuffix(got, "\ngroups:\n- name: g\n  rules:\n  # What A means.\n  - alert: A\n    annotations:\n      summary: '{{ $value }} lost'\n") {
		t.Errorf("prometheusrule-spec.yaml = %q, want the spec alone, dedented, with its comments and Prometheus' templates", got)
	}
	if got := read(t, root, chart+"/files/grafana-dashboard.json"); got != `{"title": "x"}`+"\n" {
		t.Errorf("grafana-dashboard.json = %q, want the dashboard as it is", got)
	}
}

func TestSyncRefusesWhatItCannotCopy(t *testing.T) {
	const crd = "config/crd/bases/a.yaml"
	for name, files := range map[string]map[string]string{
		// An empty value deletes the file the case starts with.
		"no CRD":                        {crd: ""},
		"no ClusterRole":                {"config/rbac/role.yaml": "kind: Role\nrules: []\n"},
		"two PrometheusRules":           {"config/components/monitoring/prometheusrule.yaml": "kind: PrometheusRule\nspec: {}\n---\nkind: PrometheusRule\nspec: {}\n"},
		"a PrometheusRule without spec": {"config/components/monitoring/prometheusrule.yaml": "kind: PrometheusRule\n"},
		"a dashboard that is not JSON":  {"config/grafana/image-clone-controller.json": "{"},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			write(t, root, crd, "kind: CustomResourceDefinition\n")
			write(t, root, "config/rbac/role.yaml", role)
			for rel, data := range files {
				if data == "" {
					if err := os.Remove(filepath.Join(root, filepath.FromSlash(rel))); err != nil {
						t.Fatal(err)
					}
					continue
				}
				write(t, root, rel, data)
			}
			if err := syncChart(root, io.Discard); err == nil {
				t.Error("synced without an error")
			}
		})
	}
}

// A field written in flow style on its key's line has no block of its own: its value is re-encoded.
func TestSyncReencodesAFieldWithoutABlock(t *testing.T) {
	root := t.TempDir()
	write(t, root, "config/crd/bases/a.yaml", "kind: CustomResourceDefinition\n")
	write(t, root, "config/rbac/role.yaml", "kind: ClusterRole\nrules: [{apiGroups: [\"\"], resources: [pods], verbs: [get]}]\n")
	if err := syncChart(root, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := read(t, root, chart+"/files/clusterrole-rules.yaml"); !strings.HasSuffix(got, "\n- apiGroups:\n  - \"\"\n  resources:\n  - pods\n  verbs:\n  - get\n") {
		t.Errorf("clusterrole-rules.yaml = %q, want the rules re-encoded", got)
	}
}
