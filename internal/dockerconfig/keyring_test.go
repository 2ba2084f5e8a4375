package dockerconfig_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"

	"github.com/image-clone-controller/image-clone-controller/internal/dockerconfig"
)

// up is the credentials a case expects: username and password, with tokens where set.
type up = authn.AuthConfig

func userPass(u, p string) *up { return &up{Username: u, Password: p} }

// source is one way credentials reach the controller. Every lookup case runs through each.
type source struct {
	name string
	// legacy sources take the .dockercfg form; the others the config.json form.
	legacy bool
	load   func(t *testing.T, data []byte) (authn.Keychain, error)
}

var sources = []source{
	{name: "file", load: func(t *testing.T, data []byte) (authn.Keychain, error) {
		path := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return dockerconfig.FileKeychain(path)
	}},
	{name: "dockerconfigjson secret", load: func(t *testing.T, data []byte) (authn.Keychain, error) {
		return dockerconfig.FromSecret(pullSecret(corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey, data))
	}},
	{name: "dockercfg secret", legacy: true, load: func(t *testing.T, data []byte) (authn.Keychain, error) {
		return dockerconfig.FromSecret(pullSecret(corev1.SecretTypeDockercfg, corev1.DockerConfigKey, data))
	}},
}

func pullSecret(typ corev1.SecretType, key string, data []byte) corev1.Secret {
	secret := corev1.Secret{Type: typ, Data: map[string][]byte{key: data}}
	secret.Namespace, secret.Name = "ns", "regcred"
	return secret
}

// lookupCase is a config, a target and the credentials the kubelet would pull the target with (nil:
// anonymous).
type lookupCase struct {
	name string
	// entries is the body of the JSON object of registry keys to entries, without braces. The case runs with
	// {"auths": {entries}} through the config.json sources and with {entries} through the .dockercfg ones.
	entries string
	// raw, when set instead of entries, is the exact .dockerconfigjson; the case skips .dockercfg sources.
	raw string
	// image is resolved as the repository of name.ParseReference(image), or as name.NewRegistry(image)
	// when registry is set.
	image    string
	registry bool
	want     *up
}

const (
	kubectlDockerIO    = `{"auths":{"docker.io":{"username":"u","password":"p","email":"e","auth":"dTpw"}}}`
	kubectlDefaultHost = `{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p","email":"e","auth":"dTpw"}}}`
)

