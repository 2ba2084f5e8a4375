package admission

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// CertOptions say where the webhook's serving certificate is kept and what it names.
type CertOptions struct {
	// Namespace and Secret name the Secret that holds the CA and the serving certificate; every replica reads
	// the same one, so they serve the same certificate.
	Namespace, Secret string
	// Service is the webhook's Service: the certificate names SERVICE.NAMESPACE.svc (and .svc.cluster.local).
	Service string
	// ExtraNames are more DNS names for the certificate, e.g. localhost for a controller run outside the cluster.
	ExtraNames []string
	// Dir receives tls.crt and tls.key as well, for whoever wants to read them.
	Dir string
	// Configuration is the MutatingWebhookConfiguration whose webhooks get the CA bundle.
	Configuration string
}

// ServingCertificate is the webhook server's certificate, served from memory as soon as the Secret holds one
// and replaced the moment the Secret changes. The server never waits for a file: until a certificate exists,
// handshakes fail, the API server applies failurePolicy Ignore, and readiness stays false.
type ServingCertificate struct {
	mu   sync.RWMutex
	cert *tls.Certificate
	dir  string
}

// NewServingCertificate returns an empty ServingCertificate that also writes its certificate into dir.
func NewServingCertificate(dir string) *ServingCertificate { return &ServingCertificate{dir: dir} }

// Configure is a TLS option of the webhook server: it serves the current certificate, over HTTP/1.1 only
// (HTTP/2's stream multiplexing gives a client more ways to exhaust the server; the API server needs none).
func (s *ServingCertificate) Configure(cfg *tls.Config) {
	cfg.GetCertificate = s.get
	cfg.NextProtos = []string{"http/1.1"}
}

func (s *ServingCertificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cert == nil {
		return nil, errors.New("no serving certificate yet")
	}
	return s.cert, nil
}

// update takes the certificate of secret, if it holds a valid one, and writes it into the directory.
func (s *ServingCertificate) update(secret *corev1.Secret) error {
	certPEM, keyPEM := secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil // not generated yet
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("reading the serving certificate of Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	s.mu.Lock()
	s.cert = &cert
	s.mu.Unlock()
	if s.dir == "" {
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("writing the serving certificate: %w", err)
	}
	for name, data := range map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM} {
		if err := writeAtomically(filepath.Join(s.dir, name), data); err != nil {
			return fmt.Errorf("writing the serving certificate: %w", err)
		}
	}
	return nil
}

// writeAtomically replaces path with data, so that no reader ever sees half a file.
func writeAtomically(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone after the rename
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// RotateCertificates makes the controller its own certificate authority for the webhook: cert-controller's
// rotator keeps a CA and a serving certificate in the Secret, renews them before they expire, and injects the
// CA into the webhook configuration; every replica serves the certificate from the Secret (see
// ServingCertificate). The Secret is created when missing, since the rotator only fills one in. The returned
// channel closes once the certificate is served and the CA injected.
func RotateCertificates(mgr ctrl.Manager, serving *ServingCertificate, opts CertOptions) (<-chan struct{}, error) {
	if opts.Namespace == "" {
		return nil, errors.New("rotating the webhook certificate needs the controller's namespace (POD_NAMESPACE), which holds its Secret; outside a cluster, set POD_NAMESPACE or pass --webhook=false")
	}
	if err := ensureSecret(mgr, opts); err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	names := []string{opts.Service + "." + opts.Namespace + ".svc.cluster.local"}
	if err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      types.NamespacedName{Namespace: opts.Namespace, Name: opts.Secret},
		CertDir:        opts.Dir,
		CAName:         "image-clone-controller-ca",
		CAOrganization: "image-clone-controller",
		DNSName:        opts.Service + "." + opts.Namespace + ".svc",
		ExtraDNSNames:  append(names, opts.ExtraNames...),
		IsReady:        ready,
		Webhooks:       []rotator.WebhookInfo{{Name: opts.Configuration, Type: rotator.Mutating}},
		FieldOwner:     "image-clone-controller",
		// Every replica serves the webhook, so every replica must have the certificate; they share the Secret.
		RequireLeaderElection: false,
		EnableReadinessCheck:  true,
	}); err != nil {
		return nil, fmt.Errorf("setting up the webhook certificate rotation: %w", err)
	}
	if err := watchSecret(mgr, serving, opts); err != nil {
		return nil, err
	}
	return ready, nil
}

// ensureSecret creates the certificate's Secret, empty, when it does not exist.
func ensureSecret(mgr ctrl.Manager, opts CertOptions) error {
	key := types.NamespacedName{Namespace: opts.Namespace, Name: opts.Secret}
	err := mgr.GetAPIReader().Get(context.Background(), key, &corev1.Secret{})
	if !apierrors.IsNotFound(err) {
		if err != nil {
			return fmt.Errorf("reading the webhook certificate's Secret %s: %w", key, err)
		}
		return nil
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: opts.Namespace, Name: opts.Secret}}
	if err := mgr.GetClient().Create(context.Background(), secret, client.FieldOwner("image-clone-controller")); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the webhook certificate's Secret %s: %w", key, err)
	}
	return nil
}

// watchSecret keeps serving current with the Secret, through an informer on that one Secret.
func watchSecret(mgr ctrl.Manager, serving *ServingCertificate, opts CertOptions) error {
	secrets, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(),
		Mapper: mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{&corev1.Secret{}: {
			Namespaces: map[string]cache.Config{opts.Namespace: {}},
			Field:      fields.OneTermEqualSelector("metadata.name", opts.Secret),
		}},
	})
	if err != nil {
		return fmt.Errorf("watching the webhook certificate's Secret: %w", err)
	}
	informer, err := secrets.GetInformer(context.Background(), &corev1.Secret{})
	if err != nil {
		return fmt.Errorf("watching the webhook certificate's Secret: %w", err)
	}
	log := mgr.GetLogger().WithName("webhook-certificate")
	take := func(obj any) {
		secret, ok := obj.(*corev1.Secret)
		if !ok || secret.Name != opts.Secret {
			return
		}
		if err := serving.update(secret); err != nil {
			log.Error(err, "Keeping the previous serving certificate")
		}
	}
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    take,
		UpdateFunc: func(_, obj any) { take(obj) },
	}); err != nil {
		return fmt.Errorf("watching the webhook certificate's Secret: %w", err)
	}
	return mgr.Add(everyReplica{secrets})
}

// everyReplica runs a Runnable in every replica: the manager would otherwise start it in the leader only.
type everyReplica struct{ manager.Runnable }

func (everyReplica) NeedLeaderElection() bool { return false }

// ReadyCheck is the readiness check of the webhook: ready once the certificate is in place (ready is closed;
// nil when something else provides the certificate) and the server listens.
func ReadyCheck(ready <-chan struct{}, started healthz.Checker) healthz.Checker {
	return func(req *http.Request) error {
		if ready != nil {
			select {
			case <-ready:
			default:
				return errors.New("the webhook's serving certificate is not ready yet")
			}
		}
		return started(req)
	}
}
