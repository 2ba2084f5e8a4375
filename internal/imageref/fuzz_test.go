package imageref_test

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
)

// fuzzBackups cover a plain host, a path prefix, a port-only host and an IPv6 host.
var fuzzBackups = []string{backupIP, backupPrefix, "localhost:5000", "[fd00::1]:5000/m"}

// distributionReference is the reference grammar of the distribution project, written out here so that targets
// are checked against an oracle that does not share code with the package.
var distributionReference = func() *regexp.Regexp {
	const (
		domainComponent = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
		domainName      = domainComponent + `(?:\.` + domainComponent + `)*`
		ipv6            = `\[[a-fA-F0-9:]+\]`
		domain          = `(?:` + domainName + `|` + ipv6 + `)(?::[0-9]+)?`
		pathComponent   = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
		tag             = `[\w][\w.-]{0,127}`
		digest          = `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`
	)
	return regexp.MustCompile(`^(` + domain + `/` + pathComponent + `(?:/` + pathComponent + `)*)(?::(` + tag + `))?(?:@(` + digest + `))?$`)
}()

// seen records target -> source across the inputs one fuzz worker tries, as a direct collision check.
var seen = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

func fuzzSeeds() []string {
	var seeds []string
	for _, tc := range mapCases {
		seeds = append(seeds, tc.image)
	}
	for _, tc := range mapErrorCases {
		seeds = append(seeds, tc.image)
	}
	for _, tc := range collisionCases {
		seeds = append(seeds, tc.kept, tc.rejected)
	}
	for _, tc := range containsCases {
		seeds = append(seeds, tc.image)
	}
	seeds = append(seeds, fuzzBackups...)
	return seeds
}

func FuzzBackupReference(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	var backups []imageref.Backup
	for _, s := range fuzzBackups {
		backups = append(backups, mustBackup(f, s))
	}
	f.Fuzz(func(t *testing.T, image string) {
		for _, b := range backups {
			checkMap(t, b, image)
			checkSourceFromTarget(t, b, image)
		}
		checkParseBackup(t, image)
	})
}

// checkMap checks the properties of Map on one input; SourceFromTarget inverting it proves injectivity.
func checkMap(t *testing.T, b imageref.Backup, image string) {
	m, err := b.Map(image)
	if err != nil {
		if !strings.Contains(err.Error(), strconv.Quote(image)) {
			t.Fatalf("Map(%q) error %q does not quote the image", image, err)
		}
		return
	}

	// Map accepts a subset of what go-containerregistry accepts and keeps its meaning.
	ref, err := name.ParseReference(image)
	if err != nil {
		t.Fatalf("Map(%q) succeeded but name.ParseReference fails: %v", image, err)
	}
	if ref.Identifier() != m.Source.Identifier() {
		t.Fatalf("Map(%q): source identifier %q, want %q", image, m.Source.Identifier(), ref.Identifier())
	}
	if !sameRegistry(ref.Context().RegistryStr(), m.Source.Context().RegistryStr()) {
		t.Fatalf("Map(%q): source registry %q is not a spelling of %q", image, m.Source.Context().RegistryStr(), ref.Context().RegistryStr())
	}
	if got, want := m.Source.Context().RepositoryStr(), ref.Context().RepositoryStr(); got != want && got != "library/"+want {
		t.Fatalf("Map(%q): source repository %q, want %q", image, got, want)
	}
	if _, isDigest := m.Source.(name.Digest); isDigest != (m.Digest != "") {
		t.Fatalf("Map(%q): source %q but digest %q", image, m.Source, m.Digest)
	}

	// Unmap finds the mapping again from what the controller writes into pod templates.
	if back, err := b.Unmap(m.PodImage()); err != nil || back.PodImage() != m.PodImage() || back.Source.Name() != m.Source.Name() {
		t.Fatalf("Unmap(Map(%q).PodImage()) = %v, %v; want the mapping back", image, back, err)
	}

	// The target and the pod image are valid, strict references inside the backup.
	target := m.Target.Name()
	if !strings.HasPrefix(target, b.String()+"/") {
		t.Fatalf("Map(%q): target %q is not below %q", image, target, b)
	}
	for _, s := range []string{target, m.PodImage()} {
		sub := distributionReference.FindStringSubmatch(s)
		if sub == nil {
			t.Fatalf("Map(%q): %q does not match the distribution reference grammar", image, s)
		}
		if len(sub[1]) > 255 {
			t.Fatalf("Map(%q): repository of %q is longer than 255 characters", image, s)
		}
	}
	if reparsed, err := name.NewTag(target, name.StrictValidation); err != nil || reparsed.Name() != target {
		t.Fatalf("Map(%q): target %q does not parse strictly to itself: %v", image, target, err)
	}
	pod, err := name.ParseReference(m.PodImage(), name.StrictValidation)
	if err != nil {
		t.Fatalf("Map(%q): pod image %q does not parse: %v", image, m.PodImage(), err)
	}
	if pod.Context().Name() != m.Target.Context().Name() {
		t.Fatalf("Map(%q): pod image %q is not in the target repository %q", image, m.PodImage(), m.Target.Context())
	}
	if m.Digest != "" && pod.Identifier() != m.Digest {
		t.Fatalf("Map(%q): pod image %q lost the digest %q", image, m.PodImage(), m.Digest)
	}
	if !b.Contains(target) || !b.Contains(m.PodImage()) {
		t.Fatalf("Map(%q): backup %q does not contain %q", image, b, m.PodImage())
	}
	if m2, err := b.Map(m.PodImage()); err == nil {
		t.Fatalf("Map(%q): mapping the copy again succeeded: %q", image, m2.PodImage())
	}

	// Injectivity: the target alone determines the normalized source.
	src, err := b.SourceFromTarget(target)
	if err != nil {
		t.Fatalf("Map(%q) = %q, but SourceFromTarget fails: %v", image, target, err)
	}
	if src != m.Source.Name() {
		t.Fatalf("Map(%q) = %q from source %q, but SourceFromTarget returns %q", image, target, m.Source.Name(), src)
	}
	// Normalization is idempotent.
	m2, err := b.Map(m.Source.Name())
	if err != nil {
		t.Fatalf("Map(%q) succeeded, but Map of its source %q fails: %v", image, m.Source.Name(), err)
	}
	if m2.Source.Name() != m.Source.Name() || m2.PodImage() != m.PodImage() {
		t.Fatalf("Map(%q) = %q from %q, but Map(%q) = %q from %q", image, m.PodImage(), m.Source, m.Source.Name(), m2.PodImage(), m2.Source)
	}

	seen.Lock()
	defer seen.Unlock()
	if prev, ok := seen.m[target]; ok && prev != m.Source.Name() {
		t.Fatalf("sources %q and %q share the target %q", prev, m.Source.Name(), target)
	}
	if len(seen.m) < 1<<17 {
		seen.m[target] = m.Source.Name()
	}
}

