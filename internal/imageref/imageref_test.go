package imageref_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
)

const (
	hex256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	// backupIP is the kind registry's ClusterIP as used by the deployment.
	backupIP = "10.96.0.11:5001"
	// backupPrefix exercises a backup below a path prefix.
	backupPrefix = "registry.example.com/backup/team"
)

var hex384 = strings.Repeat("abcdef01", 12)

func mustBackup(t testing.TB, s string) imageref.Backup {
	t.Helper()
	b, err := imageref.ParseBackup(s)
	if err != nil {
		t.Fatalf("ParseBackup(%q): %v", s, err)
	}
	return b
}

// mapCases are valid images; target is relative to the backup, source is the normalized source.
var mapCases = []struct {
	image, target, source, digest string
}{
	// The fixed rows of the naming scheme.
	{"nginx", "index_docker_io/library/nginx:latest", "index.docker.io/library/nginx:latest", ""},
	{"nginx:1.23", "index_docker_io/library/nginx:1.23", "index.docker.io/library/nginx:1.23", ""},
	{"grafana/grafana:main", "index_docker_io/grafana/grafana:main", "index.docker.io/grafana/grafana:main", ""},
	{"ghcr.io/timebertt/speedtest-exporter:v0.1.0", "ghcr_io/timebertt/speedtest-exporter:v0.1.0", "ghcr.io/timebertt/speedtest-exporter:v0.1.0", ""},
	{"localhost:5000/team/app:v2", "localhost_5000/team/app:v2", "localhost:5000/team/app:v2", ""},
	{"nginx@sha256:" + hex256, "index_docker_io/library/nginx:sha256_" + hex256, "index.docker.io/library/nginx@sha256:" + hex256, "sha256:" + hex256},
	{"nginx:1.25@sha256:" + hex256, "index_docker_io/library/nginx:sha256_" + hex256, "index.docker.io/library/nginx@sha256:" + hex256, "sha256:" + hex256},
	// Docker Hub aliases, including spellings go-containerregistry does not normalize itself.
	{"docker.io/nginx", "index_docker_io/library/nginx:latest", "index.docker.io/library/nginx:latest", ""},
	{"index.docker.io/nginx", "index_docker_io/library/nginx:latest", "index.docker.io/library/nginx:latest", ""},
	{"docker.io/library/nginx", "index_docker_io/library/nginx:latest", "index.docker.io/library/nginx:latest", ""},
	{"index.docker.io/library/nginx:latest", "index_docker_io/library/nginx:latest", "index.docker.io/library/nginx:latest", ""},
	{"Docker.IO/nginx", "index_docker_io/library/nginx:latest", "index.docker.io/library/nginx:latest", ""},
	{"INDEX.DOCKER.IO/nginx", "index_docker_io/library/nginx:latest", "index.docker.io/library/nginx:latest", ""},
	{"docker.io/grafana/grafana:main", "index_docker_io/grafana/grafana:main", "index.docker.io/grafana/grafana:main", ""},
	{"docker.io/nginx@sha256:" + hex256, "index_docker_io/library/nginx:sha256_" + hex256, "index.docker.io/library/nginx@sha256:" + hex256, "sha256:" + hex256},
	// A port makes docker.io a different registry, as it is for go-containerregistry.
	{"docker.io:443/x", "docker_io_443/x:latest", "docker.io:443/x:latest", ""},
	{"registry-1.docker.io/library/nginx", "registry-1_docker_io/library/nginx:latest", "registry-1.docker.io/library/nginx:latest", ""},
	// Hosts: case, dashes, ports, IPv4.
	{"Ghcr.IO/timebertt/speedtest-exporter:v0.1.0", "ghcr_io/timebertt/speedtest-exporter:v0.1.0", "ghcr.io/timebertt/speedtest-exporter:v0.1.0", ""},
	{"my-reg.io/app:v1", "my-reg_io/app:v1", "my-reg.io/app:v1", ""},
	{"xn--bcher-kva.example/app", "xn--bcher-kva_example/app:latest", "xn--bcher-kva.example/app:latest", ""},
	{"reg.example:5000/app", "reg_example_5000/app:latest", "reg.example:5000/app:latest", ""},
	{"localhost/app", "localhost/app:latest", "localhost/app:latest", ""},
	{"10.0.0.1/app:v1", "10_0_0_1/app:v1", "10.0.0.1/app:v1", ""},
	{"10.0.0.1:5000/app", "10_0_0_1_5000/app:latest", "10.0.0.1:5000/app:latest", ""},
	{"reg.example.5000x/app", "reg_example_5000x/app:latest", "reg.example.5000x/app:latest", ""},
	// IPv6 hosts are canonicalized.
	{"[::1]:5000/app:v1", "ip6_0_0_0_0_0_0_0_1_5000/app:v1", "[::1]:5000/app:v1", ""},
	{"[fd00::1]/x", "ip6_fd00_0_0_0_0_0_0_1/x:latest", "[fd00::1]/x:latest", ""},
	{"[FD00:0:0::0001]/x", "ip6_fd00_0_0_0_0_0_0_1/x:latest", "[fd00::1]/x:latest", ""},
	{"[::abcd]/x", "ip6_0_0_0_0_0_0_0_abcd/x:latest", "[::abcd]/x:latest", ""},
	{"[::ffff:1.2.3.4]:443/x", "ip6_0_0_0_0_0_ffff_102_304_443/x:latest", "[::ffff:1.2.3.4]:443/x:latest", ""},
	// Repositories and tags.
	{"quay.io/a/b/c/d:1", "quay_io/a/b/c/d:1", "quay.io/a/b/c/d:1", ""},
	{"reg.io/a__b/c--d/e.f/g_h:1", "reg_io/a__b/c--d/e.f/g_h:1", "reg.io/a__b/c--d/e.f/g_h:1", ""},
	{"app:V1.2-RC_3", "index_docker_io/library/app:V1.2-RC_3", "index.docker.io/library/app:V1.2-RC_3", ""},
	{"app:sha256_abc", "index_docker_io/library/app:sha256_abc", "index.docker.io/library/app:sha256_abc", ""},
	{"app:" + strings.Repeat("t", 128), "index_docker_io/library/app:" + strings.Repeat("t", 128), "index.docker.io/library/app:" + strings.Repeat("t", 128), ""},
	{"app@sha384:" + hex384, "index_docker_io/library/app:sha384_" + hex384, "index.docker.io/library/app@sha384:" + hex384, "sha384:" + hex384},
	// The longest repository that fits the 255 character limit below "10.96.0.11:5001/reg_io/" (23 characters).
	{"reg.io/" + strings.Repeat("a", 232), "reg_io/" + strings.Repeat("a", 232) + ":latest", "reg.io/" + strings.Repeat("a", 232) + ":latest", ""},
}

