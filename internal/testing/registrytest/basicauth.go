package registrytest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
)

// BasicAuthProxy is a proxy that demands one user and password in front of a registry, as a private registry
// does.
type BasicAuthProxy struct {
	// Host is host:port of the proxy; use it in image references.
	Host string
	srv  *httptest.Server
}

// RequireBasicAuth puts a BasicAuthProxy that demands user:pass in front of the registry at host.
func RequireBasicAuth(host, user, pass string) (*BasicAuthProxy, error) {
	target, err := url.Parse("http://" + host)
	if err != nil {
		return nil, err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if u, p, ok := req.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		proxy.ServeHTTP(w, req)
	}))
	return &BasicAuthProxy{Host: strings.TrimPrefix(srv.URL, "http://"), srv: srv}, nil
}

// Close stops the proxy.
func (p *BasicAuthProxy) Close() { p.srv.Close() }
