package chart

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The chart with the values of config/default renders exactly config/default.
func TestChartIsConfigDefault(t *testing.T) {
	compare(t, mustHelmTemplate(t, configDefaultValues), kustomize(t, filepath.Join(root, "config", "default")))
}

// backupPullSecret is config/components/backup-pull-secret, added to config/default as the component says.
func TestChartBackupPullSecretIsTheComponent(t *testing.T) {
	dir := configDefault(t, func(k map[string]any, rel func(string) string) {
		k["components"] = append(k["components"].([]any), rel("components/backup-pull-secret"))
	})
	compare(t, mustHelmTemplate(t, withValues(map[string]any{"backupPullSecret": "backup-registry-pull"})), kustomize(t, dir))
}

// webhook.enabled=false is config/default without the webhook component and with --webhook=false, as
// config/default/kustomization.yaml says to run without it.
func TestChartWithoutWebhookIsConfigDefaultWithoutTheComponent(t *testing.T) {
	dir := configDefault(t, func(k map[string]any, rel func(string) string) {
		webhook := rel("components/webhook")
		var kept []any
		for _, c := range k["components"].([]any) {
			if c != webhook {
				kept = append(kept, c)
			}
		}
		if len(kept) == len(k["components"].([]any)) {
			t.Fatalf("config/default does not include config/components/webhook (as %s)", webhook)
		}
		k["components"] = kept
		patches, _ := k["patches"].([]any)
		k["patches"] = append(patches, map[string]any{
			"target": map[string]any{"kind": "Deployment", "name": "image-clone-controller"},
			"patch":  "- op: add\n  path: /spec/template/spec/containers/0/args/-\n  value: --webhook=false\n",
		})
	})
	compare(t, mustHelmTemplate(t, withValues(map[string]any{"webhook": map[string]any{"enabled": false}})), kustomize(t, dir))
}

// The ServiceMonitor and the PrometheusRule are config/components/monitoring, added to config/default.
func TestChartMonitoringIsTheComponent(t *testing.T) {
	dir := configDefault(t, func(k map[string]any, rel func(string) string) {
		components, _ := k["components"].([]any)
		k["components"] = append(components, rel("components/monitoring"))
	})
	values := withValues(map[string]any{"metrics": map[string]any{
		"serviceMonitor": map[string]any{"enabled": true},
		"prometheusRule": map[string]any{"enabled": true},
	}})
	compare(t, mustHelmTemplate(t, values), kustomize(t, dir))
}

// The dashboard ConfigMap holds config/grafana/image-clone-controller.json as it is, for Grafana's sidecar.
func TestChartDashboardIsConfigGrafana(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(root, "config", "grafana", "image-clone-controller.json"))
	if err != nil {
		t.Fatal(err)
	}
	objs := mustHelmTemplate(t, withValues(map[string]any{"grafana": map[string]any{"dashboard": map[string]any{"enabled": true}}}))
	cm := find(t, objs, "ConfigMap", release+"-dashboard")
	if got := field(cm, "metadata", "labels", "grafana_dashboard"); got != "1" {
		t.Errorf("label grafana_dashboard = %v, want \"1\" (the label Grafana's sidecar loads)", got)
	}
	if got := field(cm, "data", "image-clone-controller.json"); got != string(want) {
		t.Errorf("the ConfigMap's image-clone-controller.json differs from config/grafana/image-clone-controller.json: run make chart-sync")
	}
	if got := field(cm, "metadata", "namespace"); got != namespace {
		t.Errorf("namespace = %v, want the release namespace %s", got, namespace)
	}
}

// The parts whose files chart-sync copies fail clearly when turned on without them, and are not rendered
// when off.
func TestChartSyncedPartsNeedTheirFiles(t *testing.T) {
	for _, part := range []struct {
		file   string
		values map[string]any
		kind   string
	}{
		{"prometheusrule-spec.yaml", map[string]any{"metrics": map[string]any{"prometheusRule": map[string]any{"enabled": true}}}, "PrometheusRule"},
		{"grafana-dashboard.json", map[string]any{"grafana": map[string]any{"dashboard": map[string]any{"enabled": true}}}, "ConfigMap"},
	} {
		t.Run(part.kind, func(t *testing.T) {
			for _, obj := range mustHelmTemplate(t, configDefaultValues) {
				if obj["kind"] == part.kind {
					t.Errorf("%s rendered while it is off", key(obj))
				}
			}
			if exists(t, filepath.Join(chartDir, "files", part.file)) {
				if _, err := helmTemplate(t, release, namespace, withValues(part.values)); err != nil {
					t.Errorf("turned on: %v", err)
				}
				return
			}
			_, err := helmTemplate(t, release, namespace, withValues(part.values))
			if err == nil || !strings.Contains(err.Error(), "make chart-sync") {
				t.Errorf("turned on without files/%s: got %v, want a failure that names make chart-sync", part.file, err)
			}
		})
	}
}