var lookupCases = []lookupCase{
	// Docker Hub, under every key the kubelet accepts for it.
	{name: "docker.io key, nginx", entries: `"docker.io": {"username": "u", "password": "p"}`, image: "nginx", want: userPass("u", "p")},
	{name: "docker.io key, library/nginx", entries: `"docker.io": {"username": "u", "password": "p"}`, image: "library/nginx", want: userPass("u", "p")},
	{name: "docker.io key, docker.io/library/nginx", entries: `"docker.io": {"username": "u", "password": "p"}`, image: "docker.io/library/nginx", want: userPass("u", "p")},
	{name: "docker.io key, docker.io/nginx", entries: `"docker.io": {"username": "u", "password": "p"}`, image: "docker.io/nginx", want: userPass("u", "p")},
	{name: "docker.io key, index.docker.io/library/nginx", entries: `"docker.io": {"username": "u", "password": "p"}`, image: "index.docker.io/library/nginx", want: userPass("u", "p")},
	{name: "docker.io key, user repository", entries: `"docker.io": {"username": "u", "password": "p"}`, image: "someone/app:1.0", want: userPass("u", "p")},
	{name: "docker.io key, Docker Hub registry", entries: `"docker.io": {"username": "u", "password": "p"}`, image: "docker.io", registry: true, want: userPass("u", "p")},
	{name: "https://docker.io key", entries: `"https://docker.io": {"username": "u", "password": "p"}`, image: "nginx", want: userPass("u", "p")},
	{name: "index.docker.io key, nginx", entries: `"index.docker.io": {"username": "u", "password": "p"}`, image: "nginx", want: userPass("u", "p")},
	{name: "index.docker.io key, index.docker.io/library/nginx", entries: `"index.docker.io": {"username": "u", "password": "p"}`, image: "index.docker.io/library/nginx", want: userPass("u", "p")},
	{name: "index.docker.io key, Docker Hub registry", entries: `"index.docker.io": {"username": "u", "password": "p"}`, image: "index.docker.io", registry: true, want: userPass("u", "p")},
	{name: "https://index.docker.io/v1/ key", entries: `"https://index.docker.io/v1/": {"username": "u", "password": "p"}`, image: "nginx", want: userPass("u", "p")},
	{name: "http://index.docker.io/v1/ key", entries: `"http://index.docker.io/v1/": {"username": "u", "password": "p"}`, image: "nginx", want: userPass("u", "p")},
	{name: "https://index.docker.io/v2/ key", entries: `"https://index.docker.io/v2/": {"username": "u", "password": "p"}`, image: "library/nginx", want: userPass("u", "p")},
	{name: "index.docker.io/v1 key without the trailing slash is a path", entries: `"index.docker.io/v1": {"username": "u", "password": "p"}`, image: "nginx", want: nil},
	// The kubelet normalizes Docker Hub images to docker.io, which has two labels; registry-1.docker.io has
	// three and is not the fallback key either.
	{name: "registry-1.docker.io key is not Docker Hub", entries: `"registry-1.docker.io": {"username": "u", "password": "p"}`, image: "nginx", want: nil},
	{name: "registry-1.docker.io key matches its own host", entries: `"registry-1.docker.io": {"username": "u", "password": "p"}`, image: "registry-1.docker.io/library/nginx", want: userPass("u", "p")},
	{name: "docker.io/library key, library image", entries: `"docker.io/library": {"username": "u", "password": "p"}`, image: "nginx", want: userPass("u", "p")},
	{name: "docker.io/library key, user image", entries: `"docker.io/library": {"username": "u", "password": "p"}`, image: "someone/app", want: nil},
	// Only the exact key index.docker.io is the fallback: with a path it matches no Docker Hub image.
	{name: "index.docker.io/library key matches nothing", entries: `"index.docker.io/library": {"username": "u", "password": "p"}`, image: "nginx", want: nil},
	{name: "Docker Hub credentials stay on Docker Hub", entries: `"docker.io": {"username": "u", "password": "p"}, "https://index.docker.io/v1/": {"username": "u", "password": "p"}`, image: "quay.io/app", want: nil},
	// The kubelet would use them for localhost/app, whose first component has no dot or colon; see isDockerHub.
	{name: "Docker Hub credentials not sent to localhost", entries: `"https://index.docker.io/v1/": {"username": "u", "password": "p"}`, image: "localhost/app", want: nil},

	// Other registries, by host and by path.
	{name: "quay.io key", entries: `"quay.io": {"username": "u", "password": "p"}`, image: "quay.io/team/app", want: userPass("u", "p")},
	{name: "https://quay.io key", entries: `"https://quay.io": {"username": "u", "password": "p"}`, image: "quay.io/team/app", want: userPass("u", "p")},
	{name: "https://quay.io/ key", entries: `"https://quay.io/": {"username": "u", "password": "p"}`, image: "quay.io/team/app", want: userPass("u", "p")},
	{name: "quay.io key, registry", entries: `"quay.io": {"username": "u", "password": "p"}`, image: "quay.io", registry: true, want: userPass("u", "p")},
	{name: "quay.io key, subdomain", entries: `"quay.io": {"username": "u", "password": "p"}`, image: "eu.quay.io/team/app", want: nil},
	{name: "quay.io key, explicit port", entries: `"quay.io": {"username": "u", "password": "p"}`, image: "quay.io:443/team/app", want: nil},
	{name: "quay.io key, other registry", entries: `"quay.io": {"username": "u", "password": "p"}`, image: "ghcr.io/team/app", want: nil},
	{name: "quay.io key, not for Docker Hub", entries: `"quay.io": {"username": "u", "password": "p"}`, image: "nginx", want: nil},
	{name: "quay.io/team key, its repository", entries: `"quay.io/team": {"username": "u", "password": "p"}`, image: "quay.io/team/app", want: userPass("u", "p")},
	{name: "quay.io/team key, other team", entries: `"quay.io/team": {"username": "u", "password": "p"}`, image: "quay.io/other/app", want: nil},
	// The kubelet tests the path with a plain string prefix.
	{name: "quay.io/team key, team with a longer name", entries: `"quay.io/team": {"username": "u", "password": "p"}`, image: "quay.io/teamx/app", want: userPass("u", "p")},
	{name: "quay.io/team/ key, team with a longer name", entries: `"quay.io/team/": {"username": "u", "password": "p"}`, image: "quay.io/teamx/app", want: nil},
	{name: "quay.io/team/ key, its repository", entries: `"quay.io/team/": {"username": "u", "password": "p"}`, image: "quay.io/team/app", want: userPass("u", "p")},
	{name: "quay.io/team key, registry", entries: `"quay.io/team": {"username": "u", "password": "p"}`, image: "quay.io", registry: true, want: nil},
	{name: "https://quay.io/team key", entries: `"https://quay.io/team": {"username": "u", "password": "p"}`, image: "quay.io/team/app", want: userPass("u", "p")},
	// The kubelet strips /v1 or /v2 and keeps the rest of the path.
	{name: "https://quay.io/v2/team key", entries: `"https://quay.io/v2/team": {"username": "u", "password": "p"}`, image: "quay.io/team/app", want: userPass("u", "p")},
	{name: "https://quay.io/v2/team key, other team", entries: `"https://quay.io/v2/team": {"username": "u", "password": "p"}`, image: "quay.io/other/app", want: nil},
	{name: "https://quay.io/v1/ key", entries: `"https://quay.io/v1/": {"username": "u", "password": "p"}`, image: "quay.io/other/app", want: userPass("u", "p")},
	{name: "key that is no URL is skipped", entries: `"quay.io/%zz": {"username": "u", "password": "p"}, "ghcr.io": {"username": "g", "password": "h"}`, image: "ghcr.io/app", want: userPass("g", "h")},

	// Ports.
	{name: "localhost:5000 key, port 5000", entries: `"localhost:5000": {"username": "u", "password": "p"}`, image: "localhost:5000/app", want: userPass("u", "p")},
	{name: "localhost:5000 key, no port", entries: `"localhost:5000": {"username": "u", "password": "p"}`, image: "localhost/app", want: nil},
	{name: "localhost:5000 key, port 5001", entries: `"localhost:5000": {"username": "u", "password": "p"}`, image: "localhost:5001/app", want: nil},
	{name: "localhost key, port 5000", entries: `"localhost": {"username": "u", "password": "p"}`, image: "localhost:5000/app", want: nil},
	{name: "localhost key, no port", entries: `"localhost": {"username": "u", "password": "p"}`, image: "localhost/app", want: userPass("u", "p")},
	{name: "http://localhost:5000/v2/ key", entries: `"http://localhost:5000/v2/": {"username": "u", "password": "p"}`, image: "localhost:5000/team/app", want: userPass("u", "p")},
	{name: "localhost:5000 key, registry", entries: `"localhost:5000": {"username": "u", "password": "p"}`, image: "localhost:5000", registry: true, want: userPass("u", "p")},
	{name: "IP and port key", entries: `"10.0.0.1:5000": {"username": "u", "password": "p"}`, image: "10.0.0.1:5000/app", want: userPass("u", "p")},

	// Globs, label by label.
	{name: "*.example.com key, one label more", entries: `"*.example.com": {"username": "u", "password": "p"}`, image: "a.example.com/app", want: userPass("u", "p")},
	{name: "*.example.com key, the domain itself", entries: `"*.example.com": {"username": "u", "password": "p"}`, image: "example.com/app", want: nil},
	{name: "*.example.com key, two labels more", entries: `"*.example.com": {"username": "u", "password": "p"}`, image: "a.b.example.com/app", want: nil},
	{name: "*.*.example.com key, two labels more", entries: `"*.*.example.com": {"username": "u", "password": "p"}`, image: "a.b.example.com/app", want: userPass("u", "p")},
	{name: "*.example.com key, other domain", entries: `"*.example.com": {"username": "u", "password": "p"}`, image: "a.example.org/app", want: nil},
	{name: "https://*.example.com key", entries: `"https://*.example.com": {"username": "u", "password": "p"}`, image: "a.example.com/app", want: userPass("u", "p")},
	{name: "registry-*.example.com key", entries: `"registry-*.example.com": {"username": "u", "password": "p"}`, image: "registry-eu.example.com/app", want: userPass("u", "p")},
	{name: "*.example.com:5000 key, port 5000", entries: `"*.example.com:5000": {"username": "u", "password": "p"}`, image: "a.example.com:5000/app", want: userPass("u", "p")},
	{name: "*.example.com:5000 key, no port", entries: `"*.example.com:5000": {"username": "u", "password": "p"}`, image: "a.example.com/app", want: nil},

	// Several keys match: the most specific, first in reverse lexical order, wins.
	{name: "host and path keys, path image", entries: `"quay.io": {"username": "host", "password": "p"}, "quay.io/team": {"username": "team", "password": "p"}`, image: "quay.io/team/app", want: userPass("team", "p")},
	{name: "host and path keys, other image", entries: `"quay.io": {"username": "host", "password": "p"}, "quay.io/team": {"username": "team", "password": "p"}`, image: "quay.io/other/app", want: userPass("host", "p")},
	{name: "nested path keys", entries: `"quay.io/team": {"username": "team", "password": "p"}, "quay.io/team/app": {"username": "app", "password": "p"}`, image: "quay.io/team/app", want: userPass("app", "p")},
	{name: "exact host before glob", entries: `"*.example.com": {"username": "glob", "password": "p"}, "a.example.com": {"username": "exact", "password": "p"}`, image: "a.example.com/app", want: userPass("exact", "p")},
	{name: "glob for other hosts", entries: `"*.example.com": {"username": "glob", "password": "p"}, "a.example.com": {"username": "exact", "password": "p"}`, image: "b.example.com/app", want: userPass("glob", "p")},
	{name: "docker.io before the index.docker.io fallback", entries: `"https://index.docker.io/v1/": {"username": "index", "password": "p"}, "docker.io": {"username": "hub", "password": "p"}`, image: "nginx", want: userPass("hub", "p")},
	{name: "docker.io/library before docker.io", entries: `"docker.io": {"username": "hub", "password": "p"}, "docker.io/library": {"username": "library", "password": "p"}`, image: "nginx", want: userPass("library", "p")},
	{name: "docker.io/library matches, index.docker.io does not for others", entries: `"index.docker.io": {"username": "index", "password": "p"}, "docker.io/library": {"username": "library", "password": "p"}`, image: "someone/app", want: userPass("index", "p")},
	// Two spellings of one key: in the order of the raw keys, "docker.io" before "https://docker.io".
	{name: "two spellings of one key", entries: `"https://docker.io": {"username": "second", "password": "p"}, "docker.io": {"username": "first", "password": "p"}`, image: "nginx", want: userPass("first", "p")},

	// Entries.
	{name: "auth only", entries: `"quay.io": {"auth": "dTpw"}`, image: "quay.io/app", want: userPass("u", "p")},
	{name: "auth with padding", entries: `"quay.io": {"auth": "dTpwdw=="}`, image: "quay.io/app", want: userPass("u", "pw")},
	{name: "auth without padding", entries: `"quay.io": {"auth": "dTpwdw"}`, image: "quay.io/app", want: userPass("u", "pw")},
	{name: "auth with a colon in the password", entries: `"quay.io": {"auth": "dTpwOnE="}`, image: "quay.io/app", want: userPass("u", "p:q")},
	// As in the kubelet and the Docker CLI, auth replaces username and password.
	{name: "auth over username and password", entries: `"quay.io": {"username": "x", "password": "y", "auth": "dTpw"}`, image: "quay.io/app", want: userPass("u", "p")},
	{name: "username and password, no auth", entries: `"quay.io": {"username": "u", "password": "p", "email": "e"}`, image: "quay.io/app", want: userPass("u", "p")},
	{name: "identitytoken", entries: `"myregistry.azurecr.io": {"username": "00000000-0000-0000-0000-000000000000", "identitytoken": "refresh"}`, image: "myregistry.azurecr.io/app", want: &up{Username: "00000000-0000-0000-0000-000000000000", IdentityToken: "refresh"}},
	{name: "registrytoken", entries: `"quay.io": {"registrytoken": "bearer"}`, image: "quay.io/app", want: &up{RegistryToken: "bearer"}},
	{name: "email only is no credentials", entries: `"quay.io": {"email": "e"}`, image: "quay.io/app", want: nil},
	{name: "empty entry does not hide a less specific key", entries: `"quay.io/team": {}, "quay.io": {"username": "u", "password": "p"}`, image: "quay.io/team/app", want: userPass("u", "p")},
	{name: "no entries", entries: ``, image: "nginx", want: nil},

	// What kubectl create secret docker-registry writes.
	{name: "kubectl --docker-server=docker.io, nginx", raw: kubectlDockerIO, image: "nginx", want: userPass("u", "p")},
	{name: "kubectl --docker-server=docker.io, docker.io/library/nginx", raw: kubectlDockerIO, image: "docker.io/library/nginx", want: userPass("u", "p")},
	{name: "kubectl --docker-server=docker.io, index.docker.io/library/nginx", raw: kubectlDockerIO, image: "index.docker.io/library/nginx", want: userPass("u", "p")},
	{name: "kubectl --docker-server=docker.io, other registry", raw: kubectlDockerIO, image: "quay.io/library/nginx", want: nil},
	{name: "kubectl default server, nginx", raw: kubectlDefaultHost, image: "nginx", want: userPass("u", "p")},
	{name: "kubectl default server, docker.io/library/nginx", raw: kubectlDefaultHost, image: "docker.io/library/nginx", want: userPass("u", "p")},
	{name: "kubectl default server, index.docker.io/library/nginx", raw: kubectlDefaultHost, image: "index.docker.io/library/nginx", want: userPass("u", "p")},
	{name: "docker login config.json", raw: `{"auths": {"https://index.docker.io/v1/": {"auth": "dTpw"}}, "HttpHeaders": {"User-Agent": "Docker-Client"}, "psFormat": "table"}`, image: "nginx", want: userPass("u", "p")},
	{name: "empty credHelpers and credsStore", raw: `{"auths": {"quay.io": {"auth": "dTpw"}}, "credsStore": "", "credHelpers": {}}`, image: "quay.io/app", want: userPass("u", "p")},
	{name: "no auths", raw: `{}`, image: "nginx", want: nil},
}

