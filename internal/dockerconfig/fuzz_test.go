package dockerconfig

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

// errorForms are all the errors Parse and ParseLegacy may return. The only free text in them is a quoted
// registry key; nothing else of the config, and so no credentials, reaches an error.
var errorForms = regexp.MustCompile(`^(` + strings.Join([]string{
	`the Docker config is not valid JSON: syntax error at byte \d+`,
	`the Docker config does not have the expected layout: at byte \d+, expected (a string|an object|another kind of value)`,
	`the Docker config is empty`,
	`the Docker config is not valid JSON`,
	`the Docker config entry for "(?:[^"\\]|\\.)*" is invalid: (` + authNotBase64 + `|` + authNoColon + `)`,
	`an entry of the Docker config is invalid: (` + authNotBase64 + `|` + authNoColon + `)`,
}, "|") + `)$`)

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"auths":{"docker.io":{"username":"u","password":"p","email":"e","auth":"dTpw"}}}`), "docker.io", "u", "p", "dTpw", "nginx")
	f.Add([]byte(`{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}`), "https://index.docker.io/v1/", "", "", "dTpw", "docker.io/library/nginx")
	f.Add([]byte(`{"quay.io/team":{"auth":"dTpwdw=="}}`), "quay.io/team", "u", "hunter2", "", "quay.io/teamx/app")
	f.Add([]byte(`{"auths":{"*.example.com":{"identitytoken":"t"}}}`), "*.example.com", "u", "p", "", "a.example.com/app")
	f.Add([]byte(`{"auths":{"localhost:5000":{"password":12345}}}`), "localhost:5000", "u", "p", "!", "localhost:5000/app")
	f.Add([]byte(`{"auths":{"quay.io":{"password":"a\qb"}}}`), "http://quay.io/v2/", "u", "s3cr3t", "czNjcjN0", "quay.io")
	f.Add([]byte(`[`), "[::1]:5000", "", "p", "Og==", "[::1]:5000/app")

	f.Fuzz(func(t *testing.T, data []byte, key, user, password, auth, image string) {
		// Arbitrary bytes, in both forms.
		for _, parse := range []func([]byte) (*Keyring, error){Parse, ParseLegacy} {
			k, err := parse(data)
			if err != nil {
				if !errorForms.MatchString(err.Error()) {
					t.Fatalf("unexpected error text %q", err)
				}
				continue
			}
			exercise(t, k, key, image)
		}

		// A config around the fuzzed credentials: its errors may name the key, never the credentials.
		build := func(password string) []byte {
			cfg, err := json.Marshal(map[string]map[string]map[string]string{"auths": {key: {
				"username":      user,
				"password":      password,
				"auth":          auth,
				"identitytoken": password,
				"registrytoken": password,
			}}})
			if err != nil {
				t.Fatal(err)
			}
			return cfg
		}
		k, err := Parse(build(password))
		_, placeholderErr := Parse(build("placeholder"))
		if fmt.Sprint(err) != fmt.Sprint(placeholderErr) {
			t.Fatalf("the error depends on the password: %v, and with another password %v", err, placeholderErr)
		}
		if err != nil {
			// The key as Parse sees it: encoding/json replaces invalid UTF-8.
			var seen map[string]map[string]json.RawMessage
			if err := json.Unmarshal(build(password), &seen); err != nil || len(seen["auths"]) != 1 {
				t.Fatalf("the built config does not decode to one entry: %v", err)
			}
			var parsedKey string
			for k := range seen["auths"] {
				parsedKey = k
			}
			nk, ok := normalizeKey(parsedKey)
			prefix := "an entry of the Docker config is invalid: "
			if ok {
				prefix = fmt.Sprintf("the Docker config entry for %q is invalid: ", nk)
			}
			if text := err.Error(); text != prefix+authNotBase64 && text != prefix+authNoColon {
				t.Fatalf("unexpected error text %q", text)
			}
			if password != "" && strings.Contains(err.Error(), password) && !strings.Contains(placeholderErr.Error(), password) {
				t.Fatalf("error %q contains the password", err)
			}
			return
		}
		exercise(t, k, key, image)
	})
}

// exercise looks up the key and the image, raw and through go-containerregistry's names, and checks what
// comes back.
func exercise(t *testing.T, k *Keyring, key, image string) {
	for _, s := range []string{key, image} {
		if cfg, ok := k.lookup(s); ok && !hasCredentials(cfg) {
			t.Fatalf("lookup(%q) returned empty credentials", s)
		}
	}
	if ref, err := name.ParseReference(image); err == nil {
		if _, err := k.Resolve(ref.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if reg, err := name.NewRegistry(image); err == nil {
		if _, err := k.Resolve(reg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Merge(k, k).Resolve(name.Registry{}); err != nil {
		t.Fatal(err)
	}
}