// Without backupRegistry the chart fails with a message that says what to set.
func TestChartRequiresBackupRegistry(t *testing.T) {
	values := withValues(nil)
	delete(values, "backupRegistry")
	_, err := helmTemplate(t, release, namespace, values)
	const want = "backupRegistry is required: the registry (and optional path) copies go to, e.g. registry.example.com/backup"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want an error with %q", err, want)
	}
}

// A release named otherwise, in another namespace: every name the controller is told by a flag is an object
// the chart renders, and every binding binds the chart's ServiceAccount.
func TestChartOtherReleaseNamesAgree(t *testing.T) {
	objs, err := helmTemplate(t, "icc", "tools", withValues(map[string]any{"namespace": map[string]any{"create": false}}))
	if err != nil {
		t.Fatal(err)
	}
	const fullname = "icc-image-clone-controller"
	got := args(t, objs, fullname)
	if m := missing(got, []string{
		"--webhook-service=" + fullname + "-webhook",
		"--webhook-secret=" + fullname + "-webhook-cert",
		"--webhook-configuration=" + fullname,
	}); len(m) > 0 {
		t.Errorf("arguments %q lack %q", got, m)
	}
	find(t, objs, "Service", fullname+"-webhook")
	find(t, objs, "Secret", fullname+"-webhook-cert")
	find(t, objs, "ServiceAccount", fullname)
	mwc := find(t, objs, "MutatingWebhookConfiguration", fullname)
	if svc := field(mwc, "webhooks", 0, "clientConfig", "service"); field(svc, "name") != fullname+"-webhook" || field(svc, "namespace") != "tools" {
		t.Errorf("the webhook calls %v, want Service tools/%s-webhook", svc, fullname)
	}
	var ignored []string
	for _, v := range field(mwc, "webhooks", 0, "namespaceSelector", "matchExpressions", 0, "values").([]any) {
		ignored = append(ignored, v.(string))
	}
	if m := missing(ignored, []string{"kube-system", "tools", "kube-public"}); len(m) > 0 {
		t.Errorf("the namespaceSelector leaves out %q, not %q", ignored, m)
	}
	if rn := field(find(t, objs, "ClusterRole", fullname+"-webhook"), "rules", 1, "resourceNames", 0); rn != fullname {
		t.Errorf("the webhook ClusterRole may update %v, want %s", rn, fullname)
	}
	if sa := field(find(t, objs, "Deployment", fullname), "spec", "template", "spec", "serviceAccountName"); sa != fullname {
		t.Errorf("the Deployment runs as %v, want %s", sa, fullname)
	}
	bindings := 0
	for _, obj := range objs {
		if obj["kind"] != "RoleBinding" && obj["kind"] != "ClusterRoleBinding" {
			continue
		}
		bindings++
		subject := field(obj, "subjects", 0)
		if field(subject, "name") != fullname || field(subject, "namespace") != "tools" {
			t.Errorf("%s binds %v, want ServiceAccount tools/%s", key(obj), subject, fullname)
		}
		role := field(obj, "roleRef", "name").(string)
		find(t, objs, field(obj, "roleRef", "kind").(string), role)
	}
	// The controller's, the pull secrets', leader election's, and the webhook's Role and ClusterRole.
	if bindings != 5 {
		t.Errorf("%d bindings rendered, want 5", bindings)
	}
	for _, obj := range objs {
		if ns := field(obj, "metadata", "namespace"); ns != nil && ns != "tools" {
			t.Errorf("%s is in namespace %v, want tools", key(obj), ns)
		}
	}
}