func TestLookup(t *testing.T) {
	for _, tc := range lookupCases {
		for _, src := range sources {
			if src.legacy && tc.raw != "" {
				continue
			}
			t.Run(tc.name+"/"+src.name, func(t *testing.T) {
				data := []byte(tc.raw)
				switch {
				case tc.raw != "":
				case src.legacy:
					data = []byte("{" + tc.entries + "}")
				default:
					data = []byte(`{"auths": {` + tc.entries + `}}`)
				}
				kc, err := src.load(t, data)
				if err != nil {
					t.Fatalf("loading %s: %v", data, err)
				}
				expect(t, kc, target(t, tc.image, tc.registry), tc.want)
			})
		}
	}
}

// target is the resource a case resolves.
func target(t *testing.T, image string, registry bool) authn.Resource {
	t.Helper()
	if registry {
		reg, err := name.NewRegistry(image)
		if err != nil {
			t.Fatal(err)
		}
		return reg
	}
	ref, err := name.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	return ref.Context()
}

// expect resolves target with kc and checks it gets want, or anonymous access for nil.
func expect(t *testing.T, kc authn.Keychain, target authn.Resource, want *up) {
	t.Helper()
	auth, err := kc.Resolve(target)
	if err != nil {
		t.Fatalf("resolving %s: %v", target, err)
	}
	if want == nil {
		if auth != authn.Anonymous {
			got, _ := auth.Authorization()
			t.Fatalf("resolving %s: want anonymous, got %+v", target, *got)
		}
		return
	}
	if auth == authn.Anonymous {
		t.Fatalf("resolving %s: want %+v, got anonymous", target, *want)
	}
	got, err := auth.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	if *got != *want {
		t.Fatalf("resolving %s: want %+v, got %+v", target, *want, *got)
	}
}

