package registry

import "context"

// ClassifyResponse is classify, which gives the errors of registry requests their class, for the specs.
var ClassifyResponse = classify

// Static returns a CredentialSource that always returns creds.
func Static(creds *Credentials) CredentialSource {
	return func(context.Context) (*Credentials, error) { return creds, nil }
}

// CopiesTotal and CopiedBytesTotal are the copier's counters, for the specs to read with prometheus/testutil.
var (
	CopiesTotal      = copiesTotal
	CopiedBytesTotal = copiedBytes
)
