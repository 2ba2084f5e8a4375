package registrytest

import (
	"fmt"
	"io"
	"net/http"
)

// Middleware changes how a Registry's proxy answers: it may answer a request itself or pass it on to next,
// changed or not. Add it with Registry.Use or Front.
type Middleware func(next http.Handler) http.Handler

// BasicAuth demands user and password, as a private registry does: any request without them is refused with a
// 401 that asks for basic authentication.
func BasicAuth(user, pass string) Middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if u, p, ok := req.BasicAuth(); ok && u == user && p == pass {
				next.ServeHTTP(w, req)
				return
			}
			unauthorized(w, `Basic realm="registry"`)
		})
	}
}

// TokenPath is where TokenRealm hands out its token, on the host of the proxy.
const TokenPath = "/token"

// TokenRealm demands a bearer token, as Docker Hub does of anonymous pulls: a request without token is refused
// with a 401 that names the realm at TokenPath, where anyone is given it. The realm's own requests are counted
// like the others.
func TokenRealm(token string) Middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			switch {
			case req.URL.Path == TokenPath:
				w.Header().Set("Content-Type", "application/json")
				_, _ = fmt.Fprintf(w, `{"token":%q,"access_token":%q}`, token, token)
			case req.Header.Get("Authorization") == "Bearer "+token:
				next.ServeHTTP(w, req)
			default:
				unauthorized(w, fmt.Sprintf(`Bearer realm="http://%s%s",service="registrytest"`, req.Host, TokenPath))
			}
		})
	}
}

// unauthorized refuses a request as the distribution registry does, with the challenge a client must answer.
func unauthorized(w http.ResponseWriter, challenge string) {
	w.Header().Set("WWW-Authenticate", challenge)
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
}
