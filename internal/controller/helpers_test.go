package controller_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/metricstest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

// gatedCopier wraps the real copier so that a spec can hold the copy of one image, e.g. to edit a workload
// while its copy is running, or have one image copied by a copier configured differently.
type gatedCopier struct {
	next controller.ImageCopier

	mu      sync.Mutex
	gates   map[string]chan struct{}
	waiting map[string]bool
	routes  map[string]controller.ImageCopier
}

func (g *gatedCopier) Copy(ctx context.Context, req registry.CopyRequest) (v1.Hash, error) {
	src := req.Source
	g.mu.Lock()
	gate := g.gates[src.String()]
	if gate != nil {
		g.waiting[src.String()] = true
	}
	next := g.next
	if route, ok := g.routes[src.String()]; ok {
		next = route
	}
	g.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return v1.Hash{}, ctx.Err()
		}
	}
	return next.Copy(ctx, req)
}

// Route has copies of image made by copier until the returned function is called.
func (g *gatedCopier) Route(image string, copier controller.ImageCopier) (undo func()) {
	src := mustMap(image).Source.String()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.routes == nil {
		g.routes = map[string]controller.ImageCopier{}
	}
	g.routes[src] = copier
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.routes, src)
	}
}

// Hold makes copies of image wait until the returned release function is called.
func (g *gatedCopier) Hold(image string) (release func()) {
	src := mustMap(image).Source.String()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates == nil {
		g.gates, g.waiting = map[string]chan struct{}{}, map[string]bool{}
	}
	ch := make(chan struct{})
	g.gates[src] = ch
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.gates, src)
		close(ch)
	}
}

// Waiting reports whether a copy of image is being held.
func (g *gatedCopier) Waiting(image string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting[mustMap(image).Source.String()]
}

func mustMap(image string) struct {
	Source name.Reference
	Backup string
} {
	m, err := backup.Map(image)
	Expect(err).NotTo(HaveOccurred())
	return struct {
		Source name.Reference
		Backup string
	}{m.Source, m.PodImage()}
}

// backupOf is the image string the controller is expected to write for image.
func backupOf(image string) string { return mustMap(image).Backup }

// unique returns prefix with a random suffix, so that specs never share images or workloads.
func unique(prefix string) string { return fmt.Sprintf("%s-%06d", prefix, rand.IntN(1_000_000)) }

// pushUpstream pushes a random two-platform image to the upstream registry at repoTag (as the mirror serves
// it, e.g. "library/web:1.0" for Docker Hub's "web:1.0") and returns its digest.
func pushUpstream(repoTag string) v1.Hash {
	GinkgoHelper()
	digest, err := upstream.PushIndex(repoTag, 2, 1024)
	Expect(err).NotTo(HaveOccurred())
	return digest
}

func newNamespace(annotations map[string]string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "spec-", Annotations: annotations}}
	Expect(k8sClient.Create(context.Background(), ns)).To(Succeed())
	return ns.Name
}

// newDeployment and newDaemonSet build workloads whose pods are labelled app=<name>.
var (
	newDeployment = workloadtest.Deployment
	newDaemonSet  = workloadtest.DaemonSet
)

// templateImages returns the init container images followed by the container images of a workload, read from
// the apiserver.
func templateImages(obj client.Object) func() []string {
	return func() []string {
		GinkgoHelper()
		images, err := workloadtest.TemplateImages(context.Background(), k8sClient, obj)
		Expect(err).NotTo(HaveOccurred())
		return images
	}
}

// eventsOf returns "Type Reason: note" for every event recorded about obj, as often as it happened.
func eventsOf(obj client.Object) func() []string {
	return func() []string {
		GinkgoHelper()
		events, err := workloadtest.Events(context.Background(), k8sClient, obj)
		Expect(err).NotTo(HaveOccurred())
		return events
	}
}

// counterValue reads a counter from controller-runtime's metrics registry (0 if it has no such series).
func counterValue(metric string, labels map[string]string) float64 {
	GinkgoHelper()
	samples, err := metricstest.Gather(metrics.Registry)
	Expect(err).NotTo(HaveOccurred())
	return samples.Sum(metric, labels)
}
