package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// permanentError marks a failure that retrying cannot fix without someone changing the image, the
// credentials or the configuration.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that retrying will not fix.
func Permanent(err error) error { return &permanentError{err: err} }

// IsPermanent reports whether err can only be fixed by a change outside the controller: the image or
// repository does not exist, access is denied, or the content is of a kind that cannot be copied.
// Everything else (5xx, 429, network errors, timeouts) is worth retrying.
func IsPermanent(err error) bool {
	var perm *permanentError
	if errors.As(err, &perm) {
		return true
	}
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return false
	}
	switch terr.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return true
	}
	for _, d := range terr.Errors {
		switch d.Code {
		case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.NameInvalidErrorCode,
			transport.UnauthorizedErrorCode, transport.DeniedErrorCode, transport.TagInvalidErrorCode,
			transport.ManifestInvalidErrorCode, transport.UnsupportedErrorCode:
			return true
		}
	}
	return false
}

// missingManifestError reports a manifest that an image index lists but the registry serving the index does not
// have: the index was published incompletely, or part of it was deleted (by hand or by garbage collection).
//
// It is permanent: the index the user named exists, and is broken at its source, which only its publisher can
// repair. Reporting it as transient would hold the workload's other images back for a fault that retrying at
// the controller's pace does not fix; as a permanent error it is still retried with backoff, so a repaired
// index is backed up without anyone touching the workload. It is not reported as "the image does not exist"
// either, which would send the user looking for a typo in the name.
type missingManifestError struct {
	index name.Digest
	child v1.Hash
	err   error
}

func (e *missingManifestError) Error() string {
	return fmt.Sprintf("the image index at %s references manifest %s, which the registry does not have: %v", e.index, e.child, e.err)
}

func (e *missingManifestError) Unwrap() error { return e.err }

func isNotFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// countingReader counts the bytes read through it.
type countingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// Explain says in plain words what a copy error means for the user, or "" when the error speaks for itself.
func Explain(err error) string {
	// Before the registry's own error, which for a missing child is a 404 like that of a missing image.
	var missing *missingManifestError
	if errors.As(err, &missing) {
		return "the image index is incomplete in the source registry (published partially, or part of it deleted); " +
			"only its publisher can repair it, retrying with backoff"
	}
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return ""
	}
	switch {
	case terr.StatusCode == http.StatusNotFound:
		return "the image does not exist in the registry (check the name and tag)"
	case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden:
		return "the registry denied access (check the image's visibility and the credentials: the workload's imagePullSecrets for source images, --registry-config for the backup registry and mirrors)"
	case terr.StatusCode == http.StatusTooManyRequests:
		return "the registry is rate limiting requests; retrying with backoff"
	case terr.StatusCode >= 500:
		return "the registry is failing; retrying with backoff"
	}
	return ""
}