// checkSourceFromTarget treats the input as a target: whatever SourceFromTarget accepts must map back to it.
func checkSourceFromTarget(t *testing.T, b imageref.Backup, target string) {
	src, err := b.SourceFromTarget(target)
	if err != nil {
		if !strings.Contains(err.Error(), strconv.Quote(target)) {
			t.Fatalf("SourceFromTarget(%q) error %q does not quote the target", target, err)
		}
		return
	}
	m, err := b.Map(src)
	if err != nil {
		t.Fatalf("SourceFromTarget(%q) = %q, but Map fails: %v", target, src, err)
	}
	want, err := name.NewTag(target, name.StrictValidation)
	if err != nil {
		t.Fatalf("SourceFromTarget(%q) succeeded on an invalid tag: %v", target, err)
	}
	if m.Target.Name() != want.Name() || m.Source.Name() != src {
		t.Fatalf("SourceFromTarget(%q) = %q, but that maps to %q from %q", target, src, m.Target.Name(), m.Source.Name())
	}
}

// checkParseBackup checks that a parsed backup is normalized: parsing its String gives the same backup.
func checkParseBackup(t *testing.T, s string) {
	b, err := imageref.ParseBackup(s)
	if err != nil {
		if !strings.Contains(err.Error(), strconv.Quote(s)) {
			t.Fatalf("ParseBackup(%q) error %q does not quote the input", s, err)
		}
		return
	}
	b2, err := imageref.ParseBackup(b.String())
	if err != nil || b2 != b {
		t.Fatalf("ParseBackup(%q) = %q, which does not parse to itself: %v", s, b, err)
	}
	if !strings.HasPrefix(b.String(), b.Registry()) {
		t.Fatalf("ParseBackup(%q) = %q with registry %q", s, b, b.Registry())
	}
}

// sameRegistry reports whether normalized is a spelling of registry: same host ignoring case and IPv6
// notation, same port, docker.io being index.docker.io.
func sameRegistry(registry, normalized string) bool {
	if strings.HasPrefix(registry, "[") {
		a, aPort, _ := strings.Cut(registry[1:], "]")
		n, nPort, _ := strings.Cut(normalized[1:], "]")
		aa, err1 := netip.ParseAddr(a)
		na, err2 := netip.ParseAddr(n)
		return err1 == nil && err2 == nil && aa == na && aPort == nPort
	}
	registry = strings.ToLower(registry)
	return registry == normalized || (registry == "docker.io" && normalized == name.DefaultRegistry)
}