func TestMap(t *testing.T) {
	for _, backup := range []string{backupIP, backupPrefix} {
		b := mustBackup(t, backup)
		for _, tc := range mapCases {
			t.Run(backup+"/"+tc.image, func(t *testing.T) {
				if strings.HasPrefix(tc.image, "reg.io/aaaa") && backup == backupPrefix {
					t.Skip("only fits below the shorter backup")
				}
				m, err := b.Map(tc.image)
				if err != nil {
					t.Fatalf("Map: %v", err)
				}
				if got, want := m.Target.Name(), backup+"/"+tc.target; got != want {
					t.Errorf("Target = %q, want %q", got, want)
				}
				if got := m.Source.Name(); got != tc.source {
					t.Errorf("Source = %q, want %q", got, tc.source)
				}
				if m.Digest != tc.digest {
					t.Errorf("Digest = %q, want %q", m.Digest, tc.digest)
				}
				wantPod := backup + "/" + tc.target
				if tc.digest != "" {
					wantPod += "@" + tc.digest
				}
				if got := m.PodImage(); got != wantPod {
					t.Errorf("PodImage = %q, want %q", got, wantPod)
				}
				if !b.Contains(m.PodImage()) || !b.Contains(m.Target.Name()) {
					t.Errorf("backup does not contain its own copy %q", m.PodImage())
				}
				src, err := b.SourceFromTarget(m.Target.Name())
				if err != nil {
					t.Fatalf("SourceFromTarget: %v", err)
				}
				if src != tc.source {
					t.Errorf("SourceFromTarget = %q, want %q", src, tc.source)
				}
				back, err := b.Unmap(m.PodImage())
				if err != nil {
					t.Fatalf("Unmap(%q): %v", m.PodImage(), err)
				}
				if back.Source.Name() != tc.source || back.PodImage() != m.PodImage() {
					t.Errorf("Unmap(%q) = %q → %q, want %q → %q", m.PodImage(), back.Source, back.PodImage(), tc.source, m.PodImage())
				}
			})
		}
	}
}

