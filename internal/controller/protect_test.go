package controller_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/managertest"
	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// These specs run a manager of their own. The suite's backup registry is a real registry on 127.0.0.1, and no
// Service can be named by that host or have a loopback cluster IP, so the backup registry's own workload can only
// be exercised end to end with a backup host that names a Service: the spec's manager gets one, and a copier that
// only records what it is asked for and reports success (nothing listens behind the Service; what is under test
// is what gets patched, not the copy).
//
// Its workloads live in ignoredNamespace, which the suite's manager ignores, so that the suite's manager never
// tries to back up the images the spec's manager points workloads at. The spec's manager ignores only what a
// controller started with --ignore-namespaces="" does, and caches only the workloads labelled with the spec's
// id, so leftovers of other specs in that namespace stay out of its way. It reconciles with one worker per
// kind: once it runs (a first workload got patched), workloads of a kind created in the same namespace are
// reconciled in the order they were created, and a workload patched later proves that the ones created before
// it were reconciled, and left alone. (Workloads that exist when it starts are reconciled in no set order.)
var _ = Describe("protecting what the controller depends on", func() {
	ctx := context.Background()

	BeforeEach(func() {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ignoredNamespace}}
		Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx, ns))).To(Succeed())
	})

	It("never rewrites the Deployment behind a backup registry named by its Service's DNS name", func() {
		id, server := unique("protect"), unique("registry")
		Expect(k8sClient.Create(ctx, registryService(server))).To(Succeed())
		b, copier := startSpecManager(server+"."+ignoredNamespace+".svc.cluster.local:5000", "", id)
		warmUp(labelled(newDeployment(ignoredNamespace, unique("first"), nil, []string{unique("first") + ":1"}), id), b)

		serverImage, appImage := unique("registry")+":3", unique("app")+":1"
		registryDeployment := labelled(newDeployment(ignoredNamespace, server, nil, []string{serverImage}), id)
		Expect(k8sClient.Create(ctx, registryDeployment)).To(Succeed())
		// Same namespace, not selected by the Service.
		sentinel := labelled(newDeployment(ignoredNamespace, unique("app"), nil, []string{appImage}), id)
		Expect(k8sClient.Create(ctx, sentinel)).To(Succeed())

		Eventually(templateImages(sentinel)).Should(Equal([]string{podImage(b, appImage)}))
		Expect(templateImages(registryDeployment)()).To(Equal([]string{serverImage}))
		Expect(registryDeployment.Generation).To(BeEquivalentTo(1), "the registry's workload must never be patched")
		Expect(copier.Sources()).NotTo(ContainElement(ContainSubstring(serverImage)))
	})

	It("never rewrites the DaemonSet behind a backup registry addressed by its Service's cluster IP", func() {
		id, server := unique("protect"), unique("registry")
		svc := registryService(server)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		Expect(svc.Spec.ClusterIP).NotTo(BeEmpty(), "allocated from envtest's service CIDR")
		b, copier := startSpecManager(svc.Spec.ClusterIP+":5001", "", id)
		warmUp(labelled(newDaemonSet(ignoredNamespace, unique("first"), nil, []string{unique("first") + ":1"}), id), b)

		serverImage, appImage := unique("registry")+":3", unique("agent")+":1"
		registryDaemonSet := labelled(newDaemonSet(ignoredNamespace, server, nil, []string{serverImage}), id)
		Expect(k8sClient.Create(ctx, registryDaemonSet)).To(Succeed())
		sentinel := labelled(newDaemonSet(ignoredNamespace, unique("agent"), nil, []string{appImage}), id)
		Expect(k8sClient.Create(ctx, sentinel)).To(Succeed())

		Eventually(templateImages(sentinel)).Should(Equal([]string{podImage(b, appImage)}))
		Expect(templateImages(registryDaemonSet)()).To(Equal([]string{serverImage}))
		Expect(registryDaemonSet.Generation).To(BeEquivalentTo(1), "the registry's workload must never be patched")
		Expect(copier.Sources()).NotTo(ContainElement(ContainSubstring(serverImage)))
	})

	It("never rewrites a workload in the controller's own namespace, even with --ignore-namespaces empty", func() {
		// controllerNamespace is also ignored by the suite's manager, so only the spec's manager could patch it.
		own := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controllerNamespace}}
		Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx, own))).To(Succeed())
		id, selfImage, image := unique("protect"), unique("controller")+":1", unique("app")+":1"
		self := labelled(newDeployment(controllerNamespace, unique("image-clone-controller"), nil, []string{selfImage}), id)
		Expect(k8sClient.Create(ctx, self)).To(Succeed())

		b, copier := startSpecManager("backup.example.com/mirror", controllerNamespace, id)
		sentinel := labelled(newDeployment(ignoredNamespace, unique("app"), nil, []string{image}), id)
		Expect(k8sClient.Create(ctx, sentinel)).To(Succeed())

		Eventually(templateImages(sentinel)).Should(Equal([]string{podImage(b, image)}))
		// The two live in different namespaces, watched separately, so their order is not guaranteed; the
		// controller's own workload was in the cache before the manager started, though.
		Consistently(templateImages(self), "2s").Should(Equal([]string{selfImage}))
		Expect(self.Generation).To(BeEquivalentTo(1))
		Expect(copier.Sources()).NotTo(ContainElement(ContainSubstring(selfImage)))
	})
})

