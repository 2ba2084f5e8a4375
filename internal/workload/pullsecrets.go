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

	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/dockerconfig"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

// PullSecrets reads the pull secrets of workloads. ServiceAccounts and Secrets are read one by one past the
// cache, so the controller never holds every Secret of the cluster in memory and only needs to get them, not
// list or watch them (which is also what lets their RBAC be bound in some namespaces only).
type PullSecrets struct {
	// Reader reads ServiceAccounts and Secrets; the manager's API reader, not its cache.
	Reader client.Reader
	// TTL, when positive, has Credentials remember what it read for a namespace, ServiceAccount and list of
	// pull secret names for that long, and share one read among the calls that want the same at the same time:
	// the workloads of a namespace, which are often reconciled together (a new namespace, a restart), cost one
	// read of their ServiceAccount instead of one each, and the admission webhook, with its small time budget,
	// reads nothing on most requests. A ServiceAccount's changed imagePullSecrets, or a rotated or deleted
	// Secret, take effect for calls made once the TTL has passed since the read. A read that did not find the
	// ServiceAccount or a Secret is not remembered: one created right after its workload is used at once. 0
	// reads on every call.
	TTL time.Duration
	// Clock is the TTL's time source (default the system clock); tests set a fake one.
	Clock cache.Clock

	once       sync.Once
	remembered *cache.LRUExpireCache
	reads      singleflight.Group
}

// rememberedSize bounds how many credential sets PullSecrets remembers.
const rememberedSize = 10000

// sharedReadTimeout bounds a read that several calls wait for, which runs on even when the call that started
// it gives up.
const sharedReadTimeout = time.Minute

// readCredentials is what Credentials read for one key.
type readCredentials struct {
	auth   *registry.Credentials
	unused []string
	// missing is set when the ServiceAccount or a Secret it names was not found: such a read is not
	// remembered, since what was missing is often created right after the workload that needs it.
	missing bool
}

// Credentials returns the credentials the pods of a workload in namespace with pod spec spec pull with: the
// pull secrets of the pod spec and of its ServiceAccount, as the kubelet combines them and with its matching
// rules (internal/dockerconfig, the one parser of Docker configs, also behind --registry-config). Secrets that
// do not exist, cannot be parsed, or that the controller may not read (RBAC scoped to some namespaces) are
// left out, as the kubelet leaves out the ones it cannot use: the copy then runs with less access, never with
// more. unused names those secrets and why, for the user to read next to an access error.
func (p *PullSecrets) Credentials(ctx context.Context, namespace string, spec *corev1.PodSpec) (*registry.Credentials, []string, error) {
	if p.TTL <= 0 {
		r, err := p.read(ctx, namespace, spec)
		return r.auth, r.unused, err
	}
	p.once.Do(func() {
		var c cache.Clock = clock.RealClock{}
		if p.Clock != nil {
			c = p.Clock
		}
		p.remembered = cache.NewLRUExpireCacheWithClock(rememberedSize, c)
	})
	key := strings.Join([]string{namespace, spec.ServiceAccountName, fmt.Sprint(spec.ImagePullSecrets)}, "\x00")
	if r, ok := p.remembered.Get(key); ok {
		return r.(readCredentials).auth, r.(readCredentials).unused, nil
	}
	// The read is shared, so it must not end with the call that started it, nor use its spec after it returned
	// (only what the key names, which the callers' specs share); each call still waits only as long as its own
	// context lets it.
	named := &corev1.PodSpec{ServiceAccountName: spec.ServiceAccountName, ImagePullSecrets: slices.Clone(spec.ImagePullSecrets)}
	shared := p.reads.DoChan(key, func() (any, error) {
		if r, ok := p.remembered.Get(key); ok { // remembered by a read that ended after the check above
			return r, nil
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedReadTimeout)
		defer cancel()
		r, err := p.read(rctx, namespace, named)
		if err != nil {
			return nil, err
		}
		if !r.missing {
			p.remembered.Add(key, r, p.TTL)
		}
		return r, nil
	})
	select {
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case res := <-shared:
		if res.Err != nil {
			return nil, nil, res.Err
		}
		return res.Val.(readCredentials).auth, res.Val.(readCredentials).unused, nil
	}
}

// read is Credentials without memory.
func (p *PullSecrets) read(ctx context.Context, namespace string, spec *corev1.PodSpec) (readCredentials, error) {
	var unused []string
	var missing bool
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
		missing = true
	case apierrors.IsForbidden(err):
		log.Info("Not allowed to read the workload's ServiceAccount; pulling without its pull secrets", "serviceAccount", saName, "error", err.Error())
		unused = append(unused, "ServiceAccount "+saName+" (the controller may not read it)")
	default:
		return readCredentials{}, fmt.Errorf("reading ServiceAccount %s/%s for its pull secrets: %w", namespace, saName, err)
	}

	var keyrings []*dockerconfig.Keyring
	id := sha256.New()
	for _, secretName := range names {
		secret := corev1.Secret{}
		switch err := p.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: secretName}, &secret); {
		case err == nil:
		case apierrors.IsNotFound(err):
			unused = append(unused, secretName+" (not found)")
			missing = true
			continue
		case apierrors.IsForbidden(err):
			log.Info("Not allowed to read a pull secret; pulling without it", "secret", secretName, "error", err.Error())
			unused = append(unused, secretName+" (the controller may not read it)")
			continue
		default:
			return readCredentials{}, fmt.Errorf("reading pull secret %s/%s: %w", namespace, secretName, err)
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
	auth := &registry.Credentials{Keychain: dockerconfig.Merge(keyrings...)}
	if len(keyrings) > 0 {
		auth.ID = hex.EncodeToString(id.Sum(nil))
	}
	return readCredentials{auth: auth, unused: unused, missing: missing}, nil
}
