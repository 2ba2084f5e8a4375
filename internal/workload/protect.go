package workload

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
)

// This file holds the rules that keep the controller from rewriting the workloads everything else depends on.
// Pointed at copies of its own images, the backup registry could only start while it is already running: after
// a node rotation (fresh nodes, empty image caches) neither it nor any backed-up workload would come up again.
// The same holds for the controller itself, which copies the images.

// alwaysIgnoredNamespaces are left alone whatever --ignore-namespaces says.
var alwaysIgnoredNamespaces = []string{"kube-system"}

// IgnoredNamespaces returns the namespaces that are never reconciled nor rewritten at admission: kube-system,
// the --ignore-namespaces values, and the controller's own namespace (ownNamespace, "" if unknown), each once.
// The flag adds to the list but cannot shorten it, so that the controller's own Deployment keeps its original images.
func IgnoredNamespaces(flagValue []string, ownNamespace string) []string {
	var ignored []string
	for _, ns := range slices.Concat(alwaysIgnoredNamespaces, flagValue, []string{ownNamespace}) {
		if ns != "" && !slices.Contains(ignored, ns) {
			ignored = append(ignored, ns)
		}
	}
	return ignored
}

// clusterIPField indexes Services by every cluster IP they have (spec.clusterIP and spec.clusterIPs), in the
// canonical form of netip.Addr.String, so that a backup registry addressed by IP finds its Service.
const clusterIPField = "spec.clusterIPs"

// backupServer identifies the in-cluster Service that the backup registry's host names, if any. Only the host
// matters: whichever port the registry is reached on, the Service's selector picks the pods that serve it.
type backupServer struct {
	// service is set when the host is a Service's DNS name: SVC.NS, SVC.NS.svc or SVC.NS.svc.<cluster domain>.
	service types.NamespacedName
	// clusterIP is set, canonical, when the host is an IP address that can be a Service's cluster IP.
	clusterIP string
}

// newBackupServer reads the registry host of backup. Hosts of neither form (public registries, localhost) give
// a backupServer that never reads anything.
func newBackupServer(backup imageref.Backup) backupServer {
	host := backup.Registry()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]") // an IPv6 address without port
	if ip, err := netip.ParseAddr(host); err == nil {
		// The API server never allocates these, so there is no Service to look for (and no reason to cache
		// Services): a loopback backup is one outside the cluster, as in tests.
		if ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast() {
			return backupServer{}
		}
		return backupServer{clusterIP: ip.String()}
	}
	// Cluster DNS resolves SVC.NS through the pods' search path, and SVC.NS.svc.<domain> whatever the cluster
	// domain is, so any domain after "svc" is accepted.
	dnsLabels := strings.Split(host, ".")
	if len(dnsLabels) != 2 && (len(dnsLabels) < 3 || dnsLabels[2] != "svc") {
		return backupServer{}
	}
	name, namespace := dnsLabels[0], dnsLabels[1]
	if len(validation.IsDNS1035Label(name)) > 0 || len(validation.IsDNS1123Label(namespace)) > 0 {
		return backupServer{} // no Service can have such a name
	}
	return backupServer{service: types.NamespacedName{Namespace: namespace, Name: name}}
}

// BackupService returns "namespace/name" of the backup registry's Service if that Service selects the pods of
// obj, whose pod template is template, and "" otherwise. It reads Services through c, the manager's cache; for
// a cluster IP host that cache needs the index of IndexBackupServices.
func BackupService(ctx context.Context, c client.Reader, backup imageref.Backup, obj client.Object, template *corev1.PodTemplateSpec) (string, error) {
	return newBackupServer(backup).serves(ctx, c, obj, template)
}

// serves is BackupService for the host s was read from.
//
// A Service without selector (EndpointSlices managed by hand) or of type ExternalName (a DNS alias of a name
// outside the cluster) selects no workload, so nothing is protected through it. The check runs at reconcile
// (and admission) time: a workload that was rewritten before its Service existed or selected it is not changed back.
func (s backupServer) serves(ctx context.Context, c client.Reader, obj client.Object, template *corev1.PodTemplateSpec) (string, error) {
	var candidates []corev1.Service
	switch {
	case s.service.Name != "":
		if s.service.Namespace != obj.GetNamespace() {
			return "", nil // a Service only selects pods of its own namespace; no need to read it
		}
		svc := &corev1.Service{}
		if err := c.Get(ctx, s.service, svc); err != nil {
			if apierrors.IsNotFound(err) {
				return "", nil
			}
			return "", fmt.Errorf("reading Service %s, which the backup registry's host names: %w", s.service, err)
		}
		candidates = []corev1.Service{*svc}
	case s.clusterIP != "":
		list := &corev1.ServiceList{}
		if err := c.List(ctx, list, client.InNamespace(obj.GetNamespace()),
			client.MatchingFields{clusterIPField: s.clusterIP}); err != nil {
			return "", fmt.Errorf("listing Services with the backup registry's cluster IP %s: %w", s.clusterIP, err)
		}
		candidates = list.Items
	default:
		return "", nil
	}
	for i := range candidates {
		if selects(&candidates[i], template) {
			return candidates[i].Namespace + "/" + candidates[i].Name, nil
		}
	}
	return "", nil
}

// selects reports whether svc sends traffic to pods created from template.
func selects(svc *corev1.Service, template *corev1.PodTemplateSpec) bool {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || len(svc.Spec.Selector) == 0 {
		return false // an empty selector selects no pods, not all of them
	}
	return labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(template.Labels))
}

// IndexBackupServices registers the index that BackupService needs on the manager's cache when the backup
// registry is addressed by a cluster IP. Registering an index makes the cache hold every Service of the cluster,
// so it is left out for other hosts; it is registered once per manager because every workload kind, and the
// admission webhook, share the manager's cache.
func IndexBackupServices(ctx context.Context, indexer client.FieldIndexer, backup imageref.Backup) error {
	if newBackupServer(backup).clusterIP == "" {
		return nil
	}
	if err := indexer.IndexField(ctx, &corev1.Service{}, clusterIPField, serviceClusterIPs); err != nil {
		return fmt.Errorf("indexing Services by cluster IP to find the backup registry's Service: %w", err)
	}
	return nil
}

// serviceClusterIPs extracts the clusterIPField values: every cluster IP of a Service in canonical form, none
// for headless ("None") and ExternalName Services.
func serviceClusterIPs(obj client.Object) []string {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil
	}
	var ips []string
	for _, s := range append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...) {
		if ip, err := netip.ParseAddr(s); err == nil && !slices.Contains(ips, ip.String()) {
			ips = append(ips, ip.String())
		}
	}
	return ips
}

// ReadsServices reports whether BackupService reads Services for backup: only a backup registry addressed by a
// Service's DNS name or a cluster IP can be served from inside the cluster.
func ReadsServices(backup imageref.Backup) bool {
	s := newBackupServer(backup)
	return s.service.Name != "" || s.clusterIP != ""
}
