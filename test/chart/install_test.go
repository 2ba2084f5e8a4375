//go:build e2e

package chart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
)

// TestChartOnLocalCluster installs the chart on the local cluster and backs up the README's examples with it.
//
// `make test-chart` starts the cluster with LOCAL_CONTROLLER=false: kwok fakes pods and never runs a container,
// so the chart's Deployment could not run the controller there, and local-up applies nothing of config/. The
// proof is therefore made in two halves. First, everything the chart ships is installed by `helm install`: the
// CRD, the ServiceAccount, every Role and ClusterRole and their bindings, the webhook's Secret and
// MutatingWebhookConfiguration, and the Deployment, scaled to 0 (replicas: 0) so that no fake pod pretends to
// be the controller; the webhook configuration calls the local process (webhook.url) instead of the Service.
// Second, bin/image-clone-controller runs on this host with exactly the arguments and POD_NAMESPACE of the
// installed Deployment, plus only what a process outside the cluster needs (a kubeconfig, loopback bind
// addresses, a certificate directory), and authenticates with a token of the chart's ServiceAccount — not
// impersonated, not an administrator — so every request it makes is authorized by the chart's RBAC alone. It
// then has to elect itself leader, issue the webhook certificate into the chart's Secret, inject the CA into the
// chart's webhook configuration, back up nginx, grafana/grafana:main, ghcr.io/timebertt/speedtest-exporter and
// the fluentd DaemonSet (ImageBackups Ready, pod templates patched once onto the copies and pods running them,
// ImagesBackedUp Events), and rewrite a new Deployment at admission. The backup registry must not hold the
// copies beforehand, so that the reconcilers' path (copy, record, patch) is what is proven, not only the
// webhook's. Before the install, the rendered chart passes a server-side dry run.
func TestChartOnLocalCluster(t *testing.T) {
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(3 * time.Minute)
	g.SetDefaultEventuallyPollingInterval(250 * time.Millisecond)
	ctx := context.Background()

	kubeconfig := os.Getenv("CHART_KUBECONFIG")
	localDir := os.Getenv("LOCAL_DIR")
	if kubeconfig == "" || localDir == "" {
		t.Fatal("CHART_KUBECONFIG or LOCAL_DIR is unset: run make test-chart, which starts the local cluster with LOCAL_CONTROLLER=false")
	}
	controllerBin := envOr("CONTROLLER_BIN", filepath.Join(root, "bin", "image-clone-controller"))
	backupHost := "127.0.0.1:" + envOr("LOCAL_BACKUP_REGISTRY_PORT", "5001")
	upstreamHost := "127.0.0.1:" + envOr("LOCAL_UPSTREAM_REGISTRY_PORT", "5002")
	metricsAddr := "127.0.0.1:" + envOr("LOCAL_METRICS_PORT", "8080")
	probeAddr := "127.0.0.1:" + envOr("LOCAL_PROBE_PORT", "8081")
	webhookPort := envOr("LOCAL_WEBHOOK_PORT", "9443")

	admin, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	g.Expect(err).NotTo(HaveOccurred())
	scheme := runtime.NewScheme()
	g.Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	g.Expect(v1alpha1.AddToScheme(scheme)).To(Succeed())
	c, err := client.New(admin, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	clientset := kubernetes.NewForConfigOrDie(admin)
	g.Eventually(func() error {
		return c.List(ctx, &corev1.NamespaceList{}, client.Limit(1))
	}, "30s").Should(Succeed(), "the local cluster's API server does not answer")
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release}, &corev1.ServiceAccount{})).NotTo(Succeed(),
		"ServiceAccount %s/%s exists before the install: start the cluster with LOCAL_CONTROLLER=false (make test-chart does)", namespace, release)

	kubectl := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "kubectl", args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		cmd.Dir = root
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		g.Expect(err).NotTo(HaveOccurred(), "kubectl %s: %s", strings.Join(args, " "), out)
		return string(out)
	}
	// Helm creates no namespace with --create-namespace in a dry run, and a dry run of namespaced objects
	// needs theirs: it is made here, as --create-namespace would.
	err = c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})
	g.Expect(client.IgnoreAlreadyExists(err)).To(Succeed())

	t.Log("server-side dry run of the chart as config/default configures it, and with its optional parts on")
	dryRuns := map[string]map[string]any{
		"config/default":   configDefaultValues,
		"optional parts":   withValues(map[string]any{"backupPullSecret": "backup-registry-pull", "workloadKinds": []any{"Deployment", "CronJob"}}),
		"without webhook":  withValues(map[string]any{"webhook": map[string]any{"enabled": false}, "workloadPullSecrets": false}),
		"local controller": localValues(backupHost, upstreamHost, webhookPort),
	}
	dryRuns["optional parts"]["grafana"] = map[string]any{"dashboard": map[string]any{"enabled": true}}
	if served(clientset, "monitoring.coreos.com/v1") {
		dryRuns["optional parts"]["metrics"] = map[string]any{"serviceMonitor": map[string]any{"enabled": true},
			"prometheusRule": map[string]any{"enabled": true}}
	} else {
		t.Log("the cluster serves no monitoring.coreos.com/v1 (the Prometheus Operator's CRDs): the ServiceMonitor and PrometheusRule are left out of the dry run")
	}
	for name, values := range dryRuns {
		manifest, err := helmTemplateText(t, values)
		g.Expect(err).NotTo(HaveOccurred(), name)
		out := kubectl(manifest, "apply", "--server-side", "--field-manager=chart-dry-run", "--dry-run=server", "-f", "-")
		g.Expect(out).To(ContainSubstring("deployment.apps/%s serverside-applied (server dry run)", release), name)
		t.Logf("dry run %q accepted: %d objects", name, strings.Count(out, "(server dry run)"))
	}

	t.Log("helm install, the controller's Deployment scaled to 0 and its webhook pointed at the local process")
	valuesFile := filepath.Join(t.TempDir(), "local-values.yaml")
	data, err := yaml.Marshal(localValues(backupHost, upstreamHost, webhookPort))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(os.WriteFile(valuesFile, data, 0o600)).To(Succeed())
	helm := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, helmBinary(t), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		out, err := cmd.CombinedOutput()
		g.Expect(err).NotTo(HaveOccurred(), "helm %s: %s", strings.Join(args, " "), out)
		return string(out)
	}
	helm("install", release, chartDir, "--namespace", namespace, "--values", valuesFile, "--wait", "--timeout", "2m")
	t.Cleanup(func() { helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "2m") })
	deployment := &appsv1.Deployment{}
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release}, deployment)).To(Succeed())
	g.Expect(*deployment.Spec.Replicas).To(BeZero())

	t.Log("a token of the chart's ServiceAccount, for the controller's kubeconfig")
	token, err := clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, release, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(2 * 3600))},
	}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	controllerKubeconfig := filepath.Join(localDir, "chart-controller.kubeconfig")
	g.Expect(writeTokenKubeconfig(admin, token.Status.Token, controllerKubeconfig)).To(Succeed())
	asSA, err := clientcmd.BuildConfigFromFlags("", controllerKubeconfig)
	g.Expect(err).NotTo(HaveOccurred())
	review, err := kubernetes.NewForConfigOrDie(asSA).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(review.Status.UserInfo.Username).To(Equal("system:serviceaccount:" + namespace + ":" + release))

	t.Log("the controller, with the installed Deployment's arguments and environment")
	container := deployment.Spec.Template.Spec.Containers[0]
	g.Expect(container.Env).To(ContainElement(corev1.EnvVar{Name: "POD_NAMESPACE",
		ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}))
	certDir := filepath.Join(localDir, "chart-webhook-certs")
	g.Expect(os.MkdirAll(certDir, 0o750)).To(Succeed())
	// Later flags win; --registry-config names a path that does not exist here, as if its optional Secret had
	// not been created, which the controller treats as anonymous access.
	local := []string{"--kubeconfig=" + controllerKubeconfig, "--metrics-bind-address=" + metricsAddr,
		"--health-probe-bind-address=" + probeAddr, "--webhook-host=127.0.0.1", "--webhook-port=" + webhookPort,
		"--webhook-cert-dir=" + certDir}
	t.Logf("the chart's arguments: %q; added for a process outside the cluster: %q", container.Args, local)
	startController(t, controllerBin, localDir, append(slices.Clone(container.Args), local...), "POD_NAMESPACE="+namespace)
	g.Eventually(func() error { return get("http://" + probeAddr + "/readyz") }).Should(Succeed(),
		"the controller never became ready; see %s/logs/controller.log", localDir)
	g.Eventually(func(g Gomega) {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		g.Expect(c.Get(ctx, client.ObjectKey{Name: release}, mwc)).To(Succeed())
		g.Expect(mwc.Webhooks[0].ClientConfig.CABundle).NotTo(BeEmpty())
	}).Should(Succeed(), "the controller never injected its CA into the chart's MutatingWebhookConfiguration")
	secret := &corev1.Secret{}
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release + "-webhook-cert"}, secret)).To(Succeed())
	g.Expect(secret.Data).To(HaveKey("tls.crt"), "the rotator keeps the certificate in the chart's Secret")

	t.Log("the README's examples, whose images the backup registry does not hold yet")
	// So the reconcilers must copy them and patch the workloads (the webhook has no copy to point them at),
	// which takes every permission the proof is about.
	catalog, err := catalogOf(backupHost)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(catalog).NotTo(ContainElement(Or(ContainSubstring("nginx"), ContainSubstring("grafana"), ContainSubstring("speedtest-exporter"), ContainSubstring("fluentd"))),
		"the backup registry holds copies already: run on a fresh local cluster (make test-chart starts one)")
	kubectl("", "create", "deployment", "nginx", "--image", "nginx")
	kubectl("", "create", "deployment", "grafana", "--image", "grafana/grafana:main")
	kubectl("", "create", "deployment", "speedtest-exporter", "--image", "ghcr.io/timebertt/speedtest-exporter:v0.1.0")
	kubectl("", "apply", "-f", "hack/local/fluentd-daemonset.yaml")
	t.Cleanup(func() {
		kubectl("", "delete", "deployment", "nginx", "grafana", "speedtest-exporter", "nginx-again", "--ignore-not-found", "--wait=false")
		kubectl("", "delete", "-f", "hack/local/fluentd-daemonset.yaml", "--ignore-not-found", "--wait=false")
	})
	backups := map[string]string{
		"Deployment/nginx":              backupHost + "/index_docker_io/library/nginx:latest",
		"Deployment/grafana":            backupHost + "/index_docker_io/grafana/grafana:main",
		"Deployment/speedtest-exporter": backupHost + "/ghcr_io/timebertt/speedtest-exporter:v0.1.0",
		"DaemonSet/fluentd":             backupHost + "/index_docker_io/library/fluentd:latest",
	}
	for workload, backup := range backups {
		kind, name, _ := strings.Cut(workload, "/")
		// Created on the public image (generation 1), then pointed at the copy by the reconciler's one patch.
		g.Eventually(func() string {
			var spec corev1.PodSpec
			var generation int64
			switch kind {
			case "Deployment":
				d := &appsv1.Deployment{}
				g.Expect(c.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, d)).To(Succeed())
				spec, generation = d.Spec.Template.Spec, d.Generation
			case "DaemonSet":
				d := &appsv1.DaemonSet{}
				g.Expect(c.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, d)).To(Succeed())
				spec, generation = d.Spec.Template.Spec, d.Generation
			}
			return fmt.Sprintf("generation %d, %s", generation, spec.Containers[0].Image)
		}).Should(Equal("generation 2, "+backup), "%s's pod template is not on its copy, patched once", workload)
		g.Eventually(func(g Gomega) {
			pods := &corev1.PodList{}
			g.Expect(c.List(ctx, pods, client.InNamespace("default"), client.MatchingLabels{"app": name})).To(Succeed())
			g.Expect(pods.Items).NotTo(BeEmpty())
			for _, p := range pods.Items {
				g.Expect(p.Spec.Containers[0].Image).To(Equal(backup), "pod %s", p.Name)
				g.Expect(p.Status.Phase).To(Equal(corev1.PodRunning), "pod %s", p.Name)
			}
		}).Should(Succeed(), "%s's pods do not all run from the copy", workload)
		g.Eventually(func(g Gomega) {
			events := &eventsv1.EventList{}
			g.Expect(c.List(ctx, events, client.InNamespace("default"))).To(Succeed())
			g.Expect(events.Items).To(ContainElement(SatisfyAll(
				HaveField("Reason", "ImagesBackedUp"), HaveField("Regarding.Kind", kind), HaveField("Regarding.Name", name))))
		}).Should(Succeed(), "no ImagesBackedUp Event on %s", workload)
	}
	g.Eventually(func(g Gomega) {
		list := &v1alpha1.ImageBackupList{}
		g.Expect(c.List(ctx, list)).To(Succeed())
		ready := map[string]v1alpha1.Phase{}
		for _, ib := range list.Items {
			ready[ib.Spec.Backup] = ib.Status.Phase
		}
		for workload, backup := range backups {
			g.Expect(ready).To(HaveKeyWithValue(backup, v1alpha1.PhaseReady), "the ImageBackup of %s", workload)
		}
	}).Should(Succeed())
	t.Logf("backed up and Ready: %q", backups)

	t.Log("a new Deployment of a backed-up image is created on its copy: the chart's webhook configuration calls the controller")
	created := kubectl("", "create", "deployment", "nginx-again", "--image", "nginx", "-o", "jsonpath={.metadata.generation} {.spec.template.spec.containers[0].image}")
	g.Expect(created).To(Equal("1 "+backups["Deployment/nginx"]), "the stored object of its first revision")
}

