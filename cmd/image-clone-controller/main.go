// Command image-clone-controller copies the external images of workloads (Deployments, DaemonSets,
// StatefulSets, CronJobs, Jobs) into a backup registry and points the workloads at the copies, from its
// reconcilers and its admission webhook. This file only turns flags into a running manager.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/image-clone-controller/image-clone-controller/api/v1alpha1"
	"github.com/image-clone-controller/image-clone-controller/internal/admission"
	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/dockerconfig"
	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/inventory"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// defaultIgnoredNamespaces are left alone unless --ignore-namespaces says otherwise: the cluster's own
// namespaces and the local registry's (a registry must never depend on a copy of itself).
const defaultIgnoredNamespaces = "kube-public,kube-node-lease,local-path-storage,registry"

type flags struct {
	backupRegistry          string
	ignoreNamespaces        string
	workloadKinds           string
	maxConcurrentReconciles int
	maxConcurrentCopies     int
	sourceMirrors           repeated
	insecureRegistries      repeated
	registryConfig          string
	copyTimeout             time.Duration
	tagCacheTTL             time.Duration
	maxImageSize            string
	copyReferrers           bool
	referrersOptional       bool
	workloadPullSecrets     bool
	backupPullSecret        string
	leaderElect             bool
	metricsAddr             string
	probeAddr               string
	pprofAddr               string
	webhook                 webhookFlags
	inventory               inventoryFlags
}

// inventoryFlags configure the ImageBackup inventory: verification, restores and retention.
type inventoryFlags struct {
	enabled         bool
	verifyInterval  time.Duration
	deepVerifyEvery int
	retention       time.Duration
	retentionDryRun bool
}

// webhookFlags configure the mutating admission webhook.
type webhookFlags struct {
	enabled       bool
	host          string
	port          int
	certDir       string
	certRotation  bool
	secret        string
	service       string
	certNames     repeated
	configuration string
	budget        time.Duration
}

// repeated collects the values of a flag given several times (or comma-separated).
type repeated []string

func (r *repeated) String() string { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*r = append(*r, s)
		}
	}
	return nil
}

