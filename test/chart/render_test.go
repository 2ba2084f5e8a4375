// Package chart proves that charts/image-clone-controller does not drift from config/, the kustomize manifests
// that `make deploy` applies: the chart rendered with values that mean config/default (helm template) and
// config/default rendered by kustomize (its library, sigs.k8s.io/kustomize/api) hold the same objects, equal but for
// the labels only Helm adds. The e2e-tagged tests (make test-chart) then install the chart on the local cluster
// and back up the README's examples with it.
//
// Normalization, applied to both sides before they are compared whole (metadata, spec and every other field):
//   - Helm's standard labels are removed wherever labels select or mark objects: metadata.labels,
//     spec.selector (a Service's) and spec.selector.matchLabels (a Deployment's, a ServiceMonitor's), and
//     spec.template.metadata.labels. They are helm.sh/chart, app.kubernetes.io/managed-by,
//     app.kubernetes.io/instance and app.kubernetes.io/version; app.kubernetes.io/name, which config/default
//     sets too, stays and must match. The chart's selectors add app.kubernetes.io/instance so that two
//     releases never select each other's pods; kustomize's have no such need.
//   - CRDs lose the app.kubernetes.io/name label config/default's labels transformer gives them: Helm installs
//     the files of the chart's crds/ as they are, untemplated, and those are copies of config/crd/bases.
//   - A labels map left empty is removed.
//
// Nothing else is normalized: names, namespaces, arguments (in order), ports, probes, security contexts,
// RBAC rules and webhook settings must be identical.
package chart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
)

const (
	// release and namespace are those of config/default, so that the chart's names equal its names.
	release   = "image-clone-controller"
	namespace = "image-clone-system"
)

var (
	// root is the repository root; the tests run from test/chart.
	root     = filepath.Join("..", "..")
	chartDir = filepath.Join(root, "charts", "image-clone-controller")
)

// configDefaultValues are the values that make the chart render what config/default holds: its namespace
// (rendered by the chart, as config/manager does), its image and its in-cluster registry.
var configDefaultValues = map[string]any{
	"backupRegistry":     "10.96.0.11:5001",
	"insecureRegistries": []any{"10.96.0.11:5001"},
	"image":              map[string]any{"repository": "image-clone-controller", "tag": "dev"},
	"namespace":          map[string]any{"create": true},
}

// object is one decoded Kubernetes object.
type object = map[string]any

// helmBinary is bin/helm (or HELM_BINARY), which make test and make test-chart install.
func helmBinary(t *testing.T) string {
	t.Helper()
	helm, err := testbin.Client("helm", "HELM_BINARY")
	if err != nil {
		t.Fatal(err)
	}
	return helm
}

// helmTemplate renders the chart as release in ns with the values (merged over the chart's values.yaml) and
// CRDs, and returns its objects, or the error with helm's output.
func helmTemplate(t *testing.T, releaseName, ns string, values map[string]any) ([]object, error) {
	t.Helper()
	data, err := yaml.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"template", releaseName, chartDir, "--namespace", ns, "--include-crds", "--values", file}
	cmd := exec.CommandContext(t.Context(), helmBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return decode(t, stdout.Bytes()), nil
}

// mustHelmTemplate is helmTemplate that fails the test on an error.
func mustHelmTemplate(t *testing.T, values map[string]any) []object {
	t.Helper()
	objs, err := helmTemplate(t, release, namespace, values)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// withValues returns configDefaultValues with the top-level entries of more added or replaced.
func withValues(more map[string]any) map[string]any {
	values := map[string]any{}
	for k, v := range configDefaultValues {
		values[k] = v
	}
	for k, v := range more {
		values[k] = v
	}
	return values
}

// kustomize renders the kustomization in dir.
func kustomize(t *testing.T, dir string) []object {
	t.Helper()
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	data, err := resources.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, data)
}

