// Command chart-sync copies the files of config/ that charts/image-clone-controller renders into the chart,
// since a chart cannot read files outside its directory: the CRDs, the generated ClusterRole's rules, the
// PrometheusRule's spec and the Grafana dashboard. A source that does not exist (yet) is skipped and its copy
// removed, and the templates that use it render nothing (or fail, when their value turns them on). `make
// generate` runs it and `make verify-generate` fails when the chart's copies are stale.
//
// Usage: go run ./hack/chart-sync [--root .]
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const chart = "charts/image-clone-controller"

func main() {
	root := flag.String("root", ".", "repository root")
	flag.Parse()
	if err := syncChart(*root, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chart-sync:", err)
		os.Exit(1)
	}
}

// syncChart writes every copy and reports one line per file to out.
func syncChart(root string, out io.Writer) error {
	s := syncer{root: root, out: out}
	if err := s.crds("config/crd/bases", chart+"/crds"); err != nil {
		return err
	}
	if err := s.spec("config/rbac/role.yaml", "ClusterRole", "rules", chart+"/files/clusterrole-rules.yaml", true); err != nil {
		return err
	}
	if err := s.spec("config/components/monitoring/prometheusrule.yaml", "PrometheusRule", "spec", chart+"/files/prometheusrule-spec.yaml", false); err != nil {
		return err
	}
	return s.dashboard("config/grafana/image-clone-controller.json", chart+"/files/grafana-dashboard.json")
}

type syncer struct {
	root string
	out  io.Writer
}

func (s syncer) path(rel string) string { return filepath.Join(s.root, filepath.FromSlash(rel)) }

// header marks a copy as generated; YAML only, JSON has no comments.
func header(src string) string {
	return "# Copied from " + src + " by make chart-sync (go run ./hack/chart-sync); do not edit.\n"
}

// crds copies every CRD of dir into the chart's crds/ (which Helm installs as they are, untemplated) and
// removes copies whose source is gone.
func (s syncer) crds(dir, dest string) error {
	sources, err := filepath.Glob(filepath.Join(s.path(dir), "*.yaml"))
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	if len(sources) == 0 {
		return fmt.Errorf("no CRDs in %s: run make generate", dir)
	}
	var names []string
	for _, src := range sources {
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("reading CRD: %w", err)
		}
		name := filepath.Base(src)
		names = append(names, name)
		// controller-gen starts each file with a document separator, which would leave the header alone in an
		// empty document.
		data = bytes.TrimPrefix(data, []byte("---\n"))
		if err := s.write(dest+"/"+name, append([]byte(header(dir+"/"+name)), data...)); err != nil {
			return err
		}
	}
	stale, err := filepath.Glob(filepath.Join(s.path(dest), "*.yaml"))
	if err != nil {
		return fmt.Errorf("listing %s: %w", dest, err)
	}
	for _, path := range stale {
		if !slices.Contains(names, filepath.Base(path)) {
			if err := s.remove(dest+"/"+filepath.Base(path), "its CRD is gone from "+dir); err != nil {
				return err
			}
		}
	}
	return nil
}

// spec copies field of the one object of kind in the YAML file src to dest. A missing src is an error when
// required; otherwise dest is removed.
func (s syncer) spec(src, kind, field, dest string, required bool) error {
	data, err := os.ReadFile(s.path(src))
	if errors.Is(err, fs.ErrNotExist) && !required {
		return s.remove(dest, src+" does not exist")
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	doc, value, err := fieldOf(data, kind, field)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	// The field's own text keeps its comments (what each alert means, say); it is used when it parses to the
	// same value, and the value re-encoded otherwise.
	out := fieldText(doc, field)
	if !sameYAML(out, value) {
		if out, err = yaml.Marshal(value); err != nil {
			return fmt.Errorf("%s: encoding %s: %w", src, field, err)
		}
	}
	return s.write(dest, append([]byte(header(src)+"# The "+field+" of its "+kind+".\n"), out...))
}

// fieldOf returns the document of the one object of kind in the multi-document YAML data, and its field.
func fieldOf(data []byte, kind, field string) ([]byte, any, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var doc []byte
	var found any
	n := 0
	for {
		next, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading YAML: %w", err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(next, &obj); err != nil {
			return nil, nil, fmt.Errorf("parsing YAML: %w", err)
		}
		if obj["kind"] != kind {
			continue
		}
		n++
		var ok bool
		if found, ok = obj[field]; !ok {
			return nil, nil, fmt.Errorf("its %s has no %s", kind, field)
		}
		doc = next
	}
	if n != 1 {
		return nil, nil, fmt.Errorf("holds %d objects of kind %s, want 1", n, kind)
	}
	return doc, found, nil
}

// fieldText returns the lines of the top-level field of the YAML document doc, without the key and dedented:
// the lines after "field:" up to the next top-level key. Nil if there is no such block.
func fieldText(doc []byte, field string) []byte {
	lines := strings.Split(string(doc), "\n")
	start := slices.Index(lines, field+":")
	if start < 0 {
		return nil
	}
	var block []string
	for _, line := range lines[start+1:] {
		if line != "" && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "-") && !strings.HasPrefix(line, "#") {
			break
		}
		block = append(block, line)
	}
	// Trailing blank and comment lines at the margin belong to what follows.
	for len(block) > 0 && (strings.TrimSpace(block[len(block)-1]) == "" || strings.HasPrefix(block[len(block)-1], "#")) {
		block = block[:len(block)-1]
	}
	indent := -1
	for _, line := range block {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if n := len(line) - len(strings.TrimLeft(line, " ")); indent < 0 || n < indent {
			indent = n
		}
	}
	var out strings.Builder
	for _, line := range block {
		if len(line) >= indent {
			line = line[indent:]
		}
		out.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	return []byte(out.String())
}

// sameYAML reports whether text parses to value.
func sameYAML(text []byte, value any) bool {
	if len(text) == 0 {
		return false
	}
	var parsed any
	if err := yaml.Unmarshal(text, &parsed); err != nil {
		return false
	}
	a, errA := json.Marshal(parsed)
	b, errB := json.Marshal(value)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// dashboard copies the dashboard JSON as it is, once it parses, or removes the copy when src does not exist.
func (s syncer) dashboard(src, dest string) error {
	data, err := os.ReadFile(s.path(src))
	if errors.Is(err, fs.ErrNotExist) {
		return s.remove(dest, src+" does not exist")
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	if !json.Valid(data) {
		return fmt.Errorf("%s is not valid JSON", src)
	}
	return s.write(dest, data)
}

// write writes data to the chart file rel unless it holds data already.
func (s syncer) write(rel string, data []byte) error {
	path := s.path(rel)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(rel), err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil { //nolint:gosec // a chart file, readable by all
		return fmt.Errorf("writing %s: %w", rel, err)
	}
	fmt.Fprintln(s.out, "chart-sync: wrote", rel)
	return nil
}

// remove deletes the chart file rel if it exists, saying why.
func (s syncer) remove(rel, why string) error {
	err := os.Remove(s.path(rel))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("removing %s: %w", rel, err)
	}
	fmt.Fprintf(s.out, "chart-sync: removed %s (%s)\n", rel, strings.TrimSpace(why))
	return nil
}
