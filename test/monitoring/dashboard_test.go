package monitoring

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	// The packages whose metrics the dashboard and the alerts show register them with controller-runtime's
	// registry when they are loaded, as in the controller's binary; controller-runtime's own (work queues,
	// reconciles, the webhook) come with them.
	_ "github.com/image-clone-controller/image-clone-controller/internal/admission"
	_ "github.com/image-clone-controller/image-clone-controller/internal/controller"
	_ "github.com/image-clone-controller/image-clone-controller/internal/inventory"
	_ "github.com/image-clone-controller/image-clone-controller/internal/registry"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/prometheustest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
)

// The dashboard that the Helm chart copies: its path and uid are part of the contract.
var dashboardPath = filepath.Join(root, "config", "grafana", "image-clone-controller.json")

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	// Panels are the panels of a collapsed row.
	Panels []panel `json:"panels"`
}

type variable struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Query      any            `json:"query"`
	Datasource *datasourceRef `json:"datasource"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardPath, err)
	}
	return d
}

// allPanels returns the dashboard's panels, those of collapsed rows included, rows left out.
func (d dashboard) allPanels() []panel {
	var out []panel
	var add func(ps []panel)
	add = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				add(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	add(d.Panels)
	return out
}

// The data source every query names: the dashboard's data source variable, so that it imports into any Grafana.
const datasourceVariable = "${datasource}"

func TestDashboardShape(t *testing.T) {
	d := readDashboard(t)
	if d.UID != "image-clone-controller" || d.Title == "" || d.SchemaVersion == 0 {
		t.Errorf("dashboard uid %q, title %q, schemaVersion %d: want uid image-clone-controller (the Helm chart copies it by that uid), a title and a schema version",
			d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if ds, ok := vars["datasource"]; !ok || ds.Type != "datasource" || ds.Query != "prometheus" {
		t.Errorf("the dashboard needs a variable datasource of type datasource and query prometheus; has %+v", ds)
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != datasourceVariable) {
			t.Errorf("variable %s queries data source %+v, want %s", v.Name, v.Datasource, datasourceVariable)
		}
	}
	ids := map[int]string{}
	panels := d.allPanels()
	if len(panels) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	for _, p := range panels {
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Title == "" || p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %d has no title or no size: %+v", p.ID, p)
		}
		if p.Datasource == nil || p.Datasource.UID != datasourceVariable {
			t.Errorf("panel %q uses data source %+v, want %s", p.Title, p.Datasource, datasourceVariable)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			if strings.TrimSpace(target.Expr) == "" {
				t.Errorf("panel %q query %s has no expression", p.Title, target.RefID)
			}
			if target.Datasource == nil || target.Datasource.UID != datasourceVariable {
				t.Errorf("panel %q query %s uses data source %+v, want %s", p.Title, target.RefID, target.Datasource, datasourceVariable)
			}
		}
		for _, name := range usedVariables(p) {
			if _, ok := vars[name]; !ok && !strings.HasPrefix(name, "__") {
				t.Errorf("panel %q uses $%s, which the dashboard does not define", p.Title, name)
			}
		}
	}
}

var variableRef = regexp.MustCompile(`\$\{?(\w+)\}?`)

func usedVariables(p panel) []string {
	var names []string
	for _, target := range p.Targets {
		for _, m := range variableRef.FindAllStringSubmatch(target.Expr, -1) {
			names = append(names, m[1])
		}
	}
	return names
}

// grafanaValues are what Grafana puts in for the variables the queries use, so that Prometheus can parse them.
var grafanaValues = map[string]string{
	"__rate_interval": "2m",
	"__interval":      "1m",
	"__range":         "6h",
	"job":             "image-clone-controller",
	"namespace":       "image-clone-system",
}

// substitute replaces the Grafana variables of expr by example values; a variable without one is an error.
func substitute(expr string) (string, error) {
	var missing []string
	out := variableRef.ReplaceAllStringFunc(expr, func(ref string) string {
		name := variableRef.FindStringSubmatch(ref)[1]
		v, ok := grafanaValues[name]
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%q uses variables without an example value in grafanaValues: %v", expr, missing)
	}
	return out, nil
}

// labelValuesQuery matches a query variable's label_values(<selector>, <label>), whose selector is PromQL.
var labelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)

// queries returns every PromQL expression of the dashboard and the PrometheusRule, by where it is.
func queries(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	d := readDashboard(t)
	for _, p := range d.allPanels() {
		for _, target := range p.Targets {
			out[fmt.Sprintf("panel %q query %s", p.Title, target.RefID)] = target.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		text, _ := q["query"].(string)
		m := labelValuesQuery.FindStringSubmatch(text)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(<selector>, <label>)", v.Name, text)
			continue
		}
		out["variable "+v.Name] = m[1]
	}
	for _, r := range alerts(readPrometheusRule(t)) {
		out["alert "+r.Alert] = r.Expr
	}
	return out
}

func TestQueriesParseAndNameRegisteredMetrics(t *testing.T) {
	binary, err := testbin.Client("prometheus", "PROMETHEUS_BINARY")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srv, err := prometheustest.Start(ctx, prometheustest.Options{Binary: binary, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Error(err)
		}
	})

	all := queries(t)
	places := slices.Sorted(func(yield func(string) bool) {
		for k := range all {
			if !yield(k) {
				return
			}
		}
	})
	for _, place := range places {
		expr, err := substitute(all[place])
		if err != nil {
			t.Errorf("%s: %v", place, err)
			continue
		}
		names, err := srv.MetricNames(ctx, expr)
		if err != nil {
			t.Errorf("%s: %v", place, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", place, expr)
		}
		for _, name := range names {
			if !registered(name) {
				t.Errorf("%s: %s is not a metric the controller registers", place, name)
			}
		}
	}
}

// registered reports whether the controller's packages registered a metric family that serves the series
// name: the family itself, or for a histogram its _bucket, _sum and _count series. The registry cannot list
// what it holds, so registered asks it to register another family of that name: it refuses a name that is
// taken. A name it accepts stays reserved for the probe's help text after the probe is unregistered (the
// registry keeps names consistent for the process's lifetime); the packages registered theirs at init.
func registered(name string) bool {
	if taken(name) {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && !strings.HasSuffix(base, "_total") && taken(base) {
			return true
		}
	}
	return false
}

var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

func taken(name string) bool {
	if !metricName.MatchString(name) {
		return false // the registry would refuse it as invalid, not as taken
	}
	c := probe{prometheus.NewDesc(name, "probe of whether the name is registered", nil, nil)}
	if err := metrics.Registry.Register(c); err != nil {
		return true // another help text or labels under the name, or this very descriptor
	}
	metrics.Registry.Unregister(c)
	return false
}

// probe is a collector that describes one metric and collects nothing.
type probe struct{ desc *prometheus.Desc }

func (p probe) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }
func (p probe) Collect(chan<- prometheus.Metric)    {}

func TestRegisteredTellsTakenNamesApart(t *testing.T) {
	// The probe is only as good as the registry's refusal: a name registered here must read as taken, and
	// a name nobody registered must not.
	c := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "image_clone_probe_test_seconds", Help: "test"})
	metrics.Registry.MustRegister(c)
	defer metrics.Registry.Unregister(c)
	for _, name := range []string{"image_clone_probe_test_seconds", "image_clone_probe_test_seconds_bucket", "image_clone_probe_test_seconds_count"} {
		if !registered(name) {
			t.Errorf("%s reads as not registered", name)
		}
	}
	for _, name := range []string{"image_clone_copies_total", "image_clone_copy_duration_seconds_bucket", "workqueue_depth", "controller_runtime_webhook_panics_total"} {
		if !registered(name) {
			t.Errorf("%s, which the controller's packages register, reads as not registered", name)
		}
	}
	for _, name := range []string{"image_clone_no_such_metric_total", "image_clone_no_such_histogram_seconds_bucket", "image_clone_copies_total_count"} {
		if registered(name) {
			t.Errorf("%s, which nobody registered, reads as registered", name)
		}
	}
}
