// Package imageref holds the pure naming rules of the controller: how a pod's image string is parsed and
// normalized, and where its copy lives in the backup registry. It performs no I/O so that the rules can be
// tested exhaustively and fuzzed, and so that every component (reconcilers, webhook, copier) agrees on them.
//
// # Naming scheme
//
// A source image is normalized first (registry defaults to index.docker.io, docker.io is an alias of it,
// official images get the "library/" namespace, the tag defaults to "latest", registry hosts are lowercased,
// a tag next to a digest is dropped because the digest alone identifies the content). Its copy is then pushed to
//
//	<backup>/<encoded source registry>/<source repository>:<tag, or "<algorithm>_<hex>" for digest pins>
//
// where <backup> is Backup.String(). Digest-pinned images keep their pin in the pod: PodImage is
// "<target>@<digest>", so the kubelet still verifies the content. Examples with <backup> = B:
//
//	pod image                                    target (PodImage)
//	-------------------------------------------  ----------------------------------------------------------
//	nginx, docker.io/library/nginx               B/index_docker_io/library/nginx:latest
//	nginx:1.23                                   B/index_docker_io/library/nginx:1.23
//	grafana/grafana:main                         B/index_docker_io/grafana/grafana:main
//	ghcr.io/timebertt/speedtest-exporter:v0.1.0  B/ghcr_io/timebertt/speedtest-exporter:v0.1.0
//	localhost:5000/team/app:v2                   B/localhost_5000/team/app:v2
//	nginx@sha256:<hex>, nginx:1.25@sha256:<hex>  B/index_docker_io/library/nginx:sha256_<hex>@sha256:<hex>
//
// # Registry encoding
//
// The source registry becomes exactly one path component. The encoding must be injective, because two
// different sources sharing one target would silently serve one image in place of the other:
//
//	source registry              encoded component           rule
//	---------------------------  --------------------------  ----------------------------------------------------
//	ghcr.io, My-Reg.IO           ghcr_io, my-reg_io          lowercase; "." -> "_"; dashes are kept
//	reg.example:5000             reg_example_5000            ":" before the port -> "_"
//	10.0.0.1, 10.0.0.1:5000      10_0_0_1, 10_0_0_1_5000     IPv4 addresses are the only hosts allowed an
//	                                                         all-digit last label
//	reg.example.5000, foo.123    (error)                     all-digit last label on a non-IPv4 host: it would
//	                                                         read as a port, and no real DNS name has one
//	reg_x.io                     (error)                     "_" is not valid in host names and would read as
//	                                                         a separator
//	[::1]:5000, [fd00::1]        ip6_0_0_0_0_0_0_0_1_5000,   "ip6" + the 8 expanded groups in lowercase hex
//	                             ip6_fd00_0_0_0_0_0_0_1      without leading zeros (+ "_" + port); sources are
//	                                                         normalized to the RFC 5952 form ([FD00:0::1] is
//	                                                         [fd00::1]); zones and [1.2.3.4] are rejected by
//	                                                         go-containerregistry already
//	ip6.0.0.0.0.0.0.0.abcd,      (error)                     a DNS host[:port] whose encoding is "ip6" + 8
//	ip6.0.0.0.0.0.0.a:1                                      groups of 1-4 hex digits (+ "_" + digits) would
//	                                                         read as an encoded IPv6 address
//	héllo.io, a!b.io, host:      (error)                     only ASCII letters, digits, "-" and "." in DNS
//	                                                         labels; ports are 1-65535 without leading zeros
//
// Decoding therefore is unambiguous: "ip6", 8 hex groups and an optional all-digit port token are IPv6; otherwise
// an all-digit last "_"-separated token is a port unless the whole component is an IPv4 address; all other "_" were
// dots. Backup.SourceFromTarget implements that inverse, and the fuzz test checks Map against it.
//
// Tags of the form "sha256_<64 hex>" and "sha384_<96 hex>" are reserved for digest pins and rejected on tag
// sources, otherwise "app:sha256_<hex>" and "app@sha256:<hex>" would share a target. sha512 pins are rejected
// because "sha512_<128 hex>" exceeds the 128 character tag limit.
//
// # Other limits
//
// Repository path components must match the distribution grammar [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*
// (go-containerregistry only checks the character set, so "a//b" or "-a" would otherwise reach the registry),
// the target repository including the backup host must not exceed 255 characters and the target tag 128.
// Images that already live in the backup (Backup.Contains: same registry and, with a path prefix, a repository
// equal to or below the prefix) are rejected by Map: callers check Contains first and leave such images alone,
// which also keeps the controller from copying its own copies.
package imageref

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/google/go-containerregistry/pkg/name"
)

