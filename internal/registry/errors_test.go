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
	"time"

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
		func(err error, class registry.Class) {
			Expect(registry.ClassOf(registry.ClassifyResponse(err))).To(Equal(class))
		},
		Entry("404 Not Found", registryError(http.StatusNotFound), registry.Permanent),
		Entry("401 Unauthorized", registryError(http.StatusUnauthorized), registry.AccessDenied),
		Entry("403 Forbidden", registryError(http.StatusForbidden), registry.AccessDenied),
		Entry("MANIFEST_UNKNOWN whatever the status", registryError(http.StatusBadRequest, transport.ManifestUnknownErrorCode), registry.Permanent),
		Entry("NAME_UNKNOWN", registryError(http.StatusBadRequest, transport.NameUnknownErrorCode), registry.Permanent),
		Entry("NAME_INVALID", registryError(http.StatusBadRequest, transport.NameInvalidErrorCode), registry.Permanent),
		Entry("DENIED", registryError(http.StatusBadRequest, transport.DeniedErrorCode), registry.AccessDenied),
		Entry("UNAUTHORIZED", registryError(http.StatusBadRequest, transport.UnauthorizedErrorCode), registry.AccessDenied),
		Entry("UNSUPPORTED among other codes", registryError(http.StatusBadRequest, transport.UnknownErrorCode, transport.UnsupportedErrorCode), registry.Permanent),
		Entry("a wrapped 404", fmt.Errorf("resolving x: %w", registryError(http.StatusNotFound, transport.ManifestUnknownErrorCode)), registry.Permanent),
		Entry("500 Internal Server Error", registryError(http.StatusInternalServerError), registry.Transient),
		Entry("502 Bad Gateway", registryError(http.StatusBadGateway), registry.Transient),
		Entry("503 Service Unavailable", registryError(http.StatusServiceUnavailable), registry.Transient),
		Entry("429 Too Many Requests", registryError(http.StatusTooManyRequests, transport.TooManyRequestsErrorCode), registry.Transient),
		Entry("500 with UNKNOWN", registryError(http.StatusInternalServerError, transport.UnknownErrorCode), registry.Transient),
		Entry("a refused connection", &url.Error{Op: "Get", URL: "http://127.0.0.1:1/v2/",
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}, registry.Transient),
		Entry("a DNS failure", &net.DNSError{Err: "no such host", Name: "registry.invalid", IsNotFound: true}, registry.Transient),
		Entry("a deadline", fmt.Errorf("copying: %w", context.DeadlineExceeded), registry.Transient),
		Entry("a truncated response", io.ErrUnexpectedEOF, registry.Transient),
		Entry("an error classified where it was found, whatever its cause",
			fmt.Errorf("verifying: %w", registry.Classify(registry.Transient, registryError(http.StatusNotFound))), registry.Transient),
	)

	It("keeps the message and cause of a classified error", func() {
		cause := errors.New("image has no layers")
		err := registry.Classify(registry.Permanent, cause)
		Expect(registry.ClassOf(err)).To(Equal(registry.Permanent))
		Expect(err).To(MatchError(cause))
		Expect(err.Error()).To(Equal(cause.Error()))
		Expect(registry.ClassOf(cause)).To(Equal(registry.Transient), "marking wraps the cause rather than changing it")

		wrapped := fmt.Errorf("copying x: %w", err)
		Expect(registry.ClassOf(wrapped)).To(Equal(registry.Permanent))
		Expect(wrapped).To(MatchError(cause))
		Expect(registry.Classify(registry.Invalid, wrapped)).To(BeIdenticalTo(wrapped), "the first class found sticks")
		Expect(registry.Classify(registry.Invalid, nil)).To(Succeed())
	})

	DescribeTable("explains registry failures in plain words",
		func(err error, want string) {
			Expect(registry.Explain(registry.ClassifyResponse(err))).To(Equal(want))
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
		Entry("a wait the registry asked for", &registry.Error{Class: registry.Transient, RetryAfter: 120 * time.Second, Err: registryError(http.StatusTooManyRequests)},
			"the registry asked to come back in 2m0s; retrying then"),
		Entry("no error", nil, ""),
	)
})
