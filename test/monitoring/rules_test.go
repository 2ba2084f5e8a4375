// Package monitoring tests what config/components/monitoring and config/grafana ship: the alerts of the
// PrometheusRule with promtool's rule unit tests, and the Grafana dashboard's structure and queries, parsed by
// a real Prometheus and checked against the metrics the controller registers. `make test-monitoring` runs it
// (and `make test`, which installs promtool and prometheus into bin/ first).
package monitoring

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/prometheustest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
)

// root is the repository root; go test runs in test/monitoring.
var root = filepath.Join("..", "..")

// The PrometheusRule that the Helm chart copies: its path, name and namespace are part of the contract.
var (
	prometheusRulePath = filepath.Join(root, "config", "components", "monitoring", "prometheusrule.yaml")
	ruleTestsPath      = filepath.Join("testdata", "alerts_test.yaml")
)

func readPrometheusRule(t *testing.T) *prometheustest.PrometheusRule {
	t.Helper()
	pr, err := prometheustest.ReadPrometheusRule(prometheusRulePath)
	if err != nil {
		t.Fatal(err)
	}
	return pr
}

// alerts returns every alerting rule of the PrometheusRule.
func alerts(pr *prometheustest.PrometheusRule) []prometheustest.Rule {
	var out []prometheustest.Rule
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

func TestPrometheusRuleShape(t *testing.T) {
	pr := readPrometheusRule(t)
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" ||
		pr.Metadata.Name != "image-clone-controller" || pr.Metadata.Namespace != "image-clone-system" {
		t.Errorf("%s is %s %s %s/%s, want monitoring.coreos.com/v1 PrometheusRule image-clone-system/image-clone-controller (the Helm chart copies it by that name)",
			prometheusRulePath, pr.APIVersion, pr.Kind, pr.Metadata.Namespace, pr.Metadata.Name)
	}
	all := alerts(pr)
	if len(all) == 0 {
		t.Fatalf("%s has no alerts", prometheusRulePath)
	}
	for _, a := range all {
		switch a.Labels["severity"] {
		case "warning", "critical":
		default:
			t.Errorf("alert %s: severity %q, want warning or critical", a.Alert, a.Labels["severity"])
		}
		for _, key := range []string{"summary", "description", "runbook"} {
			if strings.TrimSpace(a.Annotations[key]) == "" {
				t.Errorf("alert %s has no %s annotation", a.Alert, key)
			}
		}
		for key, text := range a.Annotations {
			// The rule tests compare only the summary (see promtoolRules): a template anywhere else would go
			// untested.
			if key != "summary" && strings.Contains(text, "{{") {
				t.Errorf("alert %s: annotation %s has a template; templates belong in the summary, which the rule tests check", a.Alert, key)
			}
		}
	}
}

// promtoolRules is the rule file of the PrometheusRule's groups for promtool, whose rule tests compare every
// annotation of a firing alert: it keeps only the summaries, so that the tests need not repeat the
// descriptions word for word. TestPrometheusRuleShape checks that the others hold no template.
func promtoolRules(t *testing.T, pr *prometheustest.PrometheusRule) []byte {
	t.Helper()
	groups := slices.Clone(pr.Spec.Groups)
	for i := range groups {
		groups[i].Rules = slices.Clone(groups[i].Rules)
		for j, r := range groups[i].Rules {
			if r.Alert != "" {
				groups[i].Rules[j].Annotations = map[string]string{"summary": r.Annotations["summary"]}
			}
		}
	}
	data, err := prometheustest.RuleFile(groups)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func promtool(t *testing.T) string {
	t.Helper()
	binary, err := testbin.Client("promtool", "PROMTOOL_BINARY")
	if err != nil {
		t.Fatal(err)
	}
	return binary
}

// runPromtool runs promtool in dir and fails the test with its output if it fails.
func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), promtool(t), args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out.String())
}

func TestAlertRules(t *testing.T) {
	pr := readPrometheusRule(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), promtoolRules(t, pr), 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(ruleTestsPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, dir, "check", "rules", "rules.yaml")
	runPromtool(t, dir, "test", "rules", "alerts_test.yaml")
}

// ruleTests is the part of a promtool test file that says which alerts are expected when.
type ruleTests struct {
	Tests []struct {
		Name           string `json:"name"`
		AlertRuleTests []struct {
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

func TestEveryAlertIsTestedFiringAndQuiet(t *testing.T) {
	data, err := os.ReadFile(ruleTestsPath)
	if err != nil {
		t.Fatal(err)
	}
	var tests ruleTests
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatalf("decoding %s: %v", ruleTestsPath, err)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTests {
			if len(at.ExpAlerts) > 0 {
				firing[at.Alertname] = true
			} else {
				quiet[at.Alertname] = true
			}
		}
	}
	known := map[string]bool{}
	for _, a := range alerts(readPrometheusRule(t)) {
		known[a.Alert] = true
		if !firing[a.Alert] {
			t.Errorf("alert %s has no test in %s where it fires", a.Alert, ruleTestsPath)
		}
		if !quiet[a.Alert] {
			t.Errorf("alert %s has no test in %s where it does not fire", a.Alert, ruleTestsPath)
		}
	}
	for name := range firing {
		if !known[name] {
			t.Errorf("%s tests alert %s, which %s does not define", ruleTestsPath, name, prometheusRulePath)
		}
	}
	for name := range quiet {
		if !known[name] {
			t.Errorf("%s tests alert %s, which %s does not define", ruleTestsPath, name, prometheusRulePath)
		}
	}
}
