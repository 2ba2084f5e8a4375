package prometheustest

import (
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// PrometheusRule is a monitoring.coreos.com/v1 PrometheusRule: its spec is what Prometheus reads from a rule
// file.
type PrometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels,omitempty"`
	} `json:"metadata"`
	Spec struct {
		Groups []RuleGroup `json:"groups"`
	} `json:"spec"`
}

// RuleGroup is a group of rules, as in a Prometheus rule file.
type RuleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []Rule `json:"rules"`
}

// Rule is an alerting (Alert) or recording (Record) rule, as in a Prometheus rule file.
type Rule struct {
	Alert         string            `json:"alert,omitempty"`
	Record        string            `json:"record,omitempty"`
	Expr          string            `json:"expr"`
	For           string            `json:"for,omitempty"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// ReadPrometheusRule reads a PrometheusRule manifest. A field this package does not know is an error, so that
// RuleFile never drops part of a rule silently.
func ReadPrometheusRule(path string) (*PrometheusRule, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the PrometheusRule: %w", err)
	}
	var pr PrometheusRule
	if err := yaml.UnmarshalStrict(data, &pr); err != nil {
		return nil, fmt.Errorf("decoding the PrometheusRule %s: %w", path, err)
	}
	return &pr, nil
}

// RuleFile returns groups as a Prometheus rule file.
func RuleFile(groups []RuleGroup) ([]byte, error) {
	data, err := yaml.Marshal(map[string]any{"groups": groups})
	if err != nil {
		return nil, fmt.Errorf("encoding the rule file: %w", err)
	}
	return data, nil
}