// TestUnmapErrors lists backup-registry images that the controller did not write, which Unmap refuses.
func TestUnmapErrors(t *testing.T) {
	b := mustBackup(t, backupPrefix)
	for _, image := range []string{
		"nginx:1.25",                                  // not in the backup registry
		backupPrefix + "/nginx:1.25",                  // no encoded registry
		backupPrefix + "/not_a_host_/library/nginx:1", // a registry that does not decode
		"registry.example.com/backup/other/x/nginx:1", // beside the prefix, not below it
		backupPrefix + "/ghcr_io/org/app:sha256_" + hex256 + "@sha256:" + strings.Repeat("f", 64), // pin and tag disagree
	} {
		if m, err := b.Unmap(image); err == nil {
			t.Errorf("Unmap(%q) = %q, want an error", image, m.Source)
		}
	}
}

// TestMapAliases checks that spellings of one image share one Mapping.
func TestMapAliases(t *testing.T) {
	b := mustBackup(t, backupIP)
	groups := [][]string{
		{"nginx", "nginx:latest", "docker.io/nginx", "index.docker.io/nginx", "docker.io/library/nginx", "index.docker.io/library/nginx:latest", "Docker.io/library/nginx"},
		{"x/y", "docker.io/x/y", "index.docker.io/x/y:latest"},
		{"nginx@sha256:" + hex256, "nginx:1.25@sha256:" + hex256, "docker.io/library/nginx:other@sha256:" + hex256},
		{"[::1]:5000/app", "[0:0:0:0:0:0:0:1]:5000/app", "[::0001]:5000/app:latest"},
	}
	for _, g := range groups {
		first, err := b.Map(g[0])
		if err != nil {
			t.Fatalf("Map(%q): %v", g[0], err)
		}
		for _, image := range g[1:] {
			m, err := b.Map(image)
			if err != nil {
				t.Fatalf("Map(%q): %v", image, err)
			}
			if m.PodImage() != first.PodImage() || m.Source.Name() != first.Source.Name() {
				t.Errorf("Map(%q) = %q from %q, want %q from %q", image, m.PodImage(), m.Source, first.PodImage(), first.Source)
			}
		}
	}
}

// collisionCases pair a source with one that would share its target without the encoding rules.
var collisionCases = []struct{ kept, rejected string }{
	{"reg.example:5000/app", "reg.example.5000/app"},
	{"[::abcd]/x", "ip6.0.0.0.0.0.0.0.abcd/x"},
	{"[::abcd]:5000/x", "ip6.0.0.0.0.0.0.0.abcd:5000/x"},
	{"[::a:1]/0", "ip6.0.0.0.0.0.0.a:1/0"},
	{"[::a:1]/0", "ip6.0.0.0.0.0.0.A:1/0"},
	{"ip6.0.0.0.0.0.0.a:10000/x", "ip6.0.0.0.0.0.0.a:1000/x"},
	{"ip6.0.0.0.0.0.0.0.1.x/y", "ip6.0.0.0.0.0.0.0.1/y"},
	{"nginx@sha256:" + hex256, "nginx:sha256_" + hex256},
	{"1.2.3.4:5/x", "1.2.3.4.5/x"},
	{"reg.x.io/app", "reg_x.io/app"},
}

// TestMapCollisions checks the rules that keep distinct sources apart.
func TestMapCollisions(t *testing.T) {
	b := mustBackup(t, backupIP)
	for _, tc := range collisionCases {
		if _, err := b.Map(tc.kept); err != nil {
			t.Errorf("Map(%q): %v", tc.kept, err)
		}
		if m, err := b.Map(tc.rejected); err == nil {
			t.Errorf("Map(%q) = %q, want an error", tc.rejected, m.PodImage())
		}
	}
}