// These specs ask backupServer.serves, which tells a reconciler whether a workload is the backup registry's own,
// about Services of the envtest API server, read as the reconciler reads them: through a client backed by a
// cache that has the cluster IP index SetupWithManager registers. The workloads are never created: serves only
// reads their namespace and pod labels.
//
// Envtest's API server is single-stack (service CIDR 10.0.0.0/24), so no Service can have an IPv6 second cluster
// IP; TestNewBackupServer and TestServiceClusterIPs cover the canonical forms on both sides of that lookup.
var _ = Describe("finding the backup registry's Service", Ordered, ContinueOnFailure, func() {
	ctx := context.Background()
	registryPods := map[string]string{"app.kubernetes.io/name": "registry", "pod-template-hash": "x"}

	// vars holds what the fixture's names and cluster IPs turned out to be, for expand.
	var vars map[string]string
	// cached reads through the cache; the specs that inject faults wrap it.
	var cached client.WithWatch

	// expand replaces $REGISTRY, $REGISTRY_IP and the like in s with the fixture's values.
	expand := func(s string) string { return os.Expand(s, func(k string) string { return vars[k] }) }

	// serves asks whether the Service that backupHost names selects a workload in namespace ns whose pods are
	// labelled podLabels, reading through c.
	serves := func(c client.Reader, backupHost, ns string, podLabels map[string]string) (string, error) {
		GinkgoHelper()
		b, err := imageref.ParseBackup(expand(backupHost))
		Expect(err).NotTo(HaveOccurred())
		obj := newDeployment(expand(ns), "w", nil, []string{"app:1"})
		obj.Spec.Template.Labels = podLabels
		return workload.BackupService(ctx, c, b, obj, &obj.Spec.Template)
	}

	BeforeAll(func() {
		// $REGISTRY has the registry's Service, $MANUAL one without selector (EndpointSlices managed by hand),
		// $ALIAS an ExternalName one, and $OTHER none: all named "registry".
		vars = map[string]string{}
		for _, ns := range []string{"REGISTRY", "MANUAL", "ALIAS", "OTHER"} {
			vars[ns] = newNamespace(nil)
		}
		ports := []corev1.ServicePort{{Name: "registry", Port: 5000}}
		registrySvc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: vars["REGISTRY"], Name: "registry"},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app.kubernetes.io/name": "registry"}, Ports: ports},
		}
		noSelector := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: vars["MANUAL"], Name: "registry"},
			Spec:       corev1.ServiceSpec{Ports: ports},
		}
		external := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: vars["ALIAS"], Name: "registry"},
			Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeExternalName, ExternalName: "registry.example.com",
				Selector: map[string]string{"app.kubernetes.io/name": "registry"},
			},
		}
		for _, svc := range []*corev1.Service{registrySvc, noSelector, external} {
			Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		}
		// The API server allocates the cluster IPs from envtest's service CIDR.
		vars["REGISTRY_IP"], vars["MANUAL_IP"] = registrySvc.Spec.ClusterIP, noSelector.Spec.ClusterIP
		for _, ip := range []string{vars["REGISTRY_IP"], vars["MANUAL_IP"]} {
			addr, err := netip.ParseAddr(ip)
			Expect(err).NotTo(HaveOccurred(), "the API server allocates a cluster IP")
			Expect(serviceCIDR.Contains(addr)).To(BeTrue(), ip)
		}
		vars["FREE_IP"] = unallocatedClusterIP()

		// A cache like the manager's, with the index SetupWithManager registers for a backup registry addressed
		// by a cluster IP. Its Service informer starts after the Services exist, so its first list has them.
		informers, err := cache.New(restConfig, cache.Options{Scheme: scheme.Scheme})
		Expect(err).NotTo(HaveOccurred())
		b, err := imageref.ParseBackup(vars["REGISTRY_IP"] + ":5001")
		Expect(err).NotTo(HaveOccurred())
		Expect(workload.IndexBackupServices(ctx, informers, b)).To(Succeed())
		cacheCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(done)
			Expect(informers.Start(cacheCtx)).To(Succeed())
		}()
		DeferCleanup(func() {
			cancel()
			<-done
		})
		Expect(informers.WaitForCacheSync(ctx)).To(BeTrue())
		cached, err = client.NewWithWatch(restConfig, client.Options{Scheme: scheme.Scheme, Cache: &client.CacheOptions{Reader: informers}})
		Expect(err).NotTo(HaveOccurred())
	})

	DescribeTable("whether the Service selects the workload's pods",
		func(backupHost, ns string, podLabels map[string]string, want string) {
			Expect(serves(cached, backupHost, ns, podLabels)).To(Equal(expand(want)))
		},
		Entry("the Service's DNS name", "registry.$REGISTRY.svc:5000", "$REGISTRY", registryPods, "$REGISTRY/registry"),
		Entry("the Service's short DNS name", "registry.$REGISTRY:5000", "$REGISTRY", registryPods, "$REGISTRY/registry"),
		Entry("the Service's DNS name with the cluster domain", "registry.$REGISTRY.svc.cluster.local:5000", "$REGISTRY",
			registryPods, "$REGISTRY/registry"),
		Entry("the Service's cluster IP", "$REGISTRY_IP:5001", "$REGISTRY", registryPods, "$REGISTRY/registry"),
		Entry("the Service's cluster IP, no port", "$REGISTRY_IP/backup", "$REGISTRY", registryPods, "$REGISTRY/registry"),
		Entry("other pods of the namespace", "registry.$REGISTRY.svc:5000", "$REGISTRY", map[string]string{"app": "ui"}, ""),
		Entry("other pods of the namespace, by cluster IP", "$REGISTRY_IP:5001", "$REGISTRY", map[string]string{"app": "ui"}, ""),
		Entry("a workload without pod labels", "$REGISTRY_IP:5001", "$REGISTRY", nil, ""),
		Entry("the same labels in another namespace", "registry.$REGISTRY.svc:5000", "$OTHER", registryPods, ""),
		Entry("the same labels in another namespace, by cluster IP", "$REGISTRY_IP:5001", "$OTHER", registryPods, ""),
		Entry("a Service without selector", "registry.$MANUAL.svc:5000", "$MANUAL", registryPods, ""),
		Entry("a Service without selector, by cluster IP", "$MANUAL_IP:5001", "$MANUAL", registryPods, ""),
		Entry("an ExternalName Service", "registry.$ALIAS.svc:5000", "$ALIAS", registryPods, ""),
		Entry("no such Service", "registry.$OTHER.svc:5000", "$OTHER", registryPods, ""),
		Entry("a cluster IP no Service has", "$FREE_IP:5001", "$REGISTRY", registryPods, ""),
		Entry("a public registry", "registry.example.com", "$REGISTRY", registryPods, ""),
	)

	It("reads no Service for hosts that cannot name one, or that name one of another namespace", func() {
		reads := 0
		counting := interceptor.NewClient(cached, interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				reads++
				return c.Get(ctx, key, obj, opts...)
			},
			List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				reads++
				return c.List(ctx, list, opts...)
			},
		})
		for _, host := range []string{
			"registry.example.com", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "169.254.1.1:5000",
			"registry.$REGISTRY.svc:5000", // a Service only selects pods of its own namespace
		} {
			Expect(serves(counting, host, "$OTHER", registryPods)).To(BeEmpty(), host)
		}
		Expect(reads).To(BeZero())

		// The counter sees reads: the same Service, asked about a workload of its own namespace, is read once.
		Expect(serves(counting, "registry.$REGISTRY.svc:5000", "$REGISTRY", registryPods)).To(Equal(expand("$REGISTRY/registry")))
		Expect(reads).To(Equal(1))
	})

	DescribeTable("reports read errors, so that the workload is retried rather than rewritten",
		func(backupHost string, funcs interceptor.Funcs) {
			failing := interceptor.NewClient(cached, funcs)
			service, err := serves(failing, backupHost, "$REGISTRY", registryPods)
			Expect(err).To(MatchError(errCacheStopped))
			Expect(service).To(BeEmpty())
		},
		Entry("failing Get, for a DNS name", "registry.$REGISTRY.svc:5000", interceptor.Funcs{
			Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
				return errCacheStopped
			},
		}),
		Entry("failing List, for a cluster IP", "$REGISTRY_IP:5001", interceptor.Funcs{
			List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
				return errCacheStopped
			},
		}),
	)
})