const (
	// maxRepositoryLength is the distribution limit for a full repository name including the registry host.
	maxRepositoryLength = 255
	// maxTagLength is the distribution limit for a tag.
	maxTagLength = 128
	// maxHostLength is the DNS limit for a host name.
	maxHostLength = 253

	defaultRegistry      = name.DefaultRegistry
	defaultRegistryAlias = "docker.io"
	ip6Marker            = "ip6"
)

var (
	// pathComponent is the distribution grammar for one repository path component.
	pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
	// tagPattern is the distribution grammar for tags; go-containerregistry also accepts a leading "." or "-".
	tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	// dnsLabel is one lowercase label of a DNS host name.
	dnsLabel = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)
	// hexGroup is one IPv6 group as used in the encoding and in the reserved "ip6" host rule.
	hexGroup = regexp.MustCompile(`^[0-9a-f]{1,4}$`)
	// digits matches all-numeric labels and ports.
	digits = regexp.MustCompile(`^[0-9]+$`)
	// digestTag matches the tags that Map produces for digest pins; only algorithms whose tag fits 128 characters.
	digestTag = regexp.MustCompile(`^(sha256_[a-f0-9]{64}|sha384_[a-f0-9]{96})$`)
)

// Backup is a parsed --backup-registry value: host[:port][/path/prefix].
type Backup struct {
	registry string // normalized host[:port]
	prefix   string // repository path prefix without surrounding slashes, "" for none
}

// ParseBackup validates a --backup-registry value such as "10.96.0.11:5001", "registry.example.com/mirror" or
// "localhost:5000/a/b", so that a misconfiguration fails at startup instead of on the first copy.
func ParseBackup(s string) (Backup, error) {
	fail := func(format string, args ...any) (Backup, error) { //nolint:unparam // lets call sites read "return fail(...)"
		return Backup{}, fmt.Errorf("invalid backup registry %q: "+format, append([]any{s}, args...)...)
	}
	switch {
	case s == "":
		return fail("must not be empty; want HOST[:PORT][/PATH]")
	case strings.Contains(s, "://"):
		return fail("must not contain a URL scheme; want HOST[:PORT][/PATH]")
	case strings.IndexFunc(s, unicode.IsSpace) >= 0:
		return fail("must not contain whitespace")
	case strings.Contains(s, "@"):
		return fail("must not contain a digest; want HOST[:PORT][/PATH]")
	}
	hostPart, prefix, _ := strings.Cut(strings.TrimSuffix(s, "/"), "/")
	if strings.Contains(prefix, ":") {
		return fail("must not contain a tag; want HOST[:PORT][/PATH]")
	}
	h, err := parseHost(hostPart)
	if err != nil {
		return fail("%w", err)
	}
	if h.registry != "localhost" && !strings.ContainsAny(h.registry, ".:") {
		// Image references only treat the first component as a registry under these conditions; anything else
		// would make the copies land on Docker Hub under a namespace of that name.
		return fail("host %q must contain a \".\" or a port, or be \"localhost\"", hostPart)
	}
	if prefix != "" {
		for c := range strings.SplitSeq(prefix, "/") {
			if c != strings.ToLower(c) {
				return fail("path component %q must be lowercase", c)
			}
			if !pathComponent.MatchString(c) {
				return fail("path component %q must match %s", c, pathComponent)
			}
		}
	}
	b := Backup{registry: h.registry, prefix: prefix}
	// The shortest possible target adds "/<host>/<repo>"; leave room for at least that.
	if len(b.String())+4 > maxRepositoryLength {
		return fail("longer than the repository name limit of %d characters allows", maxRepositoryLength)
	}
	if _, err := name.NewRepository(b.String()+"/x", name.StrictValidation); err != nil {
		return fail("%w", err)
	}
	return b, nil
}

// String returns the normalized value (host[:port][/prefix]), the base of every target reference.
func (b Backup) String() string {
	if b.prefix == "" {
		return b.registry
	}
	return b.registry + "/" + b.prefix
}

// Registry returns the normalized host[:port], which is what credentials and transports are keyed by.
func (b Backup) Registry() string {
	return b.registry
}

// Contains reports whether image already lives in the backup registry, so that callers leave backups alone
// instead of copying them again: its registry equals the backup registry and, when the backup has a path prefix,
// its repository is the prefix or below it. Invalid references are not contained.
func (b Backup) Contains(image string) bool {
	src, err := parseSource(image)
	if err != nil {
		return false
	}
	return b.contains(src.host.registry, src.repo.RepositoryStr())
}

