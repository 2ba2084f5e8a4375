package registry

import (
	"net/http"
	"net/url"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("following a redirect of a blob read", func() {
	redirect := func(from, to string) error {
		orig := &http.Request{URL: &url.URL{Scheme: "https", Host: from, Path: "/v2/app/blobs/sha256:0"}}
		next := &http.Request{URL: &url.URL{Scheme: "https", Host: to, Path: "/blob"}, Response: &http.Response{Request: orig}}
		return checkRedirect(next, []*http.Request{orig})
	}

	DescribeTable("refuses to go from one host to an internal address",
		func(to string) {
			Expect(redirect("registry.example.com", to)).To(MatchError(ContainSubstring("internal address")))
		},
		Entry("loopback", "127.0.0.1"),
		Entry("loopback, legacy short form", "127.1"),
		Entry("loopback, legacy hexadecimal form", "0x7f.0.0.1"),
		Entry("loopback as one number", "2130706433"),
		Entry("private network", "10.1.2.3"),
		Entry("link-local (cloud metadata)", "169.254.169.254"),
		Entry("IPv4-mapped IPv6", "::ffff:169.254.169.254"),
		Entry("IPv6 loopback with a zone", "::1%eth0"),
		Entry("unspecified", "0.0.0.0"),
	)

	DescribeTable("follows other redirects",
		func(from, to string) { Expect(redirect(from, to)).To(Succeed()) },
		Entry("to a storage host by name", "registry.example.com", "storage.example.com"),
		Entry("to a public address", "registry.example.com", "203.0.113.7"),
		Entry("within a private registry host", "10.1.2.3", "10.1.2.3"),
	)
})
