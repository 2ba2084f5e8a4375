package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// session holds the authenticated transports that one Copy call reads with, one per repository, so that each
// registry is pinged (and a token fetched) once per copy instead of once per request. Uploads keep using
// go-containerregistry's pusher, which negotiates its own push and mount scopes.
type session struct {
	c *Copier
	// source and sourceKeychain, when set, are the repository a caller's own credentials are used for (see
	// Credentials); every other repository is read with the Copier's keychain.
	source         name.Repository
	sourceKeychain authn.Keychain

	mu      sync.Mutex
	readers map[string]*sessionReader
}

type sessionReader struct {
	once sync.Once
	tr   http.RoundTripper
	err  error
}

func (c *Copier) newSession() *session {
	return &session{c: c, readers: map[string]*sessionReader{}}
}

// keychain returns the keychain that reads repo.
func (s *session) keychain(repo name.Repository) authn.Keychain {
	if s.sourceKeychain != nil && repo.String() == s.source.String() {
		return s.sourceKeychain
	}
	return s.c.opts.Keychain
}

// reader returns a transport with pull access to repo. It is a transport.Wrapper, which go-containerregistry
// uses as it is (remote.WithTransport) instead of pinging the registry again.
func (s *session) reader(ctx context.Context, repo name.Repository) (http.RoundTripper, error) {
	s.mu.Lock()
	r, ok := s.readers[repo.String()]
	if !ok {
		r = &sessionReader{}
		s.readers[repo.String()] = r
	}
	s.mu.Unlock()
	r.once.Do(func() {
		auth, err := authn.Resolve(ctx, s.keychain(repo), repo)
		if err != nil {
			r.err = err
			return
		}
		r.tr, r.err = transport.NewWithContext(ctx, repo.Registry, auth, s.c.base, []string{repo.Scope(transport.PullScope)})
	})
	if r.err != nil {
		// A failed ping (registry down, credentials refused) is tried again by the next call.
		s.mu.Lock()
		if s.readers[repo.String()] == r {
			delete(s.readers, repo.String())
		}
		s.mu.Unlock()
	}
	return r.tr, r.err
}

// head returns the descriptor of the manifest ref resolves to, without its content.
//
// When the keychain has no credentials for the registry, the request is first sent as it is, without the auth
// handshake go-containerregistry starts every operation with (a ping that, for a plain-HTTP registry, is an
// https attempt followed by GET /v2/). A registry that serves anonymous reads, like a cluster's own backup
// registry, answers it directly, so checking an image costs one request per registry instead of three. A
// registry that asks for a token (401, 403), and any answer that does not come from a registry, get the full
// handshake instead; registries that asked for tokens are remembered and get it straight away.
func (s *session) head(ctx context.Context, ref name.Reference) (*v1.Descriptor, error) {
	if desc, settled, err := s.headAnonymous(ctx, ref); settled {
		return desc, err
	}
	tr, err := s.reader(ctx, ref.Context())
	if err != nil {
		return nil, err
	}
	return remote.Head(ref, s.c.readOptions(ctx, tr)...)
}

// headAnonymous sends the HEAD request of head without authentication. settled is false if the answer does
// not settle the question and the full handshake must be made.
func (s *session) headAnonymous(ctx context.Context, ref name.Reference) (desc *v1.Descriptor, settled bool, err error) {
	repo := ref.Context()
	if _, tokens := s.c.tokenRegistries.Load(repo.RegistryStr()); tokens {
		return nil, false, nil
	}
	if auth, err := authn.Resolve(ctx, s.keychain(repo), repo); err != nil || auth != authn.Anonymous {
		return nil, false, nil
	}
	u := url.URL{Scheme: repo.Scheme(), Host: repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/manifests/%s", repo.RepositoryStr(), ref.Identifier())}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u.String(), nil)
	if err != nil {
		return nil, false, nil
	}
	req.Header.Set("Accept", manifestTypes)
	resp, err := (&http.Client{Transport: s.c.base, CheckRedirect: checkRedirect}).Do(req)
	if err != nil {
		// Over plain HTTP the handshake also tries https, which may be what the registry speaks.
		if repo.Scheme() == "http" && ctx.Err() == nil {
			return nil, false, nil
		}
		return nil, true, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		s.c.tokenRegistries.Store(repo.RegistryStr(), struct{}{})
		return nil, false, nil
	case resp.StatusCode == http.StatusOK:
		d, err := v1.NewHash(resp.Header.Get("Docker-Content-Digest"))
		if err != nil || resp.Header.Get("Content-Type") == "" || resp.ContentLength < 0 {
			return nil, false, nil // not enough to go on; the handshake path reports what is wrong
		}
		if pinned, ok := ref.(name.Digest); ok && d.String() != pinned.DigestStr() {
			return nil, true, fmt.Errorf("manifest digest: %q does not match requested digest: %q for %q", d, pinned.DigestStr(), ref)
		}
		return &v1.Descriptor{Digest: d, Size: resp.ContentLength, MediaType: types.MediaType(resp.Header.Get("Content-Type"))}, true, nil
	case resp.StatusCode < http.StatusInternalServerError && resp.StatusCode != http.StatusTooManyRequests &&
		resp.Header.Get("Docker-Distribution-API-Version") == "":
		// A client error from something that may not be the registry (a plain-HTTP port of an https registry);
		// server errors and rate limits are the registry's state, which the handshake would only meet again.
		return nil, false, nil
	default:
		return nil, true, transport.CheckError(resp, http.StatusOK)
	}
}

// manifestTypes is the Accept header of manifest requests: every manifest type go-containerregistry accepts.
var manifestTypes = strings.Join([]string{
	string(types.DockerManifestSchema1), string(types.DockerManifestSchema1Signed),
	string(types.OCIManifestSchema1), string(types.DockerManifestSchema2),
	string(types.OCIImageIndex), string(types.DockerManifestList),
}, ",")

// baseTransport is what every request of a Copier goes through: retries (the one place they happen) and the
// user agent.
func baseTransport(tr http.RoundTripper) http.RoundTripper {
	return transport.NewUserAgent(retryTransport{next: tr}, userAgent)
}

// checkRedirect refuses, as go-containerregistry's fetcher does, a redirect from one host to an IP address
// literal in a private or link-local network: a registry must not make the copier read internal services.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) == 0 || req.Response == nil {
		return nil
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	from, to := via[0].URL.Hostname(), req.URL.Hostname()
	if from == to {
		return nil
	}
	if ip, ok := parseIP(to); ok &&
		(ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified()) {
		return errors.New("refusing a redirect from " + from + " to the internal address " + to)
	}
	return nil
}

// parseIP parses host as the dialer would connect to it: without a zone, IPv4-mapped IPv6 as IPv4, and the
// legacy IPv4 forms (127.1, 0x7f.0.0.1) that resolvers accept.
func parseIP(host string) (netip.Addr, bool) {
	host, _, _ = strings.Cut(host, "%")
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.WithZone("").Unmap(), true
	}
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i, part := range parts {
		// Every part but the last is one byte; the last fills the bytes that are left.
		width := 1
		if i == len(parts)-1 {
			width = 4 - i
		}
		v, err := strconv.ParseUint(part, 0, 32)
		if err != nil || v>>(8*width) != 0 {
			return netip.Addr{}, false
		}
		for j := i + width - 1; j >= i; j-- {
			b[j] = byte(v & 0xff)
			v >>= 8
		}
	}
	return netip.AddrFrom4(b), true
}
