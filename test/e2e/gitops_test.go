//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/normalize"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

// The specs here are about the admission webhook as GitOps tools meet it: they apply the public image again and
// again, and the cluster must neither roll the workload back to it nor roll it out anew.

// settle is how long a spec watches that nothing more happens to a workload: the reconciler reacts to an
// update within a second or two, even on a slow machine.
const settle = 5 * time.Second

// revisionAnnotation is the rollout revision the Deployment controller keeps on a Deployment.
const revisionAnnotation = "deployment.kubernetes.io/revision"

var _ = Describe("GitOps tools", func() {
	ctx := context.Background()

	It("a Deployment re-applied by a GitOps tool keeps its copies and rolls out once", func() {
		ns := newNamespace()
		_, image, backupImage, _ := pushRandomImage("gitops")
		manifest := gitopsManifest(ns, "app", image)
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}}
		history := recordReplicaSets(ns)

		By("creating it with a forced server-side apply, as kustomize-controller does, before the image has a copy")
		serverSideApply(manifest, "kustomize-controller")
		Eventually(templateImages(d)).Should(Equal([]string{backupImage}), "the controller points it at the copy")
		Eventually(deploymentRolledOut(d)).Should(Succeed())
		template := d.Spec.Template.DeepCopy()
		revision := d.Annotations[revisionAnnotation]
		// The ReplicaSet of the public image exists if the Deployment controller was quicker than the copy; it
		// was scaled to zero by the rollout.
		before := history.synced(d)
		Expect(onImage(before, backupImage)).To(HaveLen(1), "one ReplicaSet on the copy")
		for _, rs := range before {
			if !slices.Equal(rs.images, []string{backupImage}) {
				Expect(rs.images).To(Equal([]string{image}))
				Expect(rs.replicas).To(BeZero(), "the ReplicaSet of the public image is scaled to zero")
			}
		}
		mark := history.mark()

		// Each tool applies exactly the manifest it created the Deployment from, public image included.
		reapplies := []struct {
			how   string
			apply func()
		}{
			{"a forced server-side apply by another field manager", func() { serverSideApply(manifest, "argocd-controller") }},
			{"Flux's own apply, which sees no drift", func() {
				Expect(fluxApply(manifest)).To(Equal(ssa.UnchangedAction), "the dry-run already returns the copy")
			}},
			{"a client-side kubectl apply", func() { kubectl(manifest, "apply", "-f", "-") }},
			{"a forced server-side apply after the client-side one", func() { serverSideApply(manifest, "argocd-controller") }},
			{"Flux's own apply, taking over the fields kubectl owned", func() { fluxApply(manifest) }},
		}
		for _, r := range reapplies {
			By("re-applying the manifest with " + r.how)
			previous := d.DeepCopy()
			r.apply()
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
			Expect(d.Spec.Template).To(Equal(*template), "the re-apply changed the pod template")
			Expect(d.Annotations).To(HaveKeyWithValue(revisionAnnotation, revision), "the re-apply rolled the Deployment out")
			// The API server counts a change of a Deployment's annotations (kubectl's last-applied-configuration,
			// which the later applies rewrite and Flux removes) as a new generation; nothing else may make one.
			if maps.Equal(d.Annotations, previous.Annotations) {
				Expect(d.Generation).To(Equal(previous.Generation), "the re-apply changed the Deployment's spec")
			}
		}

		By("changing nothing afterwards either: no patch, no ReplicaSet")
		generation := d.Generation
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
			g.Expect(d.Generation).To(Equal(generation))
			g.Expect(uids(replicaSets(g, d))).To(ConsistOf(uids(before)))
		}).WithTimeout(settle).Should(Succeed())
		Eventually(deploymentRolledOut(d)).Should(Succeed())
		Expect(onImage(replicaSets(Default, d), backupImage)).To(HaveLen(1), "exactly one ReplicaSet on the copy")
		Expect(history.createdSince(mark, d)).To(BeEmpty(), "no ReplicaSet came and went")

		By("restarting the rollout, which rolls out a new ReplicaSet by design, on the copy")
		kubectl("", "rollout", "restart", "-n", ns, "deployment/app")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
			g.Expect(d.Generation).To(Equal(generation + 1))
		}).Should(Succeed())
		Eventually(deploymentRolledOut(d)).Should(Succeed())
		Expect(templateImages(d)()).To(Equal([]string{backupImage}))
		Eventually(func(g Gomega) {
			created := history.createdSince(mark, d)
			g.Expect(created).To(HaveLen(1), "one new ReplicaSet")
			g.Expect(created[0].images).To(Equal([]string{backupImage}))
		}).Should(Succeed())
		Eventually(podImages(ns, d.Spec.Selector.MatchLabels)).Should(And(HaveLen(2), HaveEach(Equal([]string{backupImage}))))

		By("never having run a ReplicaSet of the public image since the first rollout")
		history.synced(d)
		Expect(history.scaledUpSince(mark, d, image)).To(BeEmpty())
	})

	It("a new Deployment whose image is already backed up has one ReplicaSet, on the backup image, from its first revision", func() {
		ns := newNamespace()
		_, image, backupImage, _ := pushRandomImage("backed-up")
		history := recordReplicaSets(ns)

		By("backing up the image for a first Deployment")
		first := newDeployment(ns, "first", nil, []string{image})
		Expect(k8sClient.Create(ctx, first)).To(Succeed())
		Eventually(templateImages(first)).Should(Equal([]string{backupImage}))

		By("creating a second Deployment with the public image: stored on the copy")
		second := gitopsDeployment(ns, "second", image)
		Expect(k8sClient.Create(ctx, second)).To(Succeed())
		Expect(workloadtest.ContainerImages(second.Spec.Template.Spec)).To(Equal([]string{backupImage}),
			"the webhook rewrote it before it was stored")
		Expect(second.Generation).To(BeEquivalentTo(1))

		By("rolling it out once, on the copy")
		Eventually(deploymentRolledOut(second)).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(second), second)).To(Succeed())
			g.Expect(second.Generation).To(BeEquivalentTo(1), "the reconciler had nothing to patch")
		}).WithTimeout(settle).Should(Succeed())
		sets := history.synced(second)
		Expect(sets).To(HaveLen(1), "exactly one ReplicaSet")
		Expect(sets[0].images).To(Equal([]string{backupImage}))
		Expect(history.all(second)).To(HaveLen(1), "no other ReplicaSet ever existed")
		Eventually(podImages(ns, second.Spec.Selector.MatchLabels)).Should(And(HaveLen(2), HaveEach(Equal([]string{backupImage}))))
	})
})