// mapErrorCases are invalid images (for a backup of backupIP); want is part of the error.
var mapErrorCases = []struct {
	image, want string
	badName     bool // the cause is a go-containerregistry error, wrapped
}{
	{"", "must not be empty", false},
	{"nginx latest", "whitespace", false},
	{" nginx", "whitespace", false},
	{"https://ghcr.io/x", "URL scheme", false},
	{"Nginx", "repository can only contain", true},
	{"docker.io/Library/nginx", "repository can only contain", true},
	{"ghcr.io/Owner/app", "repository can only contain", true},
	{"nginx:", "must specify a tag", true},
	{"nginx:-bad", "must match", false},
	{"nginx:.bad", "must match", false},
	{"nginx:" + strings.Repeat("t", 129), "between 1 and 128", true},
	{"nginx:a/b", "RFC 3986", true},
	{"nginx@sha256:abc", "invalid checksum digest length", true},
	{"nginx@sha256:" + strings.ToUpper(hex256), "invalid checksum digest format", true},
	{"nginx@md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest algorithm", true},
	{"nginx@@sha256:" + hex256, "exactly one '@'", true},
	{"nginx:sha256_" + hex256, "reserved for digest-pinned", false},
	{"nginx:sha384_" + hex384, "reserved for digest-pinned", false},
	{"nginx@sha512:" + hex256 + hex256, "tag limit of 128", false},
	{"reg.example.5000/app", "all-numeric last label", false},
	{"foo.123/app", "all-numeric last label", false},
	{"1.2.3.4.5/app", "all-numeric last label", false},
	{"123:80/app", "all-numeric last label", false},
	{"ip6.0.0.0.0.0.0.0.abcd/x", "reserved", false},
	{"ip6.0.0.0.0.0.0.a:1/x", "reserved", false},
	{"reg_x.io/app", `must not contain "_"`, false},
	{"héllo.io/app", "ASCII", false},
	{"a!b.io/app", "label", false},
	{"a..b/app", "label", false},
	{"-reg.io/app", "label", false},
	{":5000/app", "label", false},
	{"host:/x", "port", false},
	{"reg.io:0/x", "port", false},
	{"reg.io:99999/x", "port", false},
	{"reg.io:05000/x", "port", false},
	{"a:b:5000/x", "port", false},
	{"[::1]:/x", "port", false},
	{"[1.2.3.4]/x", "RFC 3986", true},
	{"[fe80::1%25en0]/x", "RFC 3986", true},
	{"a//b", "path component", false},
	{"-a", "path component", false},
	{"reg.io/a/", "path component", false},
	{"reg.io/./x", "path component", false},
	{"foo___bar", "path component", false},
	{"foo._bar", "path component", false},
	{"reg.io/" + strings.Repeat("a", 233), "limit of 255", false},
	{"reg.io/" + strings.Repeat("a", 256), "between 1 and 255", true},
	{backupIP + "/index_docker_io/library/nginx:latest", "already in the backup", false},
	{backupIP + "/anything@sha256:" + hex256, "already in the backup", false},
}