func (b Backup) contains(registry, repository string) bool {
	if registry != b.registry {
		return false
	}
	return b.prefix == "" || repository == b.prefix || strings.HasPrefix(repository, b.prefix+"/")
}

// Mapping is the result of mapping one source image into the backup registry.
type Mapping struct {
	// Source is the normalized source, e.g. index.docker.io/library/nginx:latest or ...@sha256:<hex>.
	Source name.Reference
	// Target is where the copy is pushed: <backup>/<encoded host>/<repository>:<tag or sha256_<hex>>.
	Target name.Tag
	// Digest is the pinned digest "sha256:<hex>" when the source was digest-pinned, "" otherwise.
	Digest string
}

// PodImage returns the image string to write into the pod template; digest pins are kept so that the kubelet
// keeps verifying the content: Target for tag sources, Target + "@" + Digest for digest-pinned sources.
func (m Mapping) PodImage() string {
	if m.Digest == "" {
		return m.Target.Name()
	}
	return m.Target.Name() + "@" + m.Digest
}

// Map computes the backup reference of a pod image string; it errors for invalid references, for images
// that cannot be named injectively in the backup (see the package documentation) and for images that
// already live in the backup registry (check Contains first).
func (b Backup) Map(image string) (Mapping, error) {
	src, err := parseSource(image)
	if err != nil {
		return Mapping{}, err
	}
	fail := func(format string, args ...any) (Mapping, error) {
		return Mapping{}, fmt.Errorf("invalid image reference %q: "+format, append([]any{image}, args...)...)
	}
	if b.contains(src.host.registry, src.repo.RepositoryStr()) {
		return fail("already in the backup registry %q and must not be copied again", b.String())
	}

	var (
		m   Mapping
		tag string
	)
	switch ref := src.ref.(type) {
	case name.Tag:
		tag = ref.TagStr()
		if !tagPattern.MatchString(tag) {
			return fail("tag %q must match %s", tag, tagPattern)
		}
		if digestTag.MatchString(tag) {
			return fail("tag %q is reserved for digest-pinned images in the backup registry; pin by digest instead", tag)
		}
		m.Source = src.repo.Tag(tag)
	case name.Digest:
		m.Digest = ref.DigestStr()
		tag = strings.Replace(m.Digest, ":", "_", 1)
		if len(tag) > maxTagLength {
			return fail("digest %q gives the tag %q in the backup registry, which exceeds the tag limit of %d characters",
				m.Digest, tag, maxTagLength)
		}
		m.Source = src.repo.Digest(m.Digest)
	default:
		return fail("unsupported reference type %T", ref)
	}

	repo := b.String() + "/" + src.host.encoded + "/" + src.repo.RepositoryStr()
	if len(repo) > maxRepositoryLength {
		return fail("the backup repository %q exceeds the repository name limit of %d characters", repo, maxRepositoryLength)
	}
	target, err := name.NewTag(repo+":"+tag, name.StrictValidation)
	if err != nil {
		return fail("the backup reference %q is invalid: %w", repo+":"+tag, err)
	}
	m.Target = target
	return m, nil
}

// SourceFromTarget inverts Map: given a backup reference produced by Map (without the digest suffix), it returns
// the normalized source reference it came from. It exists so that fuzzing can prove that Map is injective.
func (b Backup) SourceFromTarget(target string) (string, error) {
	fail := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("invalid backup reference %q: "+format, append([]any{target}, args...)...)
	}
	t, err := name.NewTag(target, name.StrictValidation)
	if err != nil {
		return fail("%w", err)
	}
	h, err := parseHost(t.RegistryStr())
	if err != nil {
		return fail("%w", err)
	}
	rest := t.RepositoryStr()
	if h.registry != b.registry {
		return fail("not in the backup registry %q", b.registry)
	}
	if b.prefix != "" {
		var ok bool
		if rest, ok = strings.CutPrefix(rest, b.prefix+"/"); !ok {
			return fail("not below the backup path %q", b.prefix)
		}
	}
	encoded, repo, ok := strings.Cut(rest, "/")
	if !ok || repo == "" {
		return fail("want %s/<encoded registry>/<repository>:<tag>", b)
	}
	host, err := decodeHost(encoded)
	if err != nil {
		return fail("%w", err)
	}
	source := host + "/" + repo + ":" + t.TagStr()
	if digestTag.MatchString(t.TagStr()) {
		source = host + "/" + repo + "@" + strings.Replace(t.TagStr(), "_", ":", 1)
	}
	// Mapping the candidate back proves it is the one source that yields this target.
	m, err := b.Map(source)
	if err != nil {
		return fail("no source maps to it: %w", err)
	}
	if m.Target.Name() != t.Name() {
		return fail("not a target produced by Map (%q maps to %q)", source, m.Target.Name())
	}
	return m.Source.Name(), nil
}