// errCacheStopped is the read error injected into a real client.
var errCacheStopped = errors.New("cache stopped")

// serviceCIDR is the range envtest's API server allocates cluster IPs from.
var serviceCIDR = netip.MustParsePrefix("10.0.0.0/24")

// unallocatedClusterIP returns an address of serviceCIDR that no Service has.
func unallocatedClusterIP() string {
	GinkgoHelper()
	services := &corev1.ServiceList{}
	Expect(k8sClient.List(context.Background(), services)).To(Succeed())
	taken := map[string]bool{}
	for _, svc := range services.Items {
		for _, ip := range append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...) {
			taken[ip] = true
		}
	}
	// Skips the network's address, the kubernetes Service's (the first one after it) and the broadcast address.
	for ip := serviceCIDR.Addr().Next().Next(); serviceCIDR.Contains(ip.Next()); ip = ip.Next() {
		if !taken[ip.String()] {
			return ip.String()
		}
	}
	Fail("every address of the service CIDR is allocated")
	return ""
}

// warmUp creates obj, whose one image is external, and waits until the spec's manager, backing up to b, has
// patched it: from then on, that kind's workloads in obj's namespace are reconciled in the order of creation.
func warmUp(obj client.Object, b imageref.Backup) {
	GinkgoHelper()
	Expect(k8sClient.Create(context.Background(), obj)).To(Succeed())
	Eventually(templateImages(obj)).Should(HaveExactElements(HavePrefix(b.String() + "/")))
}

