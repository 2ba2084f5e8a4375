package registry

import (
	"github.com/google/go-containerregistry/pkg/authn"
)

// CopyOption changes how one Copy call is made.
type CopyOption interface{ apply(*copyCall) }

// copyCall is what the options of one Copy call asked for.
type copyCall struct {
	sourceAuth *SourceAuth
}

func newCopyCall(opts []CopyOption) copyCall {
	var call copyCall
	for _, o := range opts {
		o.apply(&call)
	}
	return call
}

// SourceAuth makes a Copy pull its source with the caller's credentials instead of the Copier's keychain, and
// prove that those credentials can read the source manifest even when the backup already holds the image: a
// copy made for one workload must not become a way for another to use an image it could not pull itself.
//
// It applies to the source registry only. Backup repositories, and mirrors configured with Options.Mirrors,
// are read with the Copier's keychain: a mirror is infrastructure the operator chose, which serves its
// content to every workload just as a mirror configured on the nodes would.
type SourceAuth struct {
	// Keychain resolves the credentials for the source registry; anonymous access when it has none.
	Keychain authn.Keychain
	// ID is the same for the same credentials and differs otherwise ("" for none). Callers that remember
	// copy results key them by it, so that one set of credentials never reuses what another was allowed.
	ID string
}

func (a SourceAuth) apply(c *copyCall) { c.sourceAuth = &a }

// SourceAuthOf returns the SourceAuth among opts, if any.
func SourceAuthOf(opts []CopyOption) (SourceAuth, bool) {
	call := newCopyCall(opts)
	if call.sourceAuth == nil {
		return SourceAuth{}, false
	}
	return *call.sourceAuth, true
}