var _ = Describe("the admission webhook", func() {
	It("is served with a certificate the API server trusts, by a ready controller", func(ctx SpecContext) {
		config := &admissionregistrationv1.MutatingWebhookConfiguration{}
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "image-clone-controller"}, config)).To(Succeed())
			g.Expect(config.Webhooks).To(HaveLen(1))
			g.Expect(config.Webhooks[0].ClientConfig.CABundle).NotTo(BeEmpty(), "the controller injects its CA")
		}).Should(Succeed())
		hook := config.Webhooks[0]
		Expect(hook.ClientConfig.URL).To(HaveValue(Equal("https://" + webhookHost + "/mutate-workloads")))
		Expect(hook.FailurePolicy).To(HaveValue(Equal(admissionregistrationv1.Ignore)))

		By("handshaking as the API server does: verifying the serving certificate against the CA bundle")
		roots := x509.NewCertPool()
		Expect(roots.AppendCertsFromPEM(hook.ClientConfig.CABundle)).To(BeTrue(), "the CA bundle is PEM")
		dialer := &tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
		Eventually(func() error {
			conn, err := dialer.DialContext(ctx, "tcp", webhookHost)
			if err != nil {
				return err
			}
			return conn.Close()
		}).Should(Succeed())

		By("reporting the webhook ready on /readyz")
		for _, path := range []string{"/readyz", "/readyz/webhook"} {
			Eventually(func() (int, error) {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, probeURL+path, nil)
				if err != nil {
					return 0, err
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return 0, err
				}
				defer resp.Body.Close()
				return resp.StatusCode, nil
			}).Should(Equal(http.StatusOK), path)
		}
	})
})

