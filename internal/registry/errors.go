package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Class says what a failed copy needs before it can succeed. It is decided once, where the failure is known
// (see classify), and callers choose retries and wording by it instead of by inspecting errors.
type Class int

// The classes of copy failures.
const (
	// Transient failures (a registry answering 5xx or 429, a broken connection, a timeout, a copy that did
	// not verify) go away by themselves: retry soon, with backoff, or after Error.RetryAfter.
	Transient Class = iota
	// Permanent failures need someone to change the image at its source (it does not exist, its index is
	// incomplete, its media type cannot be copied). They are permanent for now: retry slowly, as the
	// publisher may fix them.
	Permanent
	// AccessDenied failures need other credentials or visibility; retry slowly, as access may be granted.
	AccessDenied
	// TooLarge failures are images over Options.MaxImageSize; retry slowly, as the limit may be raised.
	TooLarge
	// Invalid failures are references that cannot name an image at all; only a change of the reference fixes
	// them, so they are not retried.
	Invalid
	// Incomplete is not a failure of the image: the copy is complete, verified and tagged, and Copy returns
	// its digest, but some of its signatures, attestations or referrers could not be copied along
	// (Options.ArtifactsOptional). Retry slowly, to copy them once their source serves them.
	Incomplete
)

var classNames = map[Class]string{
	Transient: "transient", Permanent: "permanent", AccessDenied: "access denied", TooLarge: "too large", Invalid: "invalid",
	Incomplete: "incomplete",
}

func (c Class) String() string { return classNames[c] }

// Error is a failed copy with its class. Every error Copy returns is one.
type Error struct {
	Class Class
	// RetryAfter, for a Transient failure, is how long the registry asked callers to wait (Retry-After) when
	// that is longer than the Copier waits inline; 0 when it did not ask.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of a copy error; an error that carries none is Transient.
func ClassOf(err error) Class {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return Transient
}

// RetryAfterOf returns how long the registry asked to wait before err's copy is tried again, or 0.
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// withClass marks err as being of class c, unless it already has a class.
func withClass(c Class, err error) error {
	var e *Error
	if err == nil || errors.As(err, &e) {
		return err
	}
	return &Error{Class: c, Err: err}
}

// permanent marks err as Permanent unless it already has a class.
func permanent(err error) error { return withClass(Permanent, err) }

// Classify returns err marked with class c unless it already carries a class, for callers that find a failure
// of a copy themselves (an unusable reference, for example).
func Classify(c Class, err error) error { return withClass(c, err) }

// classify gives an error of a registry request its class from the registry's answer: access refused, the
// image or repository unknown, or content the registry will not take are not fixed by retrying soon; server
// errors, rate limits, network errors and timeouts are. An error that already has a class keeps it.
func classify(err error) error {
	var e *Error
	if err == nil || errors.As(err, &e) {
		return err
	}
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return &Error{Class: Transient, Err: err}
	}
	switch terr.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		return &Error{Class: AccessDenied, Err: err}
	case http.StatusNotFound:
		return &Error{Class: Permanent, Err: err}
	}
	for _, d := range terr.Errors {
		switch d.Code {
		case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
			return &Error{Class: AccessDenied, Err: err}
		case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.NameInvalidErrorCode,
			transport.TagInvalidErrorCode, transport.ManifestInvalidErrorCode, transport.UnsupportedErrorCode:
			return &Error{Class: Permanent, Err: err}
		}
	}
	return &Error{Class: Transient, Err: err}
}

// atBackup classifies an error met while writing to or asking the backup registry. The backup is the
// operator's: refused credentials are AccessDenied, but "unknown" answers there (a lost upload session, a
// repository deleted meanwhile) are Transient — the next attempt writes the copy again — never the
// Permanent "the image does not exist" of a source. Errors that already have a class (a source blob found
// missing during the push, say) keep it.
func atBackup(err error) error {
	var e *Error
	if err == nil || errors.As(err, &e) {
		return err
	}
	if c := classify(err); ClassOf(c) == AccessDenied {
		return c
	}
	return &Error{Class: Transient, Err: err}
}

// missingManifestError reports a manifest that an image index lists but the registry serving the index does not
// have: the index was published incompletely, or part of it was deleted (by hand or by garbage collection).
//
// It is Permanent: the index the user named exists, and is broken at its source, which only its publisher can
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

// Explain says in plain words what a copy error means for the user and what happens next, or "" when the
// error speaks for itself. The wording follows the error's class, so it always matches what the caller does.
func Explain(err error) string {
	// Before the registry's own error, which for a missing child is a 404 like that of a missing image.
	var missing *missingManifestError
	if errors.As(err, &missing) {
		return "the image index is incomplete in the source registry (published partially, or part of it deleted); " +
			"only its publisher can repair it, retrying with backoff"
	}
	var terr *transport.Error
	isTransport := errors.As(err, &terr)
	switch ClassOf(err) {
	case AccessDenied:
		return "the registry denied access (check the image's visibility and the credentials: the workload's imagePullSecrets for source images, --registry-config for the backup registry and mirrors)"
	case Permanent:
		if isTransport && terr.StatusCode == http.StatusNotFound {
			return "the image does not exist in the registry (check the name and tag)"
		}
	case Incomplete:
		return "the image is backed up, but its listed signatures, attestations or SBOMs could not all be copied along; a signature policy may reject the copy"
	case Transient:
		switch {
		case RetryAfterOf(err) > 0:
			return fmt.Sprintf("the registry asked to come back in %s; retrying then", RetryAfterOf(err).Round(time.Second))
		case isTransport && terr.StatusCode == http.StatusTooManyRequests:
			return "the registry is rate limiting requests; retrying with backoff"
		case isTransport && terr.StatusCode >= 500:
			return "the registry is failing; retrying with backoff"
		}
	}
	return ""
}