// configDefault writes a kustomization that is config/default's with edit applied to it, as a user edits
// config/default/kustomization.yaml (to add a component, say), with its paths pointing at config/, and returns
// its directory. kustomize takes relative paths only.
func configDefault(t *testing.T, edit func(kustomization map[string]any, rel func(configPath string) string)) string {
	t.Helper()
	dir := t.TempDir()
	base, err := filepath.Abs(filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(base, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k map[string]any
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	// rel turns a path relative to config/ into one relative to dir.
	rel := func(configPath string) string {
		p, err := filepath.Rel(dir, filepath.Join(filepath.Dir(base), configPath))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, field := range []string{"resources", "components"} {
		paths, _ := k[field].([]any)
		for i, p := range paths {
			paths[i] = rel(strings.TrimPrefix(p.(string), "../"))
		}
	}
	if edit != nil {
		edit(k, rel)
	}
	if data, err = yaml.Marshal(k); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// decode splits multi-document YAML into objects, leaving out empty documents.
func decode(t *testing.T, data []byte) []object {
	t.Helper()
	var objs []object
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading YAML: %v", err)
		}
		var obj object
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatalf("parsing YAML: %v\n%s", err, doc)
		}
		if len(obj) > 0 {
			objs = append(objs, obj)
		}
	}
	return objs
}

// helmLabels are the labels Helm charts conventionally add, which config/ does not.
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// normalize applies the normalization of the package documentation to obj.
func normalize(obj object) {
	for _, path := range [][]string{
		{"metadata", "labels"},
		{"spec", "selector"},
		{"spec", "selector", "matchLabels"},
		{"spec", "template", "metadata", "labels"},
	} {
		dropLabels(obj, path, helmLabels)
	}
	if obj["kind"] == "CustomResourceDefinition" {
		dropLabels(obj, []string{"metadata", "labels"}, []string{"app.kubernetes.io/name"})
	}
}

// dropLabels deletes keys from the map at path in obj, and the map itself once it is empty.
func dropLabels(obj object, path []string, keys []string) {
	parent := obj
	for _, p := range path[:len(path)-1] {
		next, ok := parent[p].(map[string]any)
		if !ok {
			return
		}
		parent = next
	}
	last := path[len(path)-1]
	labels, ok := parent[last].(map[string]any)
	if !ok {
		return
	}
	for _, k := range keys {
		delete(labels, k)
	}
	if len(labels) == 0 {
		delete(parent, last)
	}
}

// key names an object by its API group and kind, namespace and name.
func key(obj object) string {
	meta, _ := obj["metadata"].(map[string]any)
	group, _, _ := strings.Cut(fmt.Sprint(obj["apiVersion"]), "/")
	if !strings.Contains(fmt.Sprint(obj["apiVersion"]), "/") {
		group = "core"
	}
	return fmt.Sprintf("%s %s %v/%v", group, obj["kind"], meta["namespace"], meta["name"])
}

// byKey indexes objects by key, failing on duplicates.
func byKey(t *testing.T, objs []object) map[string]object {
	t.Helper()
	m := map[string]object{}
	for _, obj := range objs {
		k := key(obj)
		if _, dup := m[k]; dup {
			t.Fatalf("%s is rendered twice", k)
		}
		m[k] = obj
	}
	return m
}

// compare fails unless chart and config hold the same objects, equal after normalization; it reports every
// difference at once.
func compare(t *testing.T, chartObjs, configObjs []object) {
	t.Helper()
	fromChart, fromConfig := byKey(t, chartObjs), byKey(t, configObjs)
	var onlyChart, onlyConfig, both []string
	for k := range fromChart {
		if _, ok := fromConfig[k]; ok {
			both = append(both, k)
		} else {
			onlyChart = append(onlyChart, k)
		}
	}
	for k := range fromConfig {
		if _, ok := fromChart[k]; !ok {
			onlyConfig = append(onlyConfig, k)
		}
	}
	sort.Strings(onlyChart)
	sort.Strings(onlyConfig)
	sort.Strings(both)
	if len(onlyChart) > 0 {
		t.Errorf("only the chart renders:\n  %s", strings.Join(onlyChart, "\n  "))
	}
	if len(onlyConfig) > 0 {
		t.Errorf("only config/ renders:\n  %s", strings.Join(onlyConfig, "\n  "))
	}
	for _, k := range both {
		c, k8s := fromChart[k], fromConfig[k]
		normalize(c)
		normalize(k8s)
		if diff := cmp.Diff(k8s, c); diff != "" {
			t.Errorf("%s differs (-config/ +chart):\n%s", k, diff)
		}
	}
	if !t.Failed() {
		t.Logf("%d objects, equal after normalization: %s", len(both), strings.Join(both, "; "))
	}
}

// find returns the rendered object of kind and name, failing the test if there is none.
func find(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	for _, obj := range objs {
		if meta, _ := obj["metadata"].(map[string]any); obj["kind"] == kind && meta["name"] == name {
			return obj
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

// args returns the manager container's arguments of the Deployment in objs.
func args(t *testing.T, objs []object, deployment string) []string {
	t.Helper()
	var out []string
	for _, a := range field(find(t, objs, "Deployment", deployment), "spec", "template", "spec", "containers", 0, "args").([]any) {
		out = append(out, a.(string))
	}
	return out
}

// field walks obj along path (map keys and slice indexes) and returns what it finds, or nil.
func field(obj any, path ...any) any {
	for _, p := range path {
		switch step := p.(type) {
		case string:
			m, ok := obj.(map[string]any)
			if !ok {
				return nil
			}
			obj = m[step]
		case int:
			s, ok := obj.([]any)
			if !ok || step >= len(s) {
				return nil
			}
			obj = s[step]
		}
	}
	return obj
}

// exists reports whether the file or directory at path exists.
func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// missing returns the elements of want that got lacks.
func missing(got, want []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			out = append(out, w)
		}
	}
	return out
}
