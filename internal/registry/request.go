package registry

import (
	"context"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// CopyRequest is one image to back up: what to copy, where to, and whose credentials read the source.
type CopyRequest struct {
	// Source is the image as the workload names it; a tag is resolved to the digest it points to now.
	Source name.Reference
	// Target is the backup tag the copy is written to.
	Target name.Tag
	// Credentials, when set, returns the caller's credentials for the source registry (see Credentials); nil
	// pulls the source with the Copier's keychain. It is called at most once per Copy, and not at all when a
	// KeepExisting copy exists (without ProveAccess), so that such a caller never pays for reading them.
	Credentials CredentialSource
	// KeepExisting makes a target that exists in the backup count as done, whatever the source holds now, so
	// the source is asked only when the backup lost the copy: it keeps a copy that workloads already run
	// from, instead of moving it with its upstream tag. A backup that cannot be asked fails the Copy.
	KeepExisting bool
	// ProveAccess, with KeepExisting, has Credentials prove that they can read the source even when the copy
	// exists (one source request, or the tag cache), for a caller about to hand the copy to someone.
	ProveAccess bool
}

// CredentialSource returns the credentials a Copy pulls its source with; a nil *Credentials means the Copier's
// keychain. Its errors fail the Copy with their own class (Transient unless they carry one).
type CredentialSource func(ctx context.Context) (*Credentials, error)

// Credentials make a Copy pull its source with the caller's credentials instead of the Copier's keychain, and
// prove that those credentials can read the source manifest even when the backup already holds the image: a
// copy made for one workload must not become a way for another to use an image it could not pull itself.
//
// They apply to the source registry only. Backup repositories, and mirrors configured with Options.Mirrors,
// are read with the Copier's keychain: a mirror is infrastructure the operator chose, which serves its
// content to every workload just as a mirror configured on the nodes would.
type Credentials struct {
	// Keychain resolves the credentials for the source registry; anonymous access when it has none.
	Keychain authn.Keychain
	// ID is the same for the same credentials and differs otherwise ("" for none). The tag cache keys its
	// entries by it, so that one set of credentials never reuses what another was allowed to read.
	ID string
}