func main() {
	var f flags
	flag.StringVar(&f.backupRegistry, "backup-registry", "",
		"Registry (HOST[:PORT][/PATH]) that external images are copied to. Required.")
	flag.StringVar(&f.ignoreNamespaces, "ignore-namespaces", defaultIgnoredNamespaces,
		"Comma-separated namespaces whose workloads are left alone, in addition to kube-system and the controller's own namespace (POD_NAMESPACE).")
	flag.StringVar(&f.workloadKinds, "workload-kinds", strings.Join(workload.KindNames, ","),
		"Comma-separated workload kinds whose images are backed up: "+strings.Join(workload.KindNames, ", ")+
			". Jobs are rewritten at admission only (their pod template cannot change); their images are still backed up for the next one.")
	flag.IntVar(&f.maxConcurrentReconciles, "max-concurrent-reconciles", 16,
		"Workloads of each kind reconciled in parallel. A reconcile mostly waits on the backup registry and the API server, so many run on one core; copies are bounded by --max-concurrent-copies.")
	flag.IntVar(&f.maxConcurrentCopies, "max-concurrent-copies", 4,
		"Images copied in parallel across all workloads (the same image is only ever copied once at a time).")
	flag.Var(&f.sourceMirrors, "source-mirror",
		"REGISTRY=HOST[:PORT][/PATH]: pull REGISTRY's images from a mirror (pull-through cache, air-gapped site). Names of copies still follow REGISTRY. Repeatable.")
	flag.Var(&f.insecureRegistries, "insecure-registry",
		"HOST[:PORT] spoken to over plain HTTP (backup registry or mirror). Repeatable.")
	flag.StringVar(&f.registryConfig, "registry-config", "",
		"Docker config file with registry credentials, e.g. a mounted kubernetes.io/dockerconfigjson Secret. Default: $DOCKER_CONFIG/config.json or ~/.docker/config.json if present.")
	flag.DurationVar(&f.copyTimeout, "copy-timeout", 30*time.Minute, "Time limit for backing up one image: resolving its tag, checking the backup, copying and verifying.")
	flag.DurationVar(&f.tagCacheTTL, "tag-cache-ttl", time.Minute,
		"How long the digest a source tag resolved to is reused for other workloads with the same image (and pull credentials) without asking the source registry again; 0 asks every time. The backup registry is asked on every reconcile regardless. With --workload-pull-secrets, the pull secrets read for a workload (its ServiceAccount's imagePullSecrets and the Secrets) are reused as long for workloads of the same namespace, ServiceAccount and pod pull secrets: a change to them applies within this time.")
	flag.StringVar(&f.maxImageSize, "max-image-size", "0",
		"Largest image copied, as a quantity of bytes (10Gi, 500Mi): the sum of its distinct blobs over every platform, as its manifests give them. Larger images are refused with a Warning Event before any blob is copied. 0 is no limit.")
	flag.BoolVar(&f.copyReferrers, "copy-referrers", true,
		"Copy along, for every manifest of an image, its cosign signature, attestation and SBOM tags (sha256-<hex>.sig, .att, .sbom) and its OCI 1.1 referrers, so signature policies verify the copy as they verify the source.")
	flag.BoolVar(&f.referrersOptional, "referrers-optional", false,
		"Point workloads at a copy even when some of its signatures, attestations or referrers could not be copied, with a Warning Event; by default the workload waits (retried with backoff), since a signature policy would reject its pods.")
	flag.BoolVar(&f.workloadPullSecrets, "workload-pull-secrets", true,
		"Pull source images with the workload's own imagePullSecrets (and its ServiceAccount's), so a workload is only backed up from images it could pull itself. Needs get on Secrets and ServiceAccounts; false pulls with --registry-config instead.")
	flag.StringVar(&f.backupPullSecret, "backup-pull-secret", "",
		"Name of a kubernetes.io/dockerconfigjson Secret in the controller's namespace (POD_NAMESPACE) with read access to a private backup registry: copied into each namespace whose workloads are pointed at the backup and added to their pod templates' imagePullSecrets.")
	flag.BoolVar(&f.leaderElect, "leader-elect", false,
		"Elect a leader so that only one replica reconciles at a time.")
	flag.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; 0 disables it.")
	flag.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz; 0 disables them.")
	flag.StringVar(&f.pprofAddr, "pprof-bind-address", "0",
		"Address of Go's /debug/pprof profiling endpoints (e.g. 127.0.0.1:8082, for investigations); 0 disables them.")
	flag.BoolVar(&f.webhook.enabled, "webhook", true,
		"Serve the mutating admission webhook, which points new and re-applied workloads at copies that exist already, so they roll out once. false leaves every rewrite to the reconciler (drop config/components/webhook too).")
	flag.StringVar(&f.webhook.host, "webhook-host", "", "Address the webhook listens on; empty for every interface.")
	flag.IntVar(&f.webhook.port, "webhook-port", 9443, "Port of the webhook (HTTPS).")
	flag.StringVar(&f.webhook.certDir, "webhook-cert-dir", "/tmp/k8s-webhook-server/serving-certs",
		"Directory of the webhook's tls.crt and tls.key: written by the controller with --webhook-cert-rotation, read from there without it (e.g. a mounted cert-manager Secret).")
	flag.BoolVar(&f.webhook.certRotation, "webhook-cert-rotation", true,
		"Generate and renew the webhook's serving certificate and CA in --webhook-secret and inject the CA into --webhook-configuration. false when cert-manager (or another tool) provides both.")
	flag.StringVar(&f.webhook.secret, "webhook-secret", "image-clone-controller-webhook-cert",
		"Secret in the controller's namespace (POD_NAMESPACE) that holds the webhook's CA and serving certificate; created if missing.")
	flag.StringVar(&f.webhook.service, "webhook-service", "image-clone-controller-webhook",
		"Service of the webhook: the serving certificate names SERVICE.NAMESPACE.svc.")
	flag.Var(&f.webhook.certNames, "webhook-cert-names",
		"More DNS names for the webhook's serving certificate, e.g. localhost for a controller run outside the cluster. Repeatable.")
	flag.StringVar(&f.webhook.configuration, "webhook-configuration", "image-clone-controller",
		"MutatingWebhookConfiguration of the webhook: the controller injects its CA and keeps its namespaceSelector leaving the ignored namespaces out.")
	flag.DurationVar(&f.webhook.budget, "webhook-budget", admission.DefaultBudget,
		"Network time one admission request may spend asking registries whether copies exist; past it the workload is admitted unchanged and the reconciler backs it up.")
	zapOpts := zap.Options{}
	flag.BoolVar(&f.inventory.enabled, "inventory", true,
		"Keep an ImageBackup object per copy (needs the CRD of config/crd): verify copies, restore lost ones, retire unused ones.")
	flag.DurationVar(&f.inventory.verifyInterval, "verify-interval", time.Hour,
		"How often each copy is checked in the backup registry (one manifest HEAD), give or take a tenth; a lost copy is restored from its source at its recorded digest.")
	flag.IntVar(&f.inventory.deepVerifyEvery, "deep-verify-every", 24,
		"Make every N-th check of a copy a full verification of every manifest and blob.")
	flag.DurationVar(&f.inventory.retention, "retention", 0,
		"Delete a copy from the backup registry, and its ImageBackup, once nothing (workload, ReplicaSet or ControllerRevision kept for rollback, Pod, Job) has needed it this long; 0 keeps copies forever.")
	flag.BoolVar(&f.inventory.retentionDryRun, "retention-dry-run", false,
		"Report (Event, log, metric) the copies --retention would delete, and delete nothing.")
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(ctrl.SetupSignalHandler(), f); err != nil {
		ctrl.Log.WithName("setup").Error(err, "Controller failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	if f.backupRegistry == "" {
		return errors.New("--backup-registry is required")
	}
	backup, err := imageref.ParseBackup(f.backupRegistry)
	if err != nil {
		return fmt.Errorf("--backup-registry: %w", err)
	}
	kinds, err := workload.ParseKinds(splitList(f.workloadKinds))
	if err != nil {
		return fmt.Errorf("--workload-kinds: %w", err)
	}
	copierOpts := registry.Options{
		Mirrors:             map[string]registry.Mirror{},
		Insecure:            f.insecureRegistries,
		MaxConcurrentCopies: f.maxConcurrentCopies,
		CopyTimeout:         f.copyTimeout,
		TagCacheTTL:         f.tagCacheTTL,
		Artifacts:           f.copyReferrers,
		ArtifactsOptional:   f.referrersOptional,
	}
	if copierOpts.MaxImageSize, err = registry.ParseMaxImageSize(f.maxImageSize); err != nil {
		return fmt.Errorf("--max-image-size: %w", err)
	}
	for _, m := range f.sourceMirrors {
		from, mirror, err := registry.ParseMirror(m)
		if err != nil {
			return fmt.Errorf("--source-mirror: %w", err)
		}
		copierOpts.Mirrors[from] = mirror
	}
	for _, host := range f.insecureRegistries {
		if _, err := name.NewRegistry(host, name.StrictValidation); err != nil {
			return fmt.Errorf("--insecure-registry %q: %w", host, err)
		}
	}
	if copierOpts.Keychain, err = registryKeychain(f.registryConfig); err != nil {
		return err
	}

	ownNamespace := os.Getenv("POD_NAMESPACE")
	ignored := workload.IgnoredNamespaces(splitList(f.ignoreNamespaces), ownNamespace)
	if f.backupPullSecret != "" {
		if errs := validation.IsDNS1123Subdomain(f.backupPullSecret); len(errs) > 0 {
			return fmt.Errorf("--backup-pull-secret %q is not a Secret name: %s", f.backupPullSecret, strings.Join(errs, "; "))
		}
		if ownNamespace == "" {
			return errors.New("--backup-pull-secret needs POD_NAMESPACE: the namespace that holds the Secret to copy")
		}
	}

	if f.inventory.verifyInterval <= 0 {
		return fmt.Errorf("--verify-interval %s must be positive", f.inventory.verifyInterval)
	}
	if f.inventory.deepVerifyEvery <= 0 {
		return fmt.Errorf("--deep-verify-every %d must be positive", f.inventory.deepVerifyEvery)
	}
	if f.inventory.retention < 0 {
		return fmt.Errorf("--retention %s must not be negative (0 keeps copies forever)", f.inventory.retention)
	}
	if f.webhook.enabled && (f.webhook.port <= 0 || f.webhook.port > 65535) {
		return fmt.Errorf("--webhook-port %d is not a port", f.webhook.port)
	}
	if f.webhook.enabled && f.webhook.budget <= 0 {
		return fmt.Errorf("--webhook-budget %s must be positive", f.webhook.budget)
	}
	serving := admission.NewServingCertificate(f.webhook.certDir)
	webhookOpts := webhook.Options{Host: f.webhook.host, Port: f.webhook.port, CertDir: f.webhook.certDir}
	if f.webhook.certRotation {
		webhookOpts.TLSOpts = []func(*tls.Config){serving.Configure}
	} else {
		webhookOpts.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress: f.probeAddr,
		PprofBindAddress:       f.pprofAddr,
		LeaderElection:         f.leaderElect,
		LeaderElectionID:       "image-clone-controller.image-clone-controller.io",
		// In a pod the namespace is detected; outside a cluster the lease lives in POD_NAMESPACE.
		LeaderElectionNamespace:       ownNamespace,
		LeaderElectionReleaseOnCancel: true, // safe: the process exits as soon as the manager stops
		Scheme:                        scheme,
		// Workloads are cached cluster-wide: keep only what the reconcilers read.
		Cache:         cacheOptions(),
		WebhookServer: webhook.NewServer(webhookOpts),
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	var keeper *inventory.Keeper
	if f.inventory.enabled {
		// The keeper is made with the copier it asks, and learns from the copier what it copies.
		copierOpts.OnBackup = func(o registry.Observation) { keeper.Observe(o) }
		copierOpts.RecordedDigest = func(t name.Tag) (v1.Hash, bool) { return keeper.RecordedDigest(t) }
	}
	copier := registry.New(copierOpts)
	if f.inventory.enabled {
		keeper = inventory.New(copier, inventory.Options{
			Backup:              backup,
			VerifyInterval:      f.inventory.verifyInterval,
			DeepVerifyEvery:     f.inventory.deepVerifyEvery,
			Retention:           f.inventory.retention,
			RetentionDryRun:     f.inventory.retentionDryRun,
			WorkloadPullSecrets: f.workloadPullSecrets,
		})
		if err := keeper.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the inventory: %w", err)
		}
	}
	if err := controller.SetupWithManager(mgr, copier, controller.Options{
		Backup:                  backup,
		IgnoredNamespaces:       ignored,
		MaxConcurrentReconciles: f.maxConcurrentReconciles,
		MaxConcurrentImages:     f.maxConcurrentCopies,
		WorkloadPullSecrets:     f.workloadPullSecrets,
		// As in the webhook: the proofs those credentials make are remembered as long (the tag cache), so
		// their reads may be too.
		PullSecretsTTL:   f.tagCacheTTL,
		BackupPullSecret: f.backupPullSecret,
		OwnNamespace:     ownNamespace,
		Kinds:            kinds,
	}); err != nil {
		return fmt.Errorf("setting up controllers: %w", err)
	}
	if f.webhook.enabled {
		if err := setupWebhook(mgr, copier, serving, f, backup, ignored, ownNamespace, kinds); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("cache-synced", func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("informer caches not synced yet")
		}
		return nil
	}); err != nil {
		return err
	}

	ctrl.Log.WithName("setup").Info("Starting manager", "backup", backup.String(), "ignoredNamespaces", ignored,
		"sourceMirrors", f.sourceMirrors.String(), "webhook", f.webhook.enabled, "kinds", kinds,
		"inventory", f.inventory.enabled, "verifyInterval", f.inventory.verifyInterval.String(), "retention", f.inventory.retention.String(),
		"retentionDryRun", f.inventory.retentionDryRun)
	return mgr.Start(ctx)
}

