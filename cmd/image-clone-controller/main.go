// Command image-clone-controller copies the external images of Deployments and DaemonSets into a backup
// registry and points the workloads at the copies. This file only turns flags into a running manager.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

// defaultIgnoredNamespaces are left alone unless --ignore-namespaces says otherwise: the cluster's own
// namespaces and the local registry's (a registry must never depend on a copy of itself).
const defaultIgnoredNamespaces = "kube-public,kube-node-lease,local-path-storage,registry"

// alwaysIgnoredNamespaces are left alone whatever the flags say.
var alwaysIgnoredNamespaces = []string{"kube-system"}

type flags struct {
	backupRegistry          string
	ignoreNamespaces        string
	maxConcurrentReconciles int
	maxConcurrentCopies     int
	sourceMirrors           repeated
	insecureRegistries      repeated
	registryConfig          string
	copyTimeout             time.Duration
	tagCacheTTL             time.Duration
	leaderElect             bool
	metricsAddr             string
	probeAddr               string
	pprofAddr               string
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
	flag.IntVar(&f.maxConcurrentReconciles, "max-concurrent-reconciles", 4,
		"Workloads of each kind reconciled in parallel.")
	flag.IntVar(&f.maxConcurrentCopies, "max-concurrent-copies", 4,
		"Images copied in parallel across all workloads (the same image is only ever copied once at a time).")
	flag.Var(&f.sourceMirrors, "source-mirror",
		"REGISTRY=HOST[:PORT][/PATH]: pull REGISTRY's images from a mirror (pull-through cache, air-gapped site). Names of copies still follow REGISTRY. Repeatable.")
	flag.Var(&f.insecureRegistries, "insecure-registry",
		"HOST[:PORT] spoken to over plain HTTP (backup registry or mirror). Repeatable.")
	flag.StringVar(&f.registryConfig, "registry-config", "",
		"Docker config file with registry credentials, e.g. a mounted kubernetes.io/dockerconfigjson Secret. Default: $DOCKER_CONFIG/config.json or ~/.docker/config.json if present.")
	flag.DurationVar(&f.copyTimeout, "copy-timeout", 30*time.Minute, "Time limit for copying and verifying one image.")
	flag.DurationVar(&f.tagCacheTTL, "tag-cache-ttl", time.Minute,
		"How long the digest a tag was backed up at is reused for other workloads with the same image without asking the source registry again; 0 asks every time.")
	flag.BoolVar(&f.leaderElect, "leader-elect", false,
		"Elect a leader so that only one replica reconciles at a time.")
	flag.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; 0 disables it.")
	flag.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz; 0 disables them.")
	flag.StringVar(&f.pprofAddr, "pprof-bind-address", "0",
		"Address of Go's /debug/pprof profiling endpoints (e.g. 127.0.0.1:8082, for investigations); 0 disables them.")
	zapOpts := zap.Options{}
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
	copierOpts := registry.Options{
		Mirrors:             map[string]registry.Mirror{},
		Insecure:            f.insecureRegistries,
		MaxConcurrentCopies: f.maxConcurrentCopies,
		CopyTimeout:         f.copyTimeout,
		Keychain:            authn.DefaultKeychain,
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
	if f.registryConfig != "" {
		if copierOpts.Keychain, err = registry.DockerConfigKeychain(f.registryConfig); err != nil {
			return fmt.Errorf("--registry-config: %w", err)
		}
	}

	ignored := slices.Concat(alwaysIgnoredNamespaces, splitList(f.ignoreNamespaces))
	ownNamespace := os.Getenv("POD_NAMESPACE")
	if ownNamespace != "" {
		ignored = append(ignored, ownNamespace)
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
		// Workloads are cached cluster-wide: keep only what the reconcilers read.
		Cache: cache.Options{DefaultTransform: controller.TrimForCache()},
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	if err := controller.SetupWithManager(mgr, registry.New(copierOpts), controller.Options{
		Backup:                  backup,
		IgnoredNamespaces:       ignored,
		MaxConcurrentReconciles: f.maxConcurrentReconciles,
		MaxConcurrentImages:     f.maxConcurrentCopies,
		TagCacheTTL:             f.tagCacheTTL,
	}); err != nil {
		return fmt.Errorf("setting up controllers: %w", err)
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
		"sourceMirrors", f.sourceMirrors.String())
	return mgr.Start(ctx)
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