// Each value turns into the controller flag values.yaml says, and changes nothing else of the arguments.
func TestChartValuesSetTheirFlags(t *testing.T) {
	base := args(t, mustHelmTemplate(t, configDefaultValues), release)
	add := func(more ...string) func([]string) []string {
		return func(a []string) []string { return append(a, more...) }
	}
	drop := func(arg string) func([]string) []string {
		return func(a []string) []string { return slices.DeleteFunc(a, func(s string) bool { return s == arg }) }
	}
	replace := func(old, replacement string) func([]string) []string {
		return func(a []string) []string {
			i := slices.Index(a, old)
			if i < 0 {
				t.Fatalf("%q lacks %s", a, old)
			}
			a[i] = replacement
			return a
		}
	}
	for _, tc := range []struct {
		name   string
		values map[string]any
		change func(base []string) []string
	}{
		{"registry credentials off", map[string]any{"registryCredentials": map[string]any{"enabled": false}},
			drop("--registry-config=/etc/image-clone-controller/registry/.dockerconfigjson")},
		{"leader election off", map[string]any{"leaderElection": map[string]any{"enabled": false}}, drop("--leader-elect")},
		{"workload pull secrets off", map[string]any{"workloadPullSecrets": false}, add("--workload-pull-secrets=false")},
		{"workload kinds", map[string]any{"workloadKinds": []any{"Deployment", "cronjob"}}, add("--workload-kinds=Deployment,cronjob")},
		{"ignore namespaces", map[string]any{"ignoreNamespaces": []any{"kube-public", "tenant-a"}}, add("--ignore-namespaces=kube-public,tenant-a")},
		{"no ignored namespaces", map[string]any{"ignoreNamespaces": []any{}}, add("--ignore-namespaces=")},
		{"source mirrors", map[string]any{"sourceMirrors": map[string]any{"index.docker.io": "mirror.example.com/hub", "ghcr.io": "mirror.example.com/ghcr"}},
			add("--source-mirror=ghcr.io=mirror.example.com/ghcr", "--source-mirror=index.docker.io=mirror.example.com/hub")},
		{"inventory", map[string]any{"inventory": map[string]any{"verifyInterval": "30m", "deepVerifyEvery": 6, "retention": "720h", "retentionDryRun": true}},
			add("--verify-interval=30m", "--deep-verify-every=6", "--retention=720h", "--retention-dry-run")},
		{"inventory off", map[string]any{"inventory": map[string]any{"enabled": false}}, add("--inventory=false")},
		{"webhook port and names", map[string]any{"webhook": map[string]any{"port": 10443, "certNames": []any{"localhost", "icc.example"}}},
			add("--webhook-port=10443", "--webhook-cert-names=localhost,icc.example")},
		{"metrics port", map[string]any{"metrics": map[string]any{"port": 9090}}, replace("--metrics-bind-address=:8080", "--metrics-bind-address=:9090")},
		{"extra args", map[string]any{"extraArgs": []any{"--zap-log-level=debug"}}, add("--zap-log-level=debug")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := args(t, mustHelmTemplate(t, withValues(tc.values)), release)
			if want := tc.change(slices.Clone(base)); !slices.Equal(got, want) {
				t.Errorf("arguments\n  %q\nwant\n  %q", got, want)
			}
			assertControllerFlags(t, got)
		})
	}
	t.Run("unknown workload kind", func(t *testing.T) {
		_, err := helmTemplate(t, release, namespace, withValues(map[string]any{"workloadKinds": []any{"Pod"}}))
		if err == nil || !strings.Contains(err.Error(), `workloadKinds: unknown kind "Pod"`) {
			t.Errorf("got %v, want the unknown kind named", err)
		}
	})
}

// flagDefinition matches the flags cmd/image-clone-controller defines with the flag package.
var flagDefinition = regexp.MustCompile(`flag\.(?:String|Bool|Int|Duration)?Var\(&[^,]+,\s*"([a-z-]+)"`)

// assertControllerFlags fails for an argument that names no flag of cmd/image-clone-controller, so a flag
// renamed there cannot leave the chart behind.
func assertControllerFlags(t *testing.T, arguments []string) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "cmd", "image-clone-controller", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	var defined []string
	for _, m := range flagDefinition.FindAllSubmatch(src, -1) {
		defined = append(defined, string(m[1]))
	}
	if len(defined) < 20 {
		t.Fatalf("found only %d flag definitions in cmd/image-clone-controller/main.go: %q", len(defined), defined)
	}
	for _, a := range arguments {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if strings.HasPrefix(name, "zap-") {
			continue // bound by zap.Options.BindFlags
		}
		if !slices.Contains(defined, name) {
			t.Errorf("argument %s names no flag of cmd/image-clone-controller (it defines %q)", a, defined)
		}
	}
}