// scheme holds the Kubernetes types and the ImageBackup API.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}()

// cacheOptions trim what the cluster-wide caches hold: workloads keep what the reconcilers read, and the
// kinds only the inventory reads (ReplicaSets, ControllerRevisions, Pods) keep their images.
func cacheOptions() cache.Options {
	return cache.Options{DefaultTransform: controller.TrimForCache(), ByObject: inventory.CacheByObject()}
}

// setupWebhook registers the admission webhook, its certificate rotation (unless something else provides the
// certificate) and its readiness check.
func setupWebhook(mgr ctrl.Manager, copier *registry.Copier, serving *admission.ServingCertificate, f flags,
	backup imageref.Backup, ignored []string, ownNamespace string, kinds []string) error {
	if err := admission.SetupWithManager(mgr, copier, admission.Options{
		Backup:              backup,
		IgnoredNamespaces:   ignored,
		WorkloadPullSecrets: f.workloadPullSecrets,
		// The proofs those credentials make are remembered as long (the tag cache), so their reads may be too.
		PullSecretsTTL:   f.tagCacheTTL,
		BackupPullSecret: f.backupPullSecret,
		Budget:           f.webhook.budget,
		Kinds:            kinds,
	}); err != nil {
		return fmt.Errorf("setting up the admission webhook: %w", err)
	}
	var ready <-chan struct{}
	if f.webhook.certRotation {
		var err error
		if ready, err = admission.RotateCertificates(mgr, serving, admission.CertOptions{
			Namespace:     ownNamespace,
			Secret:        f.webhook.secret,
			Service:       f.webhook.service,
			ExtraNames:    f.webhook.certNames,
			Dir:           f.webhook.certDir,
			Configuration: f.webhook.configuration,
		}); err != nil {
			return err
		}
	}
	if err := admission.KeepNamespaceSelector(mgr, f.webhook.configuration, ignored); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("webhook", admission.ReadyCheck(ready, mgr.GetWebhookServer().StartedChecker()))
}