// localValues are the chart's values for the local cluster: its registries, the Deployment scaled to 0, and
// the webhook at the local controller, whose certificate names localhost.
func localValues(backupHost, upstreamHost, webhookPort string) map[string]any {
	return map[string]any{
		"backupRegistry": backupHost,
		"sourceMirrors":  map[string]any{"index.docker.io": upstreamHost, "ghcr.io": upstreamHost + "/ghcr"},
		"replicas":       0,
		"webhook": map[string]any{
			"url":       "https://localhost:" + webhookPort + "/mutate-workloads",
			"certNames": []any{"localhost"},
		},
	}
}

// helmTemplateText renders the chart with values, CRDs included, as text.
func helmTemplateText(t *testing.T, values map[string]any) (string, error) {
	t.Helper()
	data, err := yaml.Marshal(values)
	if err != nil {
		return "", err
	}
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(t.Context(), helmBinary(t), "template", release, chartDir, "--namespace", namespace, "--include-crds", "--values", file).Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return "", fmt.Errorf("helm template: %w: %s", err, exit.Stderr)
		}
		return "", fmt.Errorf("helm template: %w", err)
	}
	return string(out), nil
}

// startController runs the controller binary in the background, logging to LOCAL_DIR/logs/controller.log (where
// make local-logs looks) and with its pid in LOCAL_DIR/pids/controller.pid, so that make local-down stops it if
// this test cannot. The test stops it at its end.
func startController(t *testing.T, binary, localDir string, args []string, env ...string) {
	t.Helper()
	g := NewWithT(t)
	g.Expect(os.MkdirAll(filepath.Join(localDir, "logs"), 0o750)).To(Succeed())
	g.Expect(os.MkdirAll(filepath.Join(localDir, "pids"), 0o750)).To(Succeed())
	logFile, err := os.OpenFile(filepath.Join(localDir, "logs", "controller.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	g.Expect(err).NotTo(HaveOccurred())
	fmt.Fprintf(logFile, "---- %s starting (chart test): %s %s\n", time.Now().UTC().Format(time.RFC3339), binary, strings.Join(args, " "))
	// The controller keeps running after the test's context ends, until the cleanup stops it.
	cmd := exec.CommandContext(context.WithoutCancel(t.Context()), binary, args...) //nolint:gosec // the binary and flags the test chose

	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, "KUBECONFIG=") || strings.HasPrefix(e, "POD_NAMESPACE=")
	}), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	g.Expect(cmd.Start()).To(Succeed())
	pidFile := filepath.Join(localDir, "pids", "controller.pid")
	g.Expect(os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)).To(Succeed())
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logFile, "---- %s the controller exited: %v\n", time.Now().UTC().Format(time.RFC3339), err)
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = os.Remove(pidFile)
		_ = logFile.Close()
	})
}

