package registry

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/utils/clock"
)

// Options configures a Copier. The zero value of every field but Keychain has a sane default.
type Options struct {
	// Keychain resolves credentials for the source and backup registries. Defaults to anonymous access.
	Keychain authn.Keychain
	// Mirrors serves pulls of a registry's images from another location, keyed by normalized registry
	// (see ParseMirror). Naming of the copies still follows the original registry.
	Mirrors map[string]Mirror
	// Insecure lists registries (host[:port]) spoken to over plain HTTP.
	Insecure []string
	// Transport is the base HTTP transport; auth, retries (see retryTransport) and byte counting are layered on
	// top of it.
	Transport http.RoundTripper
	// MaxConcurrentCopies bounds how many images are copied at the same time (default 4).
	MaxConcurrentCopies int
	// LayerJobs bounds how many blobs of one image are copied at the same time (default DefaultLayerJobs).
	LayerJobs int
	// CopyTimeout bounds one Copy call: resolving, checking the backup, copying and verifying (default 30m).
	CopyTimeout time.Duration
	// TagCacheTTL is how long the digest a source tag resolved to is reused by later copies of the same tag
	// (with the same credentials) without asking the source registry again; 0, the default, asks every time.
	// The backup registry is asked on every copy regardless.
	TagCacheTTL time.Duration
	// CacheSize bounds how many entries the tag cache and the record of failed verifications hold each
	// (default 10000), forgetting the least recently used first.
	CacheSize int
	// Clock is the tag cache's time source (default the system clock); tests set a fake one.
	Clock cache.Clock
	// MountCacheSize bounds how many blobs the copier remembers a backup repository for, to mount them into
	// other repositories instead of uploading them again (default 10000, about 200 bytes each).
	MountCacheSize int
	// MaxImageSize refuses, permanently and before any blob is moved, to copy an image whose distinct blobs
	// (configs and layers of every platform, as the manifests give their sizes) add up to more than this many
	// bytes. 0, the default, is no limit. An image the backup already holds is used whatever its size, as
	// nothing needs to be copied. See ParseMaxImageSize for the flag's format.
	MaxImageSize int64
	// Artifacts copies along, for every manifest of an image, its cosign signature, attestation and SBOM tags
	// (sha256-<hex>.sig, .att, .sbom) and its OCI referrers, so that signature policies verify the copy as
	// they verify the source (see artifacts.go).
	Artifacts bool
	// ArtifactsOptional, with Artifacts, tags the copy even when some of its artifacts could not be copied,
	// and reports them in an Error of class Incomplete beside the digest; by default such a copy is not tagged
	// and the Copy fails transiently, so no workload runs a copy that a signature policy would reject.
	ArtifactsOptional bool
	// OnBackup, if set, is told what every Copy found or did for its target (see Observation): it is how the
	// inventory learns of copies. It is called synchronously on the copy's path and must not block. Lookup
	// does not call it.
	OnBackup func(Observation)
	// RecordedDigest, if set, returns the digest a backup tag had when it was last recorded (the inventory's).
	// A KeepExisting copy the backup lost is then made again at that digest, as long as the source has it,
	// instead of at what its source tag points to now.
	RecordedDigest func(target name.Tag) (v1.Hash, bool)
}

// DefaultLayerJobs is how many blobs of one image a Copier copies at the same time unless Options say otherwise.
const DefaultLayerJobs = 4

// Mirror is a location that serves a registry's repositories: HOST[:PORT] plus an optional path prefix.
type Mirror struct {
	Registry string
	Prefix   string
}

// ParseMirror parses a --source-mirror value REGISTRY=HOST[:PORT][/PATH] and returns the normalized registry
// it applies to (docker.io and index.docker.io are the same registry) and the mirror.
func ParseMirror(s string) (string, Mirror, error) {
	from, to, ok := strings.Cut(s, "=")
	if !ok || from == "" || to == "" {
		return "", Mirror{}, fmt.Errorf("source mirror %q: want REGISTRY=HOST[:PORT][/PATH]", s)
	}
	reg, err := name.NewRegistry(from, name.StrictValidation)
	if err != nil {
		return "", Mirror{}, fmt.Errorf("source mirror %q: registry %q: %w", s, from, err)
	}
	if strings.Contains(to, "://") {
		return "", Mirror{}, fmt.Errorf("source mirror %q: give HOST[:PORT][/PATH] without a scheme (use --insecure-registry for plain HTTP)", s)
	}
	host, prefix, _ := strings.Cut(strings.TrimSuffix(to, "/"), "/")
	if _, err := name.NewRegistry(host, name.StrictValidation); err != nil {
		return "", Mirror{}, fmt.Errorf("source mirror %q: mirror host %q: %w", s, host, err)
	}
	if prefix != "" {
		if _, err := name.NewRepository(host+"/"+prefix+"/x", name.StrictValidation); err != nil {
			return "", Mirror{}, fmt.Errorf("source mirror %q: mirror path %q: %w", s, prefix, err)
		}
	}
	return reg.RegistryStr(), Mirror{Registry: host, Prefix: prefix}, nil
}

func (o *Options) defaults() {
	if o.Keychain == nil {
		o.Keychain = authn.NewMultiKeychain()
	}
	if o.Transport == nil {
		o.Transport = remote.DefaultTransport
	}
	if o.MaxConcurrentCopies <= 0 {
		o.MaxConcurrentCopies = 4
	}
	if o.LayerJobs <= 0 {
		o.LayerJobs = DefaultLayerJobs
	}
	if o.CopyTimeout <= 0 {
		o.CopyTimeout = 30 * time.Minute
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 10000
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.MountCacheSize <= 0 {
		o.MountCacheSize = 10000
	}
}
