package dockerconfig

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// entry is one registry's credentials as a Docker config holds them.
type entry struct {
	Username      string `json:"username"`
	Password      string `json:"password"`
	Auth          string `json:"auth"`
	Email         string `json:"email"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// configJSON is the config.json and .dockerconfigjson form of a Docker config.
type configJSON struct {
	Auths map[string]entry `json:"auths"`
}

// Reasons an auth field is rejected. They name no part of the field, which is the credentials themselves.
const (
	authNotBase64 = "its auth field is not valid base64"
	authNoColon   = "its auth field does not decode to username:password"
)

// Parse reads a Docker config in the config.json (.dockerconfigjson) form, {"auths": {registry: entry}}.
func Parse(data []byte) (*Keyring, error) {
	var cfg configJSON
	if err := unmarshal(data, &cfg); err != nil {
		return nil, err
	}
	return fromEntries(cfg.Auths)
}

// ParseLegacy reads a Docker config in the legacy .dockercfg form, {registry: entry}.
func ParseLegacy(data []byte) (*Keyring, error) {
	var entries map[string]entry
	if err := unmarshal(data, &entries); err != nil {
		return nil, err
	}
	return fromEntries(entries)
}

// unmarshal decodes JSON into v with an error that quotes nothing of the data: encoding/json's own messages
// can quote a character of a string or the digits of a number, and either may be part of a password.
func unmarshal(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("the Docker config is empty")
	}
	err := json.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("the Docker config is not valid JSON: syntax error at byte %d", syntaxErr.Offset)
	case errors.As(err, &typeErr):
		return fmt.Errorf("the Docker config does not have the expected layout: at byte %d, expected %s", typeErr.Offset, describe(typeErr.Type))
	default:
		return errors.New("the Docker config is not valid JSON")
	}
}

// describe names the JSON a Go type is decoded from.
func describe(t reflect.Type) string {
	if t == nil {
		return "another kind of value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Map, reflect.Struct:
		return "an object"
	default:
		return "another kind of value"
	}
}

// fromEntries builds a keyring from the entries of one config. Entries are added in the order of their raw
// keys, so that two spellings of one registry ("docker.io" and "https://docker.io") resolve the same way on
// every run, where the kubelet's order would depend on map iteration.
func fromEntries(entries map[string]entry) (*Keyring, error) {
	k := &Keyring{}
	for _, raw := range slices.Sorted(maps.Keys(entries)) {
		key, ok := normalizeKey(raw)
		cfg, err := entries[raw].authConfig()
		if err != nil {
			if !ok {
				return nil, fmt.Errorf("an entry of the Docker config is invalid: %w", err)
			}
			return nil, fmt.Errorf("the Docker config entry for %q is invalid: %w", key, err)
		}
		if !ok {
			// The kubelet skips keys it cannot parse as a URL.
			continue
		}
		k.add(key, cfg)
	}
	k.sort()
	return k, nil
}

// authConfig returns the credentials of the entry. A non-empty auth field replaces username and password, as
// in the kubelet and the Docker CLI.
func (e entry) authConfig() (authn.AuthConfig, error) {
	cfg := authn.AuthConfig{
		Username:      e.Username,
		Password:      e.Password,
		IdentityToken: e.IdentityToken,
		RegistryToken: e.RegistryToken,
	}
	if e.Auth == "" {
		return cfg, nil
	}
	user, pass, err := decodeAuth(e.Auth)
	if err != nil {
		return authn.AuthConfig{}, err
	}
	cfg.Username, cfg.Password = user, pass
	return cfg, nil
}

// decodeAuth splits the auth field, base64 of "username:password". Like the kubelet it takes the field with
// padding when it ends in "=" and without padding otherwise.
func decodeAuth(field string) (user, pass string, err error) {
	enc := base64.RawStdEncoding
	if strings.HasSuffix(strings.TrimSpace(field), "=") {
		enc = base64.StdEncoding
	}
	decoded, err := enc.DecodeString(field)
	if err != nil {
		return "", "", errors.New(authNotBase64)
	}
	user, pass, ok := strings.Cut(string(decoded), ":")
	if !ok {
		return "", "", errors.New(authNoColon)
	}
	return user, pass, nil
}

// hasCredentials tells whether cfg holds anything to authenticate with.
func hasCredentials(cfg authn.AuthConfig) bool {
	return cfg.Username != "" || cfg.Password != "" || cfg.IdentityToken != "" || cfg.RegistryToken != ""
}