// gitopsManifest is the YAML of a Deployment with two replicas of one container running image, as a GitOps
// repository holds it. It carries the owner labels Flux sets, so that every tool applies the same object.
func gitopsManifest(ns, name, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[2]s
  namespace: %[1]s
  labels:
    app: %[2]s
    kustomize.toolkit.fluxcd.io/name: apps
    kustomize.toolkit.fluxcd.io/namespace: flux-system
spec:
  replicas: 2
  selector:
    matchLabels:
      app: %[2]s
  template:
    metadata:
      labels:
        app: %[2]s
    spec:
      containers:
      - name: app
        image: %[3]s
`, ns, name, image)
}

// gitopsDeployment is the Deployment of gitopsManifest.
func gitopsDeployment(ns, name, image string) *appsv1.Deployment {
	GinkgoHelper()
	d := &appsv1.Deployment{}
	u := manifestObjects(gitopsManifest(ns, name, image))[0]
	Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, d)).To(Succeed())
	return d
}

func manifestObjects(manifest string) []*unstructured.Unstructured {
	GinkgoHelper()
	objects, err := ssautils.ReadObjects(strings.NewReader(manifest))
	Expect(err).NotTo(HaveOccurred())
	Expect(objects).To(HaveLen(1))
	return objects
}

// serverSideApply applies manifest as fieldManager with a forced server-side apply, as Argo CD and
// kustomize-controller do.
func serverSideApply(manifest, fieldManager string) {
	GinkgoHelper()
	u := manifestObjects(manifest)[0]
	Expect(k8sClient.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(fieldManager), client.ForceOwnership)).To(Succeed())
}

// fluxApply applies manifest with Flux's server-side apply engine as kustomize-controller sets it up: a
// dry-run to detect drift, then a forced apply only if the object drifted, after taking over the fields that
// kubectl and the controller's own updates manage. It returns what Flux did to the object.
func fluxApply(manifest string) ssa.Action {
	GinkgoHelper()
	objects := manifestObjects(manifest)
	manager := ssa.NewResourceManager(k8sClient, nil, ssa.Owner{Field: "kustomize-controller", Group: "kustomize.toolkit.fluxcd.io"})
	manager.SetOwnerLabels(objects, "apps", "flux-system")
	Expect(normalize.UnstructuredList(objects)).To(Succeed())
	opts := ssa.DefaultApplyOptions()
	opts.Force = true
	opts.Cleanup = ssa.ApplyCleanupOptions{
		Annotations: []string{corev1.LastAppliedConfigAnnotation},
		FieldManagers: []ssa.FieldManager{
			{Name: "kubectl", OperationType: metav1.ManagedFieldsOperationApply},
			{Name: "kubectl", OperationType: metav1.ManagedFieldsOperationUpdate},
			{Name: "before-first-apply", OperationType: metav1.ManagedFieldsOperationUpdate},
			{Name: "kustomize-controller", OperationType: metav1.ManagedFieldsOperationUpdate},
		},
	}
	changes, err := manager.ApplyAllStaged(context.Background(), objects, opts)
	Expect(err).NotTo(HaveOccurred())
	Expect(changes.Entries).To(HaveLen(1))
	GinkgoWriter.Println("Flux:", changes.Entries[0].String())
	return changes.Entries[0].Action
}

// kubectl runs kubectl against the local cluster with stdin as its input.
func kubectl(stdin string, args ...string) {
	GinkgoHelper()
	cmd := exec.CommandContext(context.Background(), "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	GinkgoWriter.Printf("kubectl %s: %s", strings.Join(args, " "), out)
	Expect(err).NotTo(HaveOccurred(), string(out))
}

// replicaSet is one version of a ReplicaSet as the API server reported it.
type replicaSet struct {
	uid             types.UID
	name            string
	resourceVersion string
	labels          map[string]string
	images          []string
	replicas        int32
	seq             int
}

func replicaSetOf(rs *appsv1.ReplicaSet) replicaSet {
	var replicas int32 = 1
	if rs.Spec.Replicas != nil {
		replicas = *rs.Spec.Replicas
	}
	return replicaSet{uid: rs.UID, name: rs.Name, resourceVersion: rs.ResourceVersion, labels: rs.Labels,
		images: workloadtest.ContainerImages(rs.Spec.Template.Spec), replicas: replicas}
}

// replicaSets lists the ReplicaSets of d.
func replicaSets(g Gomega, d *appsv1.Deployment) []replicaSet {
	list := &appsv1.ReplicaSetList{}
	g.Expect(k8sClient.List(context.Background(), list, client.InNamespace(d.Namespace),
		client.MatchingLabels(d.Spec.Selector.MatchLabels))).To(Succeed())
	out := make([]replicaSet, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, replicaSetOf(&list.Items[i]))
	}
	return out
}

func onImage(sets []replicaSet, image string) []replicaSet {
	var out []replicaSet
	for _, rs := range sets {
		if slices.Equal(rs.images, []string{image}) {
			out = append(out, rs)
		}
	}
	return out
}

func uids(sets []replicaSet) []types.UID {
	out := make([]types.UID, 0, len(sets))
	for _, rs := range sets {
		out = append(out, rs.uid)
	}
	return out
}

// replicaSetHistory is every version of the ReplicaSets of a namespace that a watch saw, so that a spec can
// tell a ReplicaSet that came and went, or was scaled up and down again, between two of its looks.
type replicaSetHistory struct {
	mu       sync.Mutex
	versions []replicaSet
}

// recordReplicaSets watches the ReplicaSets of ns until the spec ends.
func recordReplicaSets(ns string) *replicaSetHistory {
	GinkgoHelper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	c, err := cache.New(cfg, cache.Options{Scheme: scheme.Scheme, DefaultNamespaces: map[string]cache.Config{ns: {}}})
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	DeferCleanup(cancel)
	informer, err := c.GetInformer(ctx, &appsv1.ReplicaSet{})
	Expect(err).NotTo(HaveOccurred())
	h := &replicaSetHistory{}
	_, err = informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    h.add,
		UpdateFunc: func(_, obj any) { h.add(obj) },
	})
	Expect(err).NotTo(HaveOccurred())
	go func() {
		defer GinkgoRecover()
		Expect(c.Start(ctx)).To(Succeed())
	}()
	Expect(c.WaitForCacheSync(ctx)).To(BeTrue())
	return h
}

func (h *replicaSetHistory) add(obj any) {
	rs, ok := obj.(*appsv1.ReplicaSet)
	if !ok {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v := replicaSetOf(rs)
	v.seq = len(h.versions)
	h.versions = append(h.versions, v)
}

// mark returns a point in the history: the versions seen from now on are after it.
func (h *replicaSetHistory) mark() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.versions)
}

func (h *replicaSetHistory) of(d *appsv1.Deployment, since int) []replicaSet {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []replicaSet
	for _, v := range h.versions[since:] {
		if matches(v.labels, d.Spec.Selector.MatchLabels) {
			out = append(out, v)
		}
	}
	return out
}

// synced waits until the history has seen the ReplicaSets of d as they are now and returns them.
func (h *replicaSetHistory) synced(d *appsv1.Deployment) []replicaSet {
	GinkgoHelper()
	var now []replicaSet
	Eventually(func(g Gomega) {
		now = replicaSets(g, d)
		seen := map[string]bool{}
		for _, v := range h.of(d, 0) {
			seen[v.resourceVersion] = true
		}
		for _, rs := range now {
			g.Expect(seen).To(HaveKey(rs.resourceVersion), "the watch has not seen "+rs.name+" yet")
		}
	}).Should(Succeed())
	return now
}

// all returns the latest version of every ReplicaSet of d the history saw.
func (h *replicaSetHistory) all(d *appsv1.Deployment) []replicaSet {
	latest := map[types.UID]replicaSet{}
	for _, v := range h.of(d, 0) {
		latest[v.uid] = v
	}
	out := make([]replicaSet, 0, len(latest))
	for _, v := range latest {
		out = append(out, v)
	}
	return out
}

// createdSince returns the ReplicaSets of d first seen after mark, each in its first version.
func (h *replicaSetHistory) createdSince(mark int, d *appsv1.Deployment) []replicaSet {
	known := map[types.UID]bool{}
	for _, v := range h.of(d, 0) {
		if v.seq < mark {
			known[v.uid] = true
		}
	}
	var out []replicaSet
	for _, v := range h.of(d, mark) {
		if !known[v.uid] {
			known[v.uid] = true
			out = append(out, v)
		}
	}
	return out
}

// scaledUpSince returns the versions after mark of ReplicaSets of d on image that wanted pods.
func (h *replicaSetHistory) scaledUpSince(mark int, d *appsv1.Deployment, image string) []string {
	var out []string
	for _, v := range h.of(d, mark) {
		if slices.Contains(v.images, image) && v.replicas > 0 {
			out = append(out, fmt.Sprintf("%s (resourceVersion %s, %d replicas)", v.name, v.resourceVersion, v.replicas))
		}
	}
	return out
}

func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
