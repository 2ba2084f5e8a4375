package controller_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/controller"
	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/workloadtest"
)

// dockerConfigSecret returns a kubernetes.io/dockerconfigjson Secret with user:pass for host.
func dockerConfigSecret(namespace, name, host, user, pass string) *corev1.Secret {
	GinkgoHelper()
	secret, err := workloadtest.DockerConfigSecret(namespace, name, host, user, pass)
	Expect(err).NotTo(HaveOccurred())
	return secret
}

// pullSecretsOf returns the names of the pull secrets of a Deployment's pod template, read from the apiserver.
func pullSecretsOf(d *appsv1.Deployment) func() []string {
	return func() []string {
		GinkgoHelper()
		Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(d), d)).To(Succeed())
		var names []string
		for _, ref := range d.Spec.Template.Spec.ImagePullSecrets {
			names = append(names, ref.Name)
		}
		return names
	}
}

var _ = Describe("pull secrets", func() {
	ctx := context.Background()

	Describe("pulling sources with the workload's own credentials", func() {
		var private string // host:port of the upstream registry behind basic authentication
		var image, pinned string

		BeforeEach(func() {
			proxy := registrytest.Front(upstream.Host, registrytest.BasicAuth("tenant", "tenant-pass"))
			DeferCleanup(proxy.Close)
			private = proxy.Host
			repoTag := "private/" + unique("app") + ":v1"
			digest := pushUpstream(repoTag)
			image = private + "/" + repoTag
			pinned = image[:len(image)-len(":v1")] + "@" + digest.String()
		})

		It("backs up a private image for a workload whose imagePullSecrets can pull it, and for no other", func() {
			ns := newNamespace(nil)
			Expect(k8sClient.Create(ctx, dockerConfigSecret(ns, "regcred", private, "tenant", "tenant-pass"))).To(Succeed())
			allowed := newDeployment(ns, "allowed", nil, []string{image, pinned})
			allowed.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
			Expect(k8sClient.Create(ctx, allowed)).To(Succeed())
			Eventually(templateImages(allowed)).Should(Equal([]string{backupOf(image), backupOf(pinned)}))

			By("refusing a workload in another namespace without credentials, though the copy exists")
			other := newNamespace(nil)
			stranger := newDeployment(other, "stranger", nil, []string{image, pinned})
			Expect(k8sClient.Create(ctx, stranger)).To(Succeed())
			Eventually(eventsOf(stranger)).Should(ContainElement(And(
				HavePrefix("Warning "+controller.ReasonBackupFailed), ContainSubstring("denied access"),
				ContainSubstring(image), ContainSubstring(pinned))))
			Expect(templateImages(stranger)()).To(Equal([]string{image, pinned}))
			Expect(stranger.Generation).To(BeEquivalentTo(1), "never patched")

			By("refusing credentials for the registry that are wrong")
			Expect(k8sClient.Create(ctx, dockerConfigSecret(other, "wrong", private, "tenant", "guessed"))).To(Succeed())
			guesser := newDeployment(other, "guesser", nil, []string{image})
			guesser.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "wrong"}, {Name: "missing"}}
			Expect(k8sClient.Create(ctx, guesser)).To(Succeed())
			Eventually(eventsOf(guesser)).Should(ContainElement(And(
				HavePrefix("Warning "+controller.ReasonBackupFailed), ContainSubstring("denied access"),
				ContainSubstring("Pull secrets not used: missing (not found)"))))
			Expect(templateImages(guesser)()).To(Equal([]string{image}))
		})

		It("hands a copy, through the backup pull secret, only to a workload whose credentials can read its source", func() {
			ns := newNamespace(nil)
			Expect(k8sClient.Create(ctx, dockerConfigSecret(ns, "regcred", private, "tenant", "tenant-pass"))).To(Succeed())
			owner := newDeployment(ns, "owner", nil, []string{image})
			owner.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
			Expect(k8sClient.Create(ctx, owner)).To(Succeed())
			Eventually(templateImages(owner)).Should(Equal([]string{backupOf(image)}))

			By("refusing a workload of another tenant that names the copy itself")
			other := newNamespace(nil)
			stranger := newDeployment(other, "stranger", nil, []string{backupOf(image)})
			Expect(k8sClient.Create(ctx, stranger)).To(Succeed())
			Eventually(eventsOf(stranger)).Should(ContainElement(And(
				HavePrefix("Warning "+controller.ReasonBackupFailed), ContainSubstring("denied access"))))
			Expect(pullSecretsOf(stranger)()).To(BeEmpty(), "no backup pull secret for a copy it cannot prove access to")
			Expect(stranger.Generation).To(BeEquivalentTo(1), "never patched")
			secret := &corev1.Secret{}
			Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: other, Name: backupPullSecret}, secret))).
				To(BeTrue(), "the backup pull secret is not copied into the stranger's namespace")

			By("adding it for a workload of the owner's namespace that names the copy and can read the source")
			friend := newDeployment(ns, "friend", nil, []string{backupOf(image)})
			friend.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
			Expect(k8sClient.Create(ctx, friend)).To(Succeed())
			Eventually(pullSecretsOf(friend)).Should(Equal([]string{"regcred", backupPullSecret}))
		})

		It("uses the pull secrets of the workload's ServiceAccount", func() {
			ns := newNamespace(nil)
			Expect(k8sClient.Create(ctx, dockerConfigSecret(ns, "sa-regcred", private, "tenant", "tenant-pass"))).To(Succeed())
			Expect(k8sClient.Create(ctx, &corev1.ServiceAccount{
				ObjectMeta:       metav1.ObjectMeta{Namespace: ns, Name: "builder"},
				ImagePullSecrets: []corev1.LocalObjectReference{{Name: "sa-regcred"}},
			})).To(Succeed())
			d := newDeployment(ns, "via-sa", nil, []string{image})
			d.Spec.Template.Spec.ServiceAccountName = "builder"
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
		})
	})

	Describe("providing the backup pull secret", func() {
		It("copies the secret into the namespace and adds it to the pod template", func() {
			image := unique("public") + ":1"
			pushUpstream("library/" + image)
			ns := newNamespace(nil)
			d := newDeployment(ns, "app", nil, []string{image})
			d.Spec.Template.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "own-regcred"}}
			Expect(k8sClient.Create(ctx, d)).To(Succeed())

			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
			Expect(pullSecretsOf(d)()).To(Equal([]string{"own-regcred", backupPullSecret}), "appended, the workload's own kept")
			Expect(d.Generation).To(BeEquivalentTo(2), "images and secret in one patch")

			source, copied := &corev1.Secret{}, &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: controllerNamespace, Name: backupPullSecret}, source)).To(Succeed())
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: backupPullSecret}, copied)).To(Succeed())
			Expect(copied.Type).To(Equal(corev1.SecretTypeDockerConfigJson))
			Expect(copied.Data).To(Equal(source.Data))
			Expect(copied.Labels).To(HaveKeyWithValue(controller.ManagedByLabel, "image-clone-controller"))
		})

		It("brings a rotated or deleted copy back in line when a workload of the namespace is reconciled", func() {
			image := unique("public") + ":1"
			pushUpstream("library/" + image)
			ns := newNamespace(nil)
			d := newDeployment(ns, "app", nil, []string{image})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
			copied := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: backupPullSecret}, copied)).To(Succeed())

			By("rotating the source")
			source := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: controllerNamespace, Name: backupPullSecret}, source)).To(Succeed())
			original := source.Data
			source.Data = dockerConfigSecret("", "", backupReg.Host, "reader", "rotated-pass").Data
			Expect(k8sClient.Update(ctx, source)).To(Succeed())
			DeferCleanup(func() {
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(source), source)).To(Succeed())
				source.Data = original
				Expect(k8sClient.Update(ctx, source)).To(Succeed())
			})
			touch := func(value string) {
				GinkgoHelper()
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
				d.Annotations = map[string]string{"example.com/touched": value}
				Expect(k8sClient.Update(ctx, d)).To(Succeed())
			}
			touch("1")
			Eventually(func() map[string][]byte {
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(copied), copied)).To(Succeed())
				return copied.Data
			}).Should(Equal(source.Data))

			By("deleting the copy")
			Expect(k8sClient.Delete(ctx, copied)).To(Succeed())
			touch("2")
			Eventually(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(copied), &corev1.Secret{}) }).Should(Succeed())
		})

		It("keeps a Secret of that name that the operator provided", func() {
			image := unique("public") + ":1"
			pushUpstream("library/" + image)
			ns := newNamespace(nil)
			own := dockerConfigSecret(ns, backupPullSecret, backupReg.Host, "namespace-reader", "own-pass")
			Expect(k8sClient.Create(ctx, own)).To(Succeed())
			d := newDeployment(ns, "app", nil, []string{image})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())

			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
			Expect(pullSecretsOf(d)()).To(Equal([]string{backupPullSecret}))
			kept := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(own), kept)).To(Succeed())
			Expect(kept.Data).To(Equal(own.Data))
		})

		It("adds the secret to a workload that already runs from the backup", func() {
			image := unique("public") + ":1"
			pushUpstream("library/" + image)
			// Backed up before the pull secret was configured: the copy exists, the template lacks the secret.
			ns := newNamespace(nil)
			first := newDeployment(ns, "first", nil, []string{image})
			Expect(k8sClient.Create(ctx, first)).To(Succeed())
			Eventually(templateImages(first)).Should(Equal([]string{backupOf(image)}))

			d := newDeployment(ns, "already", nil, []string{backupOf(image)})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Eventually(pullSecretsOf(d)).Should(Equal([]string{backupPullSecret}))
			Expect(templateImages(d)()).To(Equal([]string{backupOf(image)}))
			Expect(d.Generation).To(BeEquivalentTo(2))
		})

		It("points nothing at the backup while the secret cannot be provided, and recovers", func() {
			source := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: controllerNamespace, Name: backupPullSecret}, source)).To(Succeed())
			Expect(k8sClient.Delete(ctx, source)).To(Succeed())
			recreate := func() {
				Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx,
					dockerConfigSecret(controllerNamespace, backupPullSecret, backupReg.Host, "reader", "reader-pass")))).To(Succeed())
			}
			DeferCleanup(recreate)

			image := unique("public") + ":1"
			pushUpstream("library/" + image)
			ns := newNamespace(nil)
			d := newDeployment(ns, "app", nil, []string{image})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			Eventually(eventsOf(d)).Should(ContainElement(And(HavePrefix("Warning "+controller.ReasonBackupFailed),
				ContainSubstring("backup pull secret "+controllerNamespace+"/"+backupPullSecret+" does not exist"))))
			Expect(templateImages(d)()).To(Equal([]string{image}))
			Expect(d.Generation).To(BeEquivalentTo(1))

			recreate()
			Eventually(templateImages(d)).Should(Equal([]string{backupOf(image)}))
			Expect(pullSecretsOf(d)()).To(Equal([]string{backupPullSecret}))
		})
	})
})