// specLabel marks the workloads of one spec, the only ones its manager caches.
const specLabel = "image-clone-controller.io/spec"

// startSpecManager starts a manager that backs up to backupHost (through a recordingCopier) and ignores only
// kube-system and ownNamespace, as a controller deployed in ownNamespace with --ignore-namespaces="" would. It
// sees ignoredNamespace and ownNamespace, and of their workloads only those labelled specLabel=id.
func startSpecManager(backupHost, ownNamespace, id string) (imageref.Backup, *recordingCopier) {
	GinkgoHelper()
	b, err := imageref.ParseBackup(backupHost)
	Expect(err).NotTo(HaveOccurred())
	copier := &recordingCopier{}
	startSpecManagerWith(restConfig, copier, controller.Options{
		Backup:                  b,
		IgnoredNamespaces:       workload.IgnoredNamespaces(nil, ownNamespace),
		MaxConcurrentReconciles: 1,
		MaxConcurrentImages:     1,
	}, ownNamespace, id)
	return b, copier
}

// startSpecManagerWith is startSpecManager with a rest config, a copier and options of the caller's.
func startSpecManagerWith(cfg *rest.Config, copier controller.ImageCopier, opts controller.Options, ownNamespace, id string) {
	GinkgoHelper()
	namespaces := map[string]cache.Config{ignoredNamespace: {}}
	if ownNamespace != "" {
		namespaces[ownNamespace] = cache.Config{}
	}
	specWorkloads := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{specLabel: id})}
	// Namespaces are cluster-scoped, so DefaultNamespaces does not narrow them; the Namespace watch would list
	// the workloads of every namespace, which this cache cannot. Only ignoredNamespace's workloads get as far as
	// reading their Namespace (the others are ignored).
	specNamespace := cache.ByObject{Field: fields.OneTermEqualSelector("metadata.name", ignoredNamespace)}
	skipNameValidation := true // the suite's manager runs controllers of the same names
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: &skipNameValidation},
		Cache: cache.Options{
			DefaultNamespaces: namespaces,
			ByObject: map[client.Object]cache.ByObject{
				&appsv1.Deployment{}: specWorkloads, &appsv1.DaemonSet{}: specWorkloads, &corev1.Namespace{}: specNamespace,
			},
		},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(controller.SetupWithManager(mgr, copier, opts)).To(Succeed())

	stop := managertest.Start(mgr)
	DeferCleanup(func() { Expect(stop()).To(Succeed()) })
}

// registryService returns a Service in ignoredNamespace named app that selects the pods of the workload named
// app (workloadtest labels them app=<name>), with a cluster IP allocated by the API server.
func registryService(app string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ignoredNamespace, Name: app},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": app},
			Ports:    []corev1.ServicePort{{Name: "registry", Port: 5000}},
		},
	}
}

// labelled puts obj in the spec whose manager caches workloads labelled specLabel=id.
func labelled[T client.Object](obj T, id string) T {
	obj.SetLabels(map[string]string{specLabel: id})
	return obj
}

// podImage is the image string a controller backing up to b writes for image.
func podImage(b imageref.Backup, image string) string {
	GinkgoHelper()
	m, err := b.Map(image)
	Expect(err).NotTo(HaveOccurred())
	return m.PodImage()
}

// recordingCopier records the sources it is asked to copy and reports every copy as done, at a fixed digest.
type recordingCopier struct {
	mu      sync.Mutex
	sources []string
}

func (c *recordingCopier) Copy(_ context.Context, req registry.CopyRequest) (v1.Hash, error) {
	src := req.Source
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources = append(c.sources, src.String())
	return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}, nil
}

// Sources returns the sources copied so far.
func (c *recordingCopier) Sources() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sources)
}
