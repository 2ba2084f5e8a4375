package registry_test

import (
	"net/http"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

var _ = Describe("retrying failed requests", func() {
	var upstream, backup *registrytest.Registry

	BeforeEach(func() {
		upstream, backup = registrytest.NewInProcess(), registrytest.NewInProcess()
		DeferCleanup(upstream.Close)
		DeferCleanup(backup.Close)
	})

	It("makes at most 4 requests to a source that answers 503 to everything, then returns a transient error", func(ctx SpecContext) {
		_, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		upstream.SetDown(true)
		upstream.ResetRequests()

		_, err = registry.New(registry.Options{}).Copy(withLogger(ctx),
			registry.CopyRequest{Source: mustRef(upstream.Host + "/app:v1"), Target: mustTag(backup.Host + "/app:v1")})
		Expect(err).To(HaveOccurred())
		Expect(registry.ClassOf(err)).To(Equal(registry.Transient), "class of %q", err)
		Expect(registry.RetryAfterOf(err)).To(BeZero())
		AddReportEntry("requests to the failing source", len(upstream.Requests()))
		Expect(len(upstream.Requests())).To(BeNumerically("<=", 4), "requests: %v", upstream.Requests())
		Expect(len(upstream.Requests())).To(BeNumerically(">", 1), "a failing request is retried within the Copy")
	})

	It("hands a Retry-After longer than it waits inline back to the caller instead of sleeping", func(ctx SpecContext) {
		_, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		limited := &registrytest.Faults{}
		upstream.Use(limited.Middleware)
		limited.Set(registrytest.Fault{Name: "rate limited", Status: http.StatusTooManyRequests, RetryAfter: "120"})

		_, err = registry.New(registry.Options{}).Copy(withLogger(ctx),
			registry.CopyRequest{Source: mustRef(upstream.Host + "/app:v1"), Target: mustTag(backup.Host + "/app:v1")})
		Expect(err).To(HaveOccurred())
		Expect(registry.ClassOf(err)).To(Equal(registry.Transient))
		Expect(registry.RetryAfterOf(err)).To(Equal(120 * time.Second))
		Expect(limited.Hits()).To(Equal(1), "the request is not repeated before the registry said")
		Expect(registry.Explain(err)).To(Equal("the registry asked to come back in 2m0s; retrying then"))
	}, SpecTimeout(60*time.Second))

	It("waits out a short Retry-After inline and finishes the copy", func(ctx SpecContext) {
		want, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		limited := &registrytest.Faults{}
		upstream.Use(limited.Middleware)
		var first atomic.Bool
		limited.Set(registrytest.Fault{Name: "rate limited once", Status: http.StatusTooManyRequests, RetryAfter: "1",
			Match: func(*http.Request) bool { return first.CompareAndSwap(false, true) }})

		Expect(registry.New(registry.Options{}).Copy(withLogger(ctx),
			registry.CopyRequest{Source: mustRef(upstream.Host + "/app:v1"), Target: mustTag(backup.Host + "/app:v1")})).To(Equal(want))
		Expect(limited.Hits()).To(Equal(1))
	})

	It("bounds the whole Copy, resolving included, by CopyTimeout", func(ctx SpecContext) {
		_, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		gate := registrytest.NewGate(registrytest.Manifests)
		upstream.Use(gate.Middleware)
		DeferCleanup(gate.Open)
		upstream.ResetRequests()

		_, err = registry.New(registry.Options{CopyTimeout: time.Second}).Copy(withLogger(ctx),
			registry.CopyRequest{Source: mustRef(upstream.Host + "/app:v1"), Target: mustTag(backup.Host + "/app:v1")})
		Expect(err).To(MatchError(ContainSubstring("--copy-timeout")))
		Expect(registry.ClassOf(err)).To(Equal(registry.Transient))
		Expect(gate.Held()).To(BeClosed(), "the Copy gave up while the source was resolving the tag")
		Expect(upstream.BlobRequests()).To(BeZero())
		Expect(backup.Requests()).NotTo(ContainElement(HaveField("Method", http.MethodPut)))
	}, SpecTimeout(30*time.Second))

	It("stops asking a registry that failed 4 requests of a Copy, however many requests run at once", func(ctx SpecContext) {
		_, err := upstream.PushImage("app:v1", 6, testLayerSize)
		Expect(err).NotTo(HaveOccurred())
		faults := &registrytest.Faults{}
		upstream.Use(faults.Middleware)
		faults.Set(registrytest.Fault{Name: "blobs unavailable", Match: registrytest.BlobGets, Status: http.StatusServiceUnavailable})

		_, err = registry.New(registry.Options{LayerJobs: 1}).Copy(withLogger(ctx),
			registry.CopyRequest{Source: mustRef(upstream.Host + "/app:v1"), Target: mustTag(backup.Host + "/app:v1")})
		Expect(err).To(HaveOccurred())
		Expect(registry.ClassOf(err)).To(Equal(registry.Transient), "class of %q", err)
		Expect(faults.Hits()).To(Equal(4), "failed blob reads, one at a time")
	})
})