func TestMapErrors(t *testing.T) {
	b := mustBackup(t, backupIP)
	for _, tc := range mapErrorCases {
		t.Run(tc.image, func(t *testing.T) {
			m, err := b.Map(tc.image)
			if err == nil {
				t.Fatalf("Map = %q, want an error", m.PodImage())
			}
			if !strings.Contains(err.Error(), strconv.Quote(tc.image)) {
				t.Errorf("error %q does not quote the image", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if got := errors.Is(err, &name.ErrBadName{}); got != tc.badName {
				t.Errorf("errors.Is(err, ErrBadName) = %v, want %v (error %q)", got, tc.badName, err)
			}
		})
	}
}

func TestMapPrefixLength(t *testing.T) {
	// The limit counts the backup prefix, too.
	b := mustBackup(t, backupPrefix)
	fits := "reg.io/" + strings.Repeat("a", 255-len(backupPrefix+"/reg_io/"))
	if _, err := b.Map(fits); err != nil {
		t.Errorf("Map(%d characters): %v", len(fits), err)
	}
	if _, err := b.Map(fits + "a"); err == nil || !strings.Contains(err.Error(), "limit of 255") {
		t.Errorf("Map(%d characters) = %v, want the length error", len(fits)+1, err)
	}
}

// containsCases list images that are or are not in a backup.
var containsCases = []struct {
	backup, image string
	want          bool
}{
	{backupIP, backupIP + "/index_docker_io/library/nginx:latest", true},
	{backupIP, backupIP + "/index_docker_io/library/nginx:sha256_" + hex256 + "@sha256:" + hex256, true},
	{backupIP, backupIP + "/anything", true},
	{backupIP, "10.96.0.11:5002/index_docker_io/library/nginx:latest", false},
	{backupIP, "10.96.0.11/index_docker_io/library/nginx:latest", false},
	{backupIP, "nginx", false},
	{backupIP, "", false},
	{backupIP, "Nginx", false},
	{backupIP, backupIP + "/a//b", false},
	{backupPrefix, backupPrefix + "/ghcr_io/x:v1", true},
	{backupPrefix, "Registry.Example.COM/backup/team/ghcr_io/x:v1", true},
	{backupPrefix, backupPrefix, true},
	{backupPrefix, backupPrefix + "x/ghcr_io/x:v1", false},
	{backupPrefix, "registry.example.com/backup/other/x", false},
	{backupPrefix, "registry.example.com/backup", false},
	{backupPrefix, "registry.example.com:443/backup/team/x", false},
	{backupPrefix, "registry.example.com/other/app", false},
	{"localhost:5000/backup", "localhost:5000/backup/app", true},
	{"localhost:5000/backup", "localhost:5000/backupx/app", false},
	{"localhost:5000/backup", "localhost/backup/app", false},
	{"docker.io/myorg", "myorg/app", true},
	{"docker.io/myorg", "index.docker.io/myorg/app:v1", true},
	{"docker.io/myorg", "myorgx/app", false},
	{"docker.io/myorg", "nginx", false},
	{"[fd00::1]:5000", "[FD00:0::1]:5000/x", true},
	{"[fd00::1]:5000", "[fd00::2]:5000/x", false},
}

func TestContains(t *testing.T) {
	for _, tc := range containsCases {
		b := mustBackup(t, tc.backup)
		if got := b.Contains(tc.image); got != tc.want {
			t.Errorf("ParseBackup(%q).Contains(%q) = %v, want %v", tc.backup, tc.image, got, tc.want)
		}
	}
}

func TestParseBackup(t *testing.T) {
	for _, tc := range []struct{ in, str, registry string }{
		{backupIP, backupIP, backupIP},
		{"registry.example.com/mirror", "registry.example.com/mirror", "registry.example.com"},
		{"localhost:5000/a/b", "localhost:5000/a/b", "localhost:5000"},
		{"localhost", "localhost", "localhost"},
		{"Registry.Example.COM/mirror", "registry.example.com/mirror", "registry.example.com"},
		{"registry.example.com/mirror/", "registry.example.com/mirror", "registry.example.com"},
		{"docker.io/myorg", "index.docker.io/myorg", "index.docker.io"},
		{"[FD00::0001]:5000/x", "[fd00::1]:5000/x", "[fd00::1]:5000"},
		{"reg.io/a__b/c-d/e.f", "reg.io/a__b/c-d/e.f", "reg.io"},
	} {
		b, err := imageref.ParseBackup(tc.in)
		if err != nil {
			t.Errorf("ParseBackup(%q): %v", tc.in, err)
			continue
		}
		if b.String() != tc.str || b.Registry() != tc.registry {
			t.Errorf("ParseBackup(%q) = %q (registry %q), want %q (registry %q)", tc.in, b, b.Registry(), tc.str, tc.registry)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "must not be empty"},
		{"https://registry.example.com", "URL scheme"},
		{"http://localhost:5000/x", "URL scheme"},
		{"reg.io/x:tag", "tag"},
		{"reg.io/x@sha256:" + hex256, "digest"},
		{"reg.io:latest", "port"},
		{"reg.io:0", "port"},
		{"reg io", "whitespace"},
		{"/x", "must not be empty"},
		{"reg_x.io", `"_"`},
		{"héllo.io", "ASCII"},
		{"registry", `must contain a "."`},
		{"registry/x", `must contain a "."`},
		{"foo.123", "all-numeric"},
		{"reg.io/Mirror", "must be lowercase"},
		{"reg.io/a//b", "path component"},
		{"reg.io/-a", "path component"},
		{"reg.io/a//", "path component"},
		{"reg.io/" + strings.Repeat("a", 250), "limit of 255"},
	} {
		b, err := imageref.ParseBackup(tc.in)
		if err == nil {
			t.Errorf("ParseBackup(%q) = %q, want an error", tc.in, b)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), strconv.Quote(tc.in)) {
			t.Errorf("ParseBackup(%q) error %q, want it to quote the input and contain %q", tc.in, err, tc.want)
		}
	}
}

func TestSourceFromTargetErrors(t *testing.T) {
	for _, tc := range []struct{ backup, target, want string }{
		{backupIP, "nginx:latest", "registry to be explicitly defined"},
		{backupIP, "ghcr.io/x/y:latest", "not in the backup registry"},
		{backupIP, "10.96.0.11:5002/index_docker_io/library/nginx:latest", "not in the backup registry"},
		{backupIP, backupIP + "/index_docker_io:latest", "want"},
		{backupIP, backupIP + "/index_docker_io/library/nginx", "tag"},
		// "foo/app" would be a Docker Hub repository, which Map names index_docker_io/foo/app.
		{backupIP, backupIP + "/foo/app:v1", "not a target produced by Map"},
		// Non-canonical encodings have no source.
		{backupIP, backupIP + "/a_b_05000/app:v1", "port"},
		{backupIP, backupIP + "/ip6_0_0_0_0_0_0_0_01/app:v1", "not a target produced by Map"},
		{backupIP, backupIP + "/docker_io/library/nginx:latest", "not a target produced by Map"},
		{backupIP, backupIP + "/index_docker_io/nginx:latest", "not a target produced by Map"},
		{backupIP, backupIP + "/reg_io/app:-x", "tag"},
		{backupPrefix, "registry.example.com/backup/teamx/ghcr_io/app:v1", "not below the backup path"},
		{backupPrefix, "registry.example.com/backup/ghcr_io/app:v1", "not below the backup path"},
	} {
		src, err := mustBackup(t, tc.backup).SourceFromTarget(tc.target)
		if err == nil {
			t.Errorf("SourceFromTarget(%q) = %q, want an error", tc.target, src)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), strconv.Quote(tc.target)) {
			t.Errorf("SourceFromTarget(%q) error %q, want it to quote the target and contain %q", tc.target, err, tc.want)
		}
	}
}