// Unmap returns the Mapping that produced podImage, a pod image the controller wrote (Mapping.PodImage): the
// backup target, with the "@digest" suffix of a digest pin, mapped back to its source. It errors for images in
// the backup registry that Map did not produce, which are no copies of the controller's.
//
//	<B>/index_docker_io/library/nginx:1.25                   → source index.docker.io/library/nginx:1.25
//	<B>/ghcr_io/org/app:sha256_<hex>@sha256:<hex>            → source ghcr.io/org/app@sha256:<hex>
//	<B>/ghcr_io/org/app:sha256_<hex>@sha256:<other hex>      → error: the pin and the tag disagree
func (b Backup) Unmap(podImage string) (Mapping, error) {
	target, pin, pinned := strings.Cut(podImage, "@")
	source, err := b.SourceFromTarget(target)
	if err != nil {
		return Mapping{}, err
	}
	m, err := b.Map(source)
	if err != nil {
		return Mapping{}, err
	}
	if pinned && pin != m.Digest {
		return Mapping{}, fmt.Errorf("invalid backup reference %q: the digest %q is not the one its tag names", podImage, pin)
	}
	return m, nil
}

// source is a parsed and normalized pod image reference.
type source struct {
	ref  name.Reference // as parsed by go-containerregistry
	host host
	repo name.Repository // normalized registry and repository
}

func parseSource(image string) (source, error) {
	fail := func(format string, args ...any) (source, error) { //nolint:unparam // lets call sites read "return fail(...)"
		return source{}, fmt.Errorf("invalid image reference %q: "+format, append([]any{image}, args...)...)
	}
	switch {
	case image == "":
		return fail("must not be empty")
	case strings.IndexFunc(image, unicode.IsSpace) >= 0:
		return fail("must not contain whitespace")
	case strings.Contains(image, "://"):
		return fail("must not contain a URL scheme")
	}
	// ParseReference hides why a reference is invalid; calling the typed parsers keeps the reason. A "@" can
	// only be valid as the digest separator, so the choice is the same one ParseReference makes.
	var (
		ref name.Reference
		err error
	)
	if strings.Contains(image, "@") {
		ref, err = name.NewDigest(image)
	} else {
		ref, err = name.NewTag(image)
	}
	if err != nil {
		return fail("%w", err)
	}
	h, err := parseHost(ref.Context().RegistryStr())
	if err != nil {
		return fail("%w", err)
	}
	// go-containerregistry only checks the character set of repositories.
	repository := ref.Context().RepositoryStr()
	for c := range strings.SplitSeq(repository, "/") {
		if !pathComponent.MatchString(c) {
			return fail("repository path component %q must match %s", c, pathComponent)
		}
	}
	// Rebuilding from the normalized host applies the Docker Hub rules to spellings such as "Docker.IO/nginx",
	// which go-containerregistry leaves alone.
	reg, err := name.NewRegistry(h.registry)
	if err != nil {
		return fail("%w", err)
	}
	return source{ref: ref, host: h, repo: reg.Repo(repository)}, nil
}

// host is a normalized registry host and its encoding as one repository path component.
type host struct {
	registry string // host[:port] as written in references
	encoded  string
}

