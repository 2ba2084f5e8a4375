package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/dockerconfig"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

// PullSecrets reads the pull secrets of workloads. Secrets are read one by one past the cache, so the
// controller never holds every Secret of the cluster in memory and only needs to get them, not list them.
type PullSecrets struct {
	// Reader reads ServiceAccounts and Secrets; the manager's API reader, not its cache.
	Reader client.Reader
	// TTL, when positive, has Credentials remember what it read for a namespace, ServiceAccount and list of
	// pull secret names for that long, so that a caller with a small time budget (the admission webhook) does
	// not read the API server on every request; a rotated Secret takes effect within it. 0 reads every time.
	TTL time.Duration

	once       sync.Once
	remembered *cache.LRUExpireCache
}

// rememberedSize bounds how many credential sets PullSecrets remembers.
const rememberedSize = 10000

// readCredentials is what Credentials read for one key.
type readCredentials struct {
	auth   *registry.Credentials
	unused []string
}

// Credentials returns the credentials the pods of a workload in namespace with pod spec spec pull with: the
// pull secrets of the pod spec and of its ServiceAccount, as the kubelet combines them and with its matching
// rules (internal/dockerconfig, the one parser of Docker configs, also behind --registry-config). Secrets that
// do not exist, cannot be parsed, or that the controller may not read (RBAC scoped to some namespaces) are
// left out, as the kubelet leaves out the ones it cannot use: the copy then runs with less access, never with
// more. unused names those secrets and why, for the user to read next to an access error.
func (p *PullSecrets) Credentials(ctx context.Context, namespace string, spec *corev1.PodSpec) (*registry.Credentials, []string, error) {
	if p.TTL <= 0 {
		return p.read(ctx, namespace, spec)
	}
	p.once.Do(func() { p.remembered = cache.NewLRUExpireCache(rememberedSize) })
	key := strings.Join([]string{namespace, spec.ServiceAccountName, fmt.Sprint(spec.ImagePullSecrets)}, "\x00")
	if got, ok := p.remembered.Get(key); ok {
		r := got.(readCredentials)
		return r.auth, r.unused, nil
	}
	auth, unused, err := p.read(ctx, namespace, spec)
	if err == nil {
		p.remembered.Add(key, readCredentials{auth: auth, unused: unused}, p.TTL)
	}
	return auth, unused, err
}

// read is Credentials without memory.
func (p *PullSecrets) read(ctx context.Context, namespace string, spec *corev1.PodSpec) (auth *registry.Credentials, unused []string, err error) {
	log := ctrl.LoggerFrom(ctx)
	// The pod's own pull secrets come first, then its ServiceAccount's, as the kubelet orders them: where two
	// secrets hold credentials for the same key, the first one wins.
	var names []string
	addNames := func(refs []corev1.LocalObjectReference) {
		for _, ref := range refs {
			if ref.Name != "" && !slices.Contains(names, ref.Name) {
				names = append(names, ref.Name)
			}
		}
	}
	addNames(spec.ImagePullSecrets)
	saName := spec.ServiceAccountName
	if saName == "" {
		saName = "default"
	}
	sa := &corev1.ServiceAccount{}
	switch err := p.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: saName}, sa); {
	case err == nil:
		addNames(sa.ImagePullSecrets)
	case apierrors.IsNotFound(err):
	case apierrors.IsForbidden(err):
		log.Info("Not allowed to read the workload's ServiceAccount; pulling without its pull secrets", "serviceAccount", saName, "error", err.Error())
		unused = append(unused, "ServiceAccount "+saName+" (the controller may not read it)")
	default:
		return nil, nil, fmt.Errorf("reading ServiceAccount %s/%s for its pull secrets: %w", namespace, saName, err)
	}

	var keyrings []*dockerconfig.Keyring
	id := sha256.New()
	for _, secretName := range names {
		secret := corev1.Secret{}
		switch err := p.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: secretName}, &secret); {
		case err == nil:
		case apierrors.IsNotFound(err):
			unused = append(unused, secretName+" (not found)")
			continue
		case apierrors.IsForbidden(err):
			log.Info("Not allowed to read a pull secret; pulling without it", "secret", secretName, "error", err.Error())
			unused = append(unused, secretName+" (the controller may not read it)")
			continue
		default:
			return nil, nil, fmt.Errorf("reading pull secret %s/%s: %w", namespace, secretName, err)
		}
		keyring, err := dockerconfig.FromSecret(secret)
		switch {
		case errors.Is(err, dockerconfig.ErrNotPullSecret):
			// Not a pull secret; the kubelet ignores it too.
			unused = append(unused, fmt.Sprintf("%s (type %s, not a pull secret)", secretName, secret.Type))
			continue
		case err != nil:
			log.Info("Ignoring a pull secret that is not a valid Docker config", "secret", secretName, "error", err.Error())
			unused = append(unused, secretName+" (not a valid Docker config)")
			continue
		}
		keyrings = append(keyrings, keyring)
		// The ID changes with the content, so rotated credentials prove their access again.
		key, _ := dockerconfig.SecretKey(secret)
		fmt.Fprintf(id, "%d:%s:%d:", len(secret.Type), secret.Type, len(secret.Data[key]))
		id.Write(secret.Data[key])
	}
	auth = &registry.Credentials{Keychain: dockerconfig.Merge(keyrings...)}
	if len(keyrings) > 0 {
		auth.ID = hex.EncodeToString(id.Sum(nil))
	}
	return auth, unused, nil
}