// TestMapInjectiveHosts maps every host spelled from a few confusable labels and separators and checks that no
// two different sources share a target.
func TestMapInjectiveHosts(t *testing.T) {
	b := mustBackup(t, backupIP)
	var hosts []string
	var build func(labels []string, prefix string, n int)
	build = func(labels []string, prefix string, n int) {
		hosts = append(hosts, prefix)
		if n == 0 {
			return
		}
		for _, l := range labels {
			build(labels, prefix+"."+l, n-1)
			build(labels, prefix+":"+l, n-1)
			build(labels, prefix+"_"+l, n-1)
		}
	}
	// Up to four labels from a small set (enough for IPv4 addresses with ports), three from a larger one.
	for _, set := range []struct {
		labels []string
		depth  int
	}{
		{[]string{"a", "1", "0", "5000", "ip6", "10"}, 3},
		{[]string{"a", "b-c", "1", "0", "5000", "ip6", "abcd", "localhost", "docker", "io", "index", "10", "A"}, 2},
	} {
		for _, l := range set.labels {
			build(set.labels, l, set.depth)
		}
	}
	// IPv6 addresses and DNS names that spell their encodings, with the port taking the place of the last group.
	for _, g := range []string{"0", "1", "a", "abcd", "ffff", "10000", "x"} {
		for _, p := range []string{"", ":1", ":5000", ":10000", ":x"} {
			for _, ip := range []string{"0:0:0:0:0:0:0:" + g, "0:0:0:0:0:0:" + g} {
				hosts = append(hosts, "["+ip+"]"+p, "ip6."+strings.ReplaceAll(ip, ":", ".")+p, "ip6."+strings.ReplaceAll(ip, ":", ".")+"."+g+p)
			}
		}
	}

	targets := map[string]string{}
	mapped := 0
	for _, h := range hosts {
		for _, image := range []string{h + "/app", h + "/app@sha256:" + hex256} {
			m, err := b.Map(image)
			if err != nil {
				continue
			}
			mapped++
			if prev, ok := targets[m.Target.Name()]; ok && prev != m.Source.Name() {
				t.Fatalf("%q and %q share the target %q", prev, m.Source.Name(), m.Target.Name())
			}
			targets[m.Target.Name()] = m.Source.Name()
			if src, err := b.SourceFromTarget(m.Target.Name()); err != nil || src != m.Source.Name() {
				t.Fatalf("SourceFromTarget(%q) = %q, %v; want %q", m.Target.Name(), src, err, m.Source.Name())
			}
		}
	}
	t.Logf("%d hosts, %d mapped images, %d distinct targets", len(hosts), mapped, len(targets))
}
