package registry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

func registryError(status int, codes ...transport.ErrorCode) error {
	terr := &transport.Error{StatusCode: status}
	for _, code := range codes {
		terr.Errors = append(terr.Errors, transport.Diagnostic{Code: code, Message: string(code)})
	}
	return terr
}

var _ = Describe("classifying copy errors", func() {
	DescribeTable("tells failures that need a change elsewhere from those worth retrying",
		func(err error, permanent bool) {
			Expect(registry.IsPermanent(err)).To(Equal(permanent))
		},
		Entry("404 Not Found", registryError(http.StatusNotFound), true),
		Entry("401 Unauthorized", registryError(http.StatusUnauthorized), true),
		Entry("403 Forbidden", registryError(http.StatusForbidden), true),
		Entry("MANIFEST_UNKNOWN whatever the status", registryError(http.StatusBadRequest, transport.ManifestUnknownErrorCode), true),
		Entry("NAME_UNKNOWN", registryError(http.StatusBadRequest, transport.NameUnknownErrorCode), true),
		Entry("NAME_INVALID", registryError(http.StatusBadRequest, transport.NameInvalidErrorCode), true),
		Entry("DENIED", registryError(http.StatusBadRequest, transport.DeniedErrorCode), true),
		Entry("UNAUTHORIZED", registryError(http.StatusBadRequest, transport.UnauthorizedErrorCode), true),
		Entry("UNSUPPORTED among other codes", registryError(http.StatusBadRequest, transport.UnknownErrorCode, transport.UnsupportedErrorCode), true),
		Entry("a wrapped 404", fmt.Errorf("resolving x: %w", registryError(http.StatusNotFound, transport.ManifestUnknownErrorCode)), true),
		Entry("500 Internal Server Error", registryError(http.StatusInternalServerError), false),
		Entry("502 Bad Gateway", registryError(http.StatusBadGateway), false),
		Entry("503 Service Unavailable", registryError(http.StatusServiceUnavailable), false),
		Entry("429 Too Many Requests", registryError(http.StatusTooManyRequests, transport.TooManyRequestsErrorCode), false),
		Entry("500 with UNKNOWN", registryError(http.StatusInternalServerError, transport.UnknownErrorCode), false),
		Entry("a refused connection", &url.Error{Op: "Get", URL: "http://127.0.0.1:1/v2/",
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}, false),
		Entry("a DNS failure", &net.DNSError{Err: "no such host", Name: "registry.invalid", IsNotFound: true}, false),
		Entry("a deadline", fmt.Errorf("copying: %w", context.DeadlineExceeded), false),
		Entry("a truncated response", io.ErrUnexpectedEOF, false),
		Entry("no error", nil, false),
	)

	It("keeps the message and cause of an error marked permanent", func() {
		cause := errors.New("image has no layers")
		err := registry.Permanent(cause)
		Expect(registry.IsPermanent(err)).To(BeTrue())
		Expect(err).To(MatchError(cause))
		Expect(err.Error()).To(Equal(cause.Error()))
		Expect(registry.IsPermanent(cause)).To(BeFalse(), "marking wraps the cause rather than changing it")

		wrapped := fmt.Errorf("copying x: %w", err)
		Expect(registry.IsPermanent(wrapped)).To(BeTrue())
		Expect(wrapped).To(MatchError(cause))
	})

	It("treats any error marked permanent as permanent, even a retryable cause", func() {
		Expect(registry.IsPermanent(registry.Permanent(registryError(http.StatusServiceUnavailable)))).To(BeTrue())
	})

	DescribeTable("explains registry failures in plain words",
		func(err error, want string) {
			Expect(registry.Explain(err)).To(Equal(want))
		},
		Entry("a missing image", fmt.Errorf("resolving x: %w", registryError(http.StatusNotFound, transport.ManifestUnknownErrorCode)),
			"the image does not exist in the registry (check the name and tag)"),
		Entry("denied credentials", registryError(http.StatusUnauthorized, transport.UnauthorizedErrorCode),
			"the registry denied access (check the image's visibility and the credentials: the workload's imagePullSecrets for source images, --registry-config for the backup registry and mirrors)"),
		Entry("forbidden access", registryError(http.StatusForbidden, transport.DeniedErrorCode),
			"the registry denied access (check the image's visibility and the credentials: the workload's imagePullSecrets for source images, --registry-config for the backup registry and mirrors)"),
		Entry("rate limiting", registryError(http.StatusTooManyRequests, transport.TooManyRequestsErrorCode),
			"the registry is rate limiting requests; retrying with backoff"),
		Entry("a failing registry", registryError(http.StatusServiceUnavailable),
			"the registry is failing; retrying with backoff"),
		Entry("a bad request, which speaks for itself", registryError(http.StatusBadRequest, transport.ManifestInvalidErrorCode), ""),
		Entry("a network error, which speaks for itself", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, ""),
		Entry("no error", nil, ""),
	)
})