// TestResolveTagAndDigest checks that a tag or digest resolves as its repository.
func TestResolveTagAndDigest(t *testing.T) {
	k, err := dockerconfig.Parse([]byte(`{"auths": {"quay.io/team": {"auth": "dTpw"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, image := range []string{"quay.io/team/app:1.0", "quay.io/team/app@sha256:" + strings.Repeat("a", 64)} {
		ref, err := name.ParseReference(image)
		if err != nil {
			t.Fatal(err)
		}
		expect(t, k, ref.(authn.Resource), userPass("u", "p"))
	}
}

// invalidCase is a config that must not load, with credential material that its error must not repeat.
type invalidCase struct {
	name string
	// data is the .dockerconfigjson; legacy, when set, is the .dockercfg with the same fault.
	data, legacy string
	// want is part of the expected error; secrets are strings it must not contain.
	want    string
	secrets []string
}

var invalidCases = []invalidCase{
	{name: "invalid JSON", data: `{"auths": {"quay.io": {"password": "s3cr3tpw"`, legacy: `{"quay.io": {"password": "s3cr3tpw"`, want: "not valid JSON", secrets: []string{"s3cr3tpw"}},
	{name: "invalid string escape", data: `{"auths": {"quay.io": {"password": "s3cr\qtpw"}}}`, legacy: `{"quay.io": {"password": "s3cr\qtpw"}}`, want: "not valid JSON", secrets: []string{"s3cr", "qtpw", "'q'"}},
	{name: "control character in a password", data: "{\"auths\": {\"quay.io\": {\"password\": \"s3cr\x01tpw\"}}}", want: "not valid JSON", secrets: []string{"s3cr", "\x01"}},
	{name: "number as password", data: `{"auths": {"quay.io": {"password": 8675309123}}}`, legacy: `{"quay.io": {"password": 8675309123}}`, want: "expected a string", secrets: []string{"8675309123"}},
	{name: "auths not an object", data: `{"auths": ["s3cr3tpw"]}`, want: "expected an object", secrets: []string{"s3cr3tpw"}},
	{name: "not an object", data: `["s3cr3tpw"]`, legacy: `["s3cr3tpw"]`, want: "expected an object", secrets: []string{"s3cr3tpw"}},
	{name: "auth not base64", data: `{"auths": {"quay.io": {"auth": "s3cr3t!pw"}}}`, legacy: `{"quay.io": {"auth": "s3cr3t!pw"}}`, want: `entry for "quay.io" is invalid: its auth field is not valid base64`, secrets: []string{"s3cr3t"}},
	{name: "auth without a colon", data: `{"auths": {"quay.io": {"auth": "czNjcjN0cHc="}}}`, legacy: `{"quay.io": {"auth": "czNjcjN0cHc="}}`, want: `entry for "quay.io" is invalid: its auth field does not decode to username:password`, secrets: []string{"czNjcjN0cHc", "s3cr3tpw"}},
	{name: "auth with padding it does not need", data: `{"auths": {"quay.io": {"auth": "dTpw="}}}`, want: "not valid base64", secrets: []string{"dTpw"}},
	{name: "auth under a key that is no URL", data: `{"auths": {"quay.io/%zz": {"auth": "s3cr3t!pw"}}}`, want: "an entry of the Docker config is invalid: its auth field is not valid base64", secrets: []string{"s3cr3t"}},
	{name: "key with credentials in it", data: `{"auths": {"https://user:s3cr3tpw@quay.io": {"auth": "!"}}}`, want: `entry for "quay.io" is invalid`, secrets: []string{"s3cr3tpw"}}, //nolint:gosec // a made-up credential, to prove it never reaches an error
}

func TestInvalid(t *testing.T) {
	for _, tc := range invalidCases {
		for _, src := range sources {
			data := tc.data
			if src.legacy {
				if data = tc.legacy; data == "" {
					continue
				}
			}
			t.Run(tc.name+"/"+src.name, func(t *testing.T) {
				kc, err := src.load(t, []byte(data))
				if err == nil {
					t.Fatalf("loading %s: want an error, got keychain %v", data, kc)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("loading %s: want an error with %q, got %q", data, tc.want, err)
				}
				if errors.Is(err, dockerconfig.ErrNotPullSecret) {
					t.Errorf("loading %s: a pull secret that does not parse is still a pull secret: %v", data, err)
				}
				for _, secret := range tc.secrets {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("loading %s: error %q contains credential material %q", data, err, secret)
					}
				}
			})
		}
	}
}

func TestFromSecretNotPullSecret(t *testing.T) {
	config := []byte(`{"auths": {"quay.io": {"auth": "dTpw"}}}`)
	for _, tc := range []struct {
		name   string
		secret corev1.Secret
		want   string
	}{
		{name: "Opaque", secret: pullSecret(corev1.SecretTypeOpaque, corev1.DockerConfigJsonKey, config), want: `secret ns/regcred of type "Opaque": not a pull secret`},
		{name: "no type", secret: pullSecret("", corev1.DockerConfigJsonKey, config), want: `of type "": not a pull secret`},
		{name: "basic-auth", secret: pullSecret(corev1.SecretTypeBasicAuth, corev1.DockerConfigJsonKey, config), want: `of type "kubernetes.io/basic-auth"`},
		{name: "dockerconfigjson with empty data", secret: pullSecret(corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey, nil), want: `has no .dockerconfigjson data: not a pull secret`},
		{name: "dockerconfigjson with the .dockercfg key", secret: pullSecret(corev1.SecretTypeDockerConfigJson, corev1.DockerConfigKey, config), want: `has no .dockerconfigjson data`},
		{name: "dockercfg with empty data", secret: pullSecret(corev1.SecretTypeDockercfg, corev1.DockerConfigKey, []byte{}), want: `has no .dockercfg data`},
		{name: "dockercfg with the .dockerconfigjson key", secret: pullSecret(corev1.SecretTypeDockercfg, corev1.DockerConfigJsonKey, config), want: `of type "kubernetes.io/dockercfg" has no .dockercfg data`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := dockerconfig.FromSecret(tc.secret)
			if !errors.Is(err, dockerconfig.ErrNotPullSecret) {
				t.Fatalf("want ErrNotPullSecret, got keyring %v, error %v", k, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want an error with %q, got %q", tc.want, err)
			}
		})
	}
}

// TestMerge checks that merged pull secrets behave as the kubelet's one keyring of a pod's secrets.
func TestMerge(t *testing.T) {
	secret := func(t *testing.T, typ corev1.SecretType, data string) *dockerconfig.Keyring {
		t.Helper()
		key := corev1.DockerConfigJsonKey
		if typ == corev1.SecretTypeDockercfg {
			key = corev1.DockerConfigKey
		}
		k, err := dockerconfig.FromSecret(pullSecret(typ, key, []byte(data)))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	pod := secret(t, corev1.SecretTypeDockerConfigJson, `{"auths": {"quay.io": {"username": "pod", "password": "p"}, "docker.io": {"username": "pod", "password": "p"}}}`)
	sa := secret(t, corev1.SecretTypeDockercfg, `{"quay.io": {"username": "sa", "password": "p"}, "quay.io/team": {"username": "sa-team", "password": "p"}, "ghcr.io": {"username": "sa", "password": "p"}}`)
	merged := dockerconfig.Merge(pod, nil, sa)

	for _, tc := range []struct {
		image string
		want  *up
	}{
		{image: "quay.io/other/app", want: userPass("pod", "p")},    // same key: the earlier secret wins
		{image: "quay.io/team/app", want: userPass("sa-team", "p")}, // a more specific key wins whatever its secret
		{image: "ghcr.io/app", want: userPass("sa", "p")},
		{image: "nginx", want: userPass("pod", "p")},
		{image: "gcr.io/app", want: nil},
	} {
		t.Run(tc.image, func(t *testing.T) { expect(t, merged, target(t, tc.image, false), tc.want) })
	}

	t.Run("the other order", func(t *testing.T) {
		expect(t, dockerconfig.Merge(sa, pod), target(t, "quay.io/other/app", false), userPass("sa", "p"))
	})
	t.Run("inputs unchanged", func(t *testing.T) {
		expect(t, pod, target(t, "quay.io/team/app", false), userPass("pod", "p"))
		expect(t, sa, target(t, "nginx", false), nil)
	})
	t.Run("nothing", func(t *testing.T) {
		expect(t, dockerconfig.Merge(), target(t, "nginx", false), nil)
		expect(t, dockerconfig.Merge(nil), target(t, "nginx", false), nil)
	})
}

func TestNilAndZeroKeyring(t *testing.T) {
	var k *dockerconfig.Keyring
	expect(t, k, target(t, "nginx", false), nil)
	expect(t, &dockerconfig.Keyring{}, target(t, "nginx", false), nil)
}

func TestFileKeychain(t *testing.T) {
	quay := target(t, "quay.io/team/app", false)

	t.Run("missing file is anonymous", func(t *testing.T) {
		kc, err := dockerconfig.FileKeychain(filepath.Join(t.TempDir(), "absent", "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		expect(t, kc, quay, nil)
	})

	t.Run("empty file is anonymous", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "config.json")
		write(t, path, " \n")
		kc, err := dockerconfig.FileKeychain(path)
		if err != nil {
			t.Fatal(err)
		}
		expect(t, kc, quay, nil)
	})

	t.Run("rewritten between lookups", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "config.json")
		kc, err := dockerconfig.FileKeychain(path)
		if err != nil {
			t.Fatal(err)
		}
		expect(t, kc, quay, nil)

		write(t, path, `{"auths": {"quay.io": {"username": "old", "password": "p"}}}`)
		expect(t, kc, quay, userPass("old", "p"))

		write(t, path, `{"auths": {"quay.io": {"username": "new", "password": "p"}}}`)
		expect(t, kc, quay, userPass("new", "p"))

		write(t, path, `{"auths": {"quay.io": {"auth": "s3cr3t!pw"}}}`)
		if auth, err := kc.Resolve(quay); err == nil || strings.Contains(err.Error(), "s3cr3t") {
			t.Fatalf("want an error without the credentials for a broken file, got %v, %v", auth, err)
		}

		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		expect(t, kc, quay, nil)
	})

	t.Run("rotated like a mounted Secret", func(t *testing.T) {
		// The kubelet mounts a Secret's keys as symlinks through ..data, which it swaps to the new content.
		dir := t.TempDir()
		for _, gen := range []string{"gen1", "gen2"} {
			if err := os.Mkdir(filepath.Join(dir, gen), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		write(t, filepath.Join(dir, "gen1", "config.json"), `{"auths": {"quay.io": {"username": "gen1", "password": "p"}}}`)
		write(t, filepath.Join(dir, "gen2", "config.json"), `{"auths": {"quay.io": {"username": "gen2", "password": "p"}}}`)
		if err := os.Symlink("gen1", filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", "config.json"), filepath.Join(dir, "config.json")); err != nil {
			t.Fatal(err)
		}
		kc, err := dockerconfig.FileKeychain(filepath.Join(dir, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		expect(t, kc, quay, userPass("gen1", "p"))

		if err := os.Symlink("gen2", filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		expect(t, kc, quay, userPass("gen2", "p"))
	})

	t.Run("unreadable path", func(t *testing.T) {
		if _, err := dockerconfig.FileKeychain(t.TempDir()); err == nil {
			t.Fatal("want an error for a directory")
		}
	})

	for _, tc := range []struct{ name, data string }{
		{name: "credsStore", data: `{"auths": {}, "credsStore": "desktop"}`},
		{name: "credHelpers", data: `{"auths": {"quay.io": {"auth": "dTpw"}}, "credHelpers": {"gcr.io": "gcloud"}}`},
		{name: "credHelpers not an object", data: `{"credHelpers": "gcloud"}`},
	} {
		t.Run("credential helpers: "+tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.json")
			write(t, path, tc.data)
			_, err := dockerconfig.FileKeychain(path)
			if !errors.Is(err, dockerconfig.ErrCredentialHelpers) || !strings.Contains(err.Error(), "not supported in the controller") {
				t.Fatalf("want ErrCredentialHelpers, got %v", err)
			}
		})
	}

	t.Run("credential helpers added after the start", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "config.json")
		write(t, path, `{"auths": {"quay.io": {"auth": "dTpw"}}}`)
		kc, err := dockerconfig.FileKeychain(path)
		if err != nil {
			t.Fatal(err)
		}
		write(t, path, `{"auths": {"quay.io": {"auth": "dTpw"}}, "credsStore": "desktop"}`)
		if _, err := kc.Resolve(quay); !errors.Is(err, dockerconfig.ErrCredentialHelpers) {
			t.Fatalf("want ErrCredentialHelpers, got %v", err)
		}
	})

	t.Run("secrets ignore credential helpers as the kubelet does", func(t *testing.T) {
		k, err := dockerconfig.FromSecret(pullSecret(corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey,
			[]byte(`{"auths": {"quay.io": {"auth": "dTpw"}}, "credsStore": "desktop"}`)))
		if err != nil {
			t.Fatal(err)
		}
		expect(t, k, quay, userPass("u", "p"))
	})
}

// write replaces the file at path the way a writer that is not atomic does.
func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