// writeTokenKubeconfig writes a kubeconfig for the API server of admin that authenticates with token only.
func writeTokenKubeconfig(admin *rest.Config, token, path string) error {
	cluster := &clientcmdapi.Cluster{Server: admin.Host, CertificateAuthority: admin.CAFile, CertificateAuthorityData: admin.CAData}
	config := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"local": cluster},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"chart-serviceaccount": {Token: token}},
		Contexts:       map[string]*clientcmdapi.Context{"local": {Cluster: "local", AuthInfo: "chart-serviceaccount"}},
		CurrentContext: "local",
	}
	if err := clientcmd.WriteToFile(config, path); err != nil {
		return fmt.Errorf("writing the controller's kubeconfig: %w", err)
	}
	return nil
}

// catalogOf lists the repositories of the registry at host (plain HTTP, as the local registries serve).
func catalogOf(host string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/_catalog", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("listing the repositories of %s: %w", host, err)
	}
	defer resp.Body.Close()
	var catalog struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&catalog); err != nil {
		return nil, fmt.Errorf("decoding the catalog of %s: %w", host, err)
	}
	return catalog.Repositories, nil
}

// served reports whether the API server serves groupVersion.
func served(clientset kubernetes.Interface, groupVersion string) bool {
	_, err := clientset.Discovery().ServerResourcesForGroupVersion(groupVersion)
	return err == nil
}

// get fails unless url answers 200.
func get(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

func ptr[T any](v T) *T { return &v }
