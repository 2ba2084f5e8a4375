package dockerconfig

import (
	"net"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Names of Docker Hub: the kubelet normalizes images to dockerHub, go-containerregistry to name.DefaultRegistry,
// and the kubelet falls back to the credentials keyed dockerHubKey for Docker Hub images.
const (
	dockerHub    = "docker.io"
	dockerHubKey = "index.docker.io"
)

// Keyring holds registry credentials and tells which apply to an image, by the kubelet's rules; it is an
// authn.Keychain. The zero Keyring, like a nil one, holds no credentials.
type Keyring struct {
	// index lists the keys most specific first: reverse lexical order, as the kubelet sorts them.
	index []string
	keys  map[string]*keyed
}

// keyed is what the keyring holds under one key.
type keyed struct {
	pattern pattern
	// creds in the order they were added: the first wins.
	creds []authn.AuthConfig
}

var _ authn.Keychain = (*Keyring)(nil)

// Merge returns a keyring with the credentials of all the given keyrings, which are left as they are. Where
// two of them hold credentials under the same key, those of the earlier keyring win, so pass the pod's
// imagePullSecrets before its ServiceAccount's. A more specific key still wins over a less specific one
// whatever keyring it comes from, as in the kubelet, which adds every pull secret of a pod to one keyring.
func Merge(keyrings ...*Keyring) *Keyring {
	merged := &Keyring{}
	for _, k := range keyrings {
		if k == nil {
			continue
		}
		for _, key := range k.index {
			for _, cfg := range k.keys[key].creds {
				merged.add(key, cfg)
			}
		}
	}
	merged.sort()
	return merged
}

// add puts cfg under key, already normalized; sort must follow before lookups. Entries without credentials
// are dropped: the first credentials of the most specific key are the ones handed out, and an empty entry
// there would hide usable credentials under a less specific key.
func (k *Keyring) add(key string, cfg authn.AuthConfig) {
	if !hasCredentials(cfg) {
		return
	}
	if k.keys == nil {
		k.keys = map[string]*keyed{}
	}
	kd, ok := k.keys[key]
	if !ok {
		kd = &keyed{pattern: parsePattern(key)}
		k.keys[key] = kd
		k.index = append(k.index, key)
	}
	kd.creds = append(kd.creds, cfg)
}

// sort orders the index most specific first.
func (k *Keyring) sort() {
	slices.Sort(k.index)
	slices.Reverse(k.index)
}

// Resolve returns the credentials for the target, a name.Repository (or a name.Tag or name.Digest, for their
// repository) or a name.Registry, or authn.Anonymous if none apply. Other resources are matched by their
// registry alone.
func (k *Keyring) Resolve(target authn.Resource) (authn.Authenticator, error) {
	cfg, ok := k.lookup(imageOf(target))
	if !ok {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(cfg), nil
}

// imageOf returns the target in the form the kubelet looks images up in: registry and repository without
// scheme, tag or digest, with Docker Hub as docker.io.
func imageOf(target authn.Resource) string {
	host, repo := target.RegistryStr(), ""
	switch t := target.(type) {
	case name.Repository:
		repo = t.RepositoryStr()
	case name.Tag:
		repo = t.RepositoryStr()
	case name.Digest:
		repo = t.RepositoryStr()
	}
	if host == name.DefaultRegistry {
		host = dockerHub
	}
	if repo == "" {
		return host
	}
	return host + "/" + repo
}

// lookup returns the first credentials of the most specific key that matches image, or those keyed
// index.docker.io for a Docker Hub image that no key matches.
func (k *Keyring) lookup(image string) (authn.AuthConfig, bool) {
	if k == nil || len(k.index) == 0 {
		return authn.AuthConfig{}, false
	}
	target := parsePattern(image)
	for _, key := range k.index {
		if kd := k.keys[key]; kd.pattern.matches(target) {
			return kd.creds[0], true
		}
	}
	if isDockerHub(image) {
		if kd, ok := k.keys[dockerHubKey]; ok {
			return kd.creds[0], true
		}
	}
	return authn.AuthConfig{}, false
}

// isDockerHub tells whether image, in the kubelet's normalized form, is on Docker Hub. The kubelet also counts
// any image whose first path component has no dot or colon, such as "localhost/app"; that sends Docker Hub
// credentials to a registry on localhost, so this package does not follow it there.
func isDockerHub(image string) bool {
	host, _, _ := strings.Cut(image, "/")
	return host == dockerHub || host == dockerHubKey
}

// normalizeKey turns a key of a Docker config into the kubelet's form: no scheme, and a path starting with
// /v1/ or /v2/ without that prefix. It reports false for a key that is no URL, which the kubelet skips.
func normalizeKey(raw string) (string, bool) {
	value := raw
	if !strings.HasPrefix(value, "https://") && !strings.HasPrefix(value, "http://") {
		value = "https://" + value
	}
	u, err := url.Parse(value)
	if err != nil {
		return "", false
	}
	p := u.Path
	if strings.HasPrefix(p, "/v1/") || strings.HasPrefix(p, "/v2/") {
		p = p[len("/v1"):]
	}
	if p == "/" {
		p = ""
	}
	return u.Host + p, true
}

// pattern is a key or an image split for matching.
type pattern struct {
	valid  bool
	labels []string
	port   string
	path   string
}

// parsePattern splits a schemeless key or image. One that does not parse matches nothing.
func parsePattern(s string) pattern {
	u, err := url.Parse("https://" + s)
	if err != nil {
		return pattern{}
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, ""
	}
	return pattern{valid: true, labels: strings.Split(host, "."), port: port, path: u.Path}
}

// matches tells whether the key p matches the image target: equal ports, as many host labels each matching
// the key's glob, and the key's path a prefix of the image's.
func (p pattern) matches(target pattern) bool {
	if !p.valid || !target.valid || p.port != target.port || len(p.labels) != len(target.labels) {
		return false
	}
	if !strings.HasPrefix(target.path, p.path) {
		return false
	}
	for i, glob := range p.labels {
		if ok, err := path.Match(glob, target.labels[i]); err != nil || !ok {
			return false
		}
	}
	return true
}
