package dockerconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"
)

// ErrCredentialHelpers is wrapped by FileKeychain's error for a config that names a credential helper.
var ErrCredentialHelpers = errors.New("credential helpers (credsStore, credHelpers) are not supported in the controller; a Docker config mounted from a Secret holds its credentials in auths")

// FileKeychain returns a keychain that reads the Docker config file at path, in the config.json form, on every
// Resolve, so that a rotated mounted Secret applies without a restart. A missing or empty file means anonymous
// access (the Secret is optional). A file that exists but does not parse, or that names a credential helper,
// fails here, so that a broken Secret stops the controller at startup rather than showing up later as 401s.
func FileKeychain(path string) (authn.Keychain, error) {
	k := &fileKeychain{path: path}
	if _, err := k.load(); err != nil {
		return nil, err
	}
	return k, nil
}

type fileKeychain struct{ path string }

// Resolve implements authn.Keychain with the file's current content.
func (k *fileKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	keyring, err := k.load()
	if err != nil {
		return nil, err
	}
	return keyring.Resolve(target)
}

// load parses the file; a missing file is an empty keyring.
func (k *fileKeychain) load() (*Keyring, error) {
	data, err := os.ReadFile(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Keyring{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading registry config: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		// The Docker CLI reads an empty config.json as one without credentials too.
		return &Keyring{}, nil
	}
	keyring, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("parsing registry config %s: %w", k.path, err)
	}
	if namesHelpers(data) {
		return nil, fmt.Errorf("registry config %s: %w", k.path, ErrCredentialHelpers)
	}
	return keyring, nil
}

// namesHelpers tells whether a config that Parse accepted names a credential helper. A helper field of an
// unexpected type counts as naming one: such a config was not written for this controller.
func namesHelpers(data []byte) bool {
	var cfg struct {
		CredsStore  json.RawMessage `json:"credsStore"`
		CredHelpers json.RawMessage `json:"credHelpers"`
	}
	if json.Unmarshal(data, &cfg) != nil {
		return true
	}
	var store string
	if len(cfg.CredsStore) > 0 && (json.Unmarshal(cfg.CredsStore, &store) != nil || store != "") {
		return true
	}
	var helpers map[string]json.RawMessage
	if len(cfg.CredHelpers) > 0 && (json.Unmarshal(cfg.CredHelpers, &helpers) != nil || len(helpers) > 0) {
		return true
	}
	return false
}