// registryKeychain reads the credentials of the backup registry and mirrors from the Docker config at path, or,
// when path is "", from $DOCKER_CONFIG/config.json or ~/.docker/config.json as docker does. Workload pull
// secrets go through the same parser (internal/dockerconfig). A default file that names credential helpers (a
// developer's desktop config) is passed over with a warning; one named by the flag must hold its credentials.
func registryKeychain(path string) (authn.Keychain, error) {
	explicit := path != ""
	if !explicit {
		dir := os.Getenv("DOCKER_CONFIG")
		if dir == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return authn.NewMultiKeychain(), nil //nolint:nilerr // no home: no default config to read
			}
			dir = filepath.Join(home, ".docker")
		}
		path = filepath.Join(dir, "config.json")
	}
	keychain, err := dockerconfig.FileKeychain(path)
	switch {
	case err == nil:
		return keychain, nil
	case !explicit && errors.Is(err, dockerconfig.ErrCredentialHelpers):
		ctrl.Log.WithName("setup").Info("Not using the default Docker config, which names credential helpers; pass --registry-config for registry credentials", "path", path)
		return authn.NewMultiKeychain(), nil
	case explicit:
		return nil, fmt.Errorf("--registry-config: %w", err)
	default:
		return nil, fmt.Errorf("reading the default Docker config %s (pass --registry-config to use another file): %w", path, err)
	}
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