// parseHost normalizes and encodes a registry host[:port]; see the package documentation for the rules.
func parseHost(s string) (host, error) {
	if s == "" {
		return host{}, errors.New("registry host must not be empty")
	}
	if strings.HasPrefix(s, "[") {
		return parseIPv6Host(s)
	}
	hostname, port, hasPort := strings.Cut(s, ":")
	if hasPort {
		if err := checkPort(port); err != nil {
			return host{}, fmt.Errorf("registry %q: %w", s, err)
		}
	}
	for _, r := range hostname {
		if r > unicode.MaxASCII {
			return host{}, fmt.Errorf("registry host %q must be ASCII (use the punycode form)", hostname)
		}
	}
	hostname = strings.ToLower(hostname)
	if strings.Contains(hostname, "_") {
		return host{}, fmt.Errorf("registry host %q must not contain \"_\": it is not valid in host names and would make the backup naming ambiguous", hostname)
	}
	if len(hostname) > maxHostLength {
		return host{}, fmt.Errorf("registry host %q exceeds %d characters", hostname, maxHostLength)
	}
	labels := strings.Split(hostname, ".")
	for _, l := range labels {
		if !dnsLabel.MatchString(l) {
			return host{}, fmt.Errorf("registry host %q: label %q must be 1-63 letters, digits or inner dashes", hostname, l)
		}
	}
	if digits.MatchString(labels[len(labels)-1]) {
		if a, err := netip.ParseAddr(hostname); err != nil || !a.Is4() {
			return host{}, fmt.Errorf("registry host %q has an all-numeric last label but is not an IPv4 address: it cannot be resolved and would make the backup naming ambiguous", hostname)
		}
	}
	if hostname == defaultRegistryAlias && !hasPort {
		hostname = defaultRegistry
	}
	h := host{registry: hostname, encoded: strings.ReplaceAll(hostname, ".", "_")}
	if hasPort {
		h.registry += ":" + port
		h.encoded += "_" + port
	}
	if isIPv6Encoding(strings.Split(h.encoded, "_")) {
		return host{}, fmt.Errorf("registry %q is reserved: it would read as an encoded IPv6 address in the backup naming", h.registry)
	}
	return h, nil
}

// isIPv6Encoding reports whether the "_"-separated tokens of an encoded host are decoded as an IPv6 address:
// "ip6", 8 groups of 1-4 hex digits and an optional port. DNS hosts encoding to such tokens are rejected, which
// keeps the two forms apart whatever the last group looks like.
func isIPv6Encoding(tokens []string) bool {
	switch {
	case len(tokens) != 9 && len(tokens) != 10:
		return false
	case tokens[0] != ip6Marker || !allMatch(tokens[1:9], hexGroup):
		return false
	default:
		return len(tokens) == 9 || digits.MatchString(tokens[9])
	}
}

func parseIPv6Host(s string) (host, error) {
	addr, port, _ := strings.Cut(s[1:], "]")
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is6() || a.Zone() != "" {
		return host{}, fmt.Errorf("registry %q: %q is not an IPv6 address without zone", s, addr)
	}
	var groups [8]string
	b := a.As16()
	for i := range groups {
		groups[i] = strconv.FormatUint(uint64(b[2*i])<<8|uint64(b[2*i+1]), 16)
	}
	h := host{
		registry: "[" + a.String() + "]",
		encoded:  ip6Marker + "_" + strings.Join(groups[:], "_"),
	}
	if port != "" {
		p, ok := strings.CutPrefix(port, ":")
		if !ok {
			return host{}, fmt.Errorf("registry %q: unexpected %q after the IPv6 address", s, port)
		}
		if err := checkPort(p); err != nil {
			return host{}, fmt.Errorf("registry %q: %w", s, err)
		}
		h.registry += port
		h.encoded += "_" + p
	}
	return h, nil
}

// checkPort accepts only canonical ports so that every registry has one spelling and one encoding.
func checkPort(p string) error {
	n, err := strconv.Atoi(p)
	if !digits.MatchString(p) || err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
		return fmt.Errorf("port %q must be a number from 1 to 65535 without leading zeros", p)
	}
	return nil
}

// decodeHost inverts the host encoding; the result still has to be checked by parseHost.
func decodeHost(enc string) (string, error) {
	tokens := strings.Split(enc, "_")
	if isIPv6Encoding(tokens) {
		var b [16]byte
		for i, g := range tokens[1:9] {
			v, err := strconv.ParseUint(g, 16, 16)
			if err != nil {
				return "", fmt.Errorf("encoded registry %q: %w", enc, err)
			}
			b[2*i], b[2*i+1] = byte(v>>8), byte(v) //nolint:gosec // ParseUint was given bitSize 16, so v fits two bytes
		}
		s := "[" + netip.AddrFrom16(b).String() + "]"
		if len(tokens) == 10 {
			s += ":" + tokens[9]
		}
		return s, nil
	}
	last := tokens[len(tokens)-1]
	if len(tokens) > 1 && digits.MatchString(last) {
		if !isIPv4(strings.Join(tokens, ".")) {
			return strings.Join(tokens[:len(tokens)-1], ".") + ":" + last, nil
		}
	}
	return strings.Join(tokens, "."), nil
}

func allMatch(ss []string, re *regexp.Regexp) bool {
	for _, s := range ss {
		if !re.MatchString(s) {
			return false
		}
	}
	return true
}

// isIPv4 reports whether host is a dotted-quad IPv4 address.
func isIPv4(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.Is4()
}
