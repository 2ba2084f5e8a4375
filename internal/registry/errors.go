package registry

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync/atomic"

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
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return ""
	}
	switch {
	case terr.StatusCode == http.StatusNotFound:
		return "the image does not exist in the registry (check the name and tag)"
	case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden:
		return "the registry denied access (check the credentials in --registry-config, or the image's visibility)"
	case terr.StatusCode == http.StatusTooManyRequests:
		return "the registry is rate limiting requests; retrying with backoff"
	case terr.StatusCode >= 500:
		return "the registry is failing; retrying with backoff"
	}
	return ""
}