// The workloads of a namespace share one read of their ServiceAccount for --tag-cache-ttl (PullSecretsTTL),
// across kinds. These specs run a manager of their own (see protect_test.go for how it is kept apart from the
// suite's), with a fake clock for that TTL, whose requests to the API server are counted, and a copier that
// reads each workload's credentials as the real one does and records them.
var _ = Describe("sharing the reads of pull secrets", func() {
	ctx := context.Background()

	It("reads a ServiceAccount once for many workloads of its namespace, and honours its change once the TTL has passed", func() {
		Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx,
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ignoredNamespace}}))).To(Succeed())
		id, saName := unique("shared-reads"), unique("builder")
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ignoredNamespace, Name: saName}}
		Expect(k8sClient.Create(ctx, sa)).To(Succeed())

		cfg := rest.CopyConfig(restConfig)
		reads := &requestCounter{method: http.MethodGet, path: "/api/v1/namespaces/" + ignoredNamespace + "/serviceaccounts/" + saName}
		cfg.Wrap(reads.wrap)
		clock := clocktesting.NewFakeClock(time.Now())
		copier := &credentialsCopier{}
		b, err := imageref.ParseBackup("backup.example.com/shared")
		Expect(err).NotTo(HaveOccurred())
		const ttl = time.Minute
		startSpecManagerWith(cfg, copier, controller.Options{
			Backup:                  b,
			MaxConcurrentReconciles: 4,
			MaxConcurrentImages:     1,
			WorkloadPullSecrets:     true,
			PullSecretsTTL:          ttl,
			Clock:                   clock,
		}, "", id)

		deployment := func(name, image string) client.Object {
			GinkgoHelper()
			d := labelled(newDeployment(ignoredNamespace, name, nil, []string{image}), id)
			d.Spec.Template.Spec.ServiceAccountName = saName
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			return d
		}
		var workloads []client.Object
		for i := range 6 {
			workloads = append(workloads, deployment(fmt.Sprintf("d-%s-%d", id, i), unique("app")+":1"))
			ds := labelled(newDaemonSet(ignoredNamespace, fmt.Sprintf("ds-%s-%d", id, i), nil, []string{unique("agent") + ":1"}), id)
			ds.Spec.Template.Spec.ServiceAccountName = saName
			Expect(k8sClient.Create(ctx, ds)).To(Succeed())
			workloads = append(workloads, ds)
		}
		for _, w := range workloads {
			Eventually(templateImages(w)).Should(HaveExactElements(HavePrefix(b.String() + "/")))
		}
		Expect(copier.Calls()).To(Equal(len(workloads)), "every workload's copy read its credentials")
		Expect(reads.Count()).To(Equal(1), "one read of the ServiceAccount for %d workloads of two kinds", len(workloads))

		By("reusing what was read, within the TTL, after the ServiceAccount changed")
		Expect(k8sClient.Create(ctx, dockerConfigSecret(ignoredNamespace, saName+"-regcred", "registry.example.com", "tenant", "tenant-pass"))).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(sa), sa)).To(Succeed())
		sa.ImagePullSecrets = []corev1.LocalObjectReference{{Name: saName + "-regcred"}}
		Expect(k8sClient.Update(ctx, sa)).To(Succeed())
		clock.Step(ttl - time.Second)
		within := unique("within") + ":1"
		w := deployment("within-"+id, within)
		Eventually(templateImages(w)).Should(HaveExactElements(HavePrefix(b.String() + "/")))
		Expect(copier.CredentialsOf(mustMap(within).Source.String())).To(BeEmpty(), "the credentials read before the change")
		Expect(reads.Count()).To(Equal(1))

		By("reading the ServiceAccount again once the TTL has passed, and pulling with its new pull secret")
		clock.Step(2 * time.Second)
		after := unique("after") + ":1"
		w = deployment("after-"+id, after)
		Eventually(templateImages(w)).Should(HaveExactElements(HavePrefix(b.String() + "/")))
		Expect(copier.CredentialsOf(mustMap(after).Source.String())).NotTo(BeEmpty(), "the ServiceAccount's pull secret")
		Expect(reads.Count()).To(Equal(2))
	})
})

// requestCounter counts the requests of one method to one path that pass the transport it wraps.
type requestCounter struct {
	method, path string

	mu sync.Mutex
	n  int
}

func (c *requestCounter) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		if req.Method == c.method && req.URL.Path == c.path {
			c.mu.Lock()
			c.n++
			c.mu.Unlock()
		}
		return next.RoundTrip(req)
	})
}

// Count returns how many requests were counted so far.
func (c *requestCounter) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// credentialsCopier reads the credentials of every copy request, as the real copier does before it pulls,
// records their ID by source, and reports the copy as done at a fixed digest.
type credentialsCopier struct {
	mu    sync.Mutex
	calls int
	ids   map[string]string
}

func (c *credentialsCopier) Copy(ctx context.Context, req registry.CopyRequest) (v1.Hash, error) {
	var id string
	if req.Credentials != nil {
		creds, err := req.Credentials(ctx)
		if err != nil {
			return v1.Hash{}, err
		}
		id = creds.ID
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil {
		c.ids = map[string]string{}
	}
	c.calls++
	c.ids[req.Source.String()] = id
	return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}, nil
}

// Calls returns how many copies were asked for.
func (c *credentialsCopier) Calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// CredentialsOf returns the ID of the credentials the copy of source was asked with ("" for none).
func (c *credentialsCopier) CredentialsOf(source string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ids[source]
}
