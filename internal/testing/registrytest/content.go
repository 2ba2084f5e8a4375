package registrytest

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// SwallowUploads answers blob uploads as a registry that stored them would, and stores nothing, like a
// registry that loses data: the upload is started, its chunks accepted and the blob reported created under
// the digest the client named, while the registry behind never sees any of it. It swallows the uploads for
// which when is true (every upload for nil) and passes every other request to next.
func SwallowUploads(when func(*http.Request) bool) Middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !BlobUploads(r) || (when != nil && !when(r)) {
				next.ServeHTTP(w, r)
				return
			}
			_, _ = io.Copy(io.Discard, r.Body)
			switch r.Method {
			case http.MethodPost: // start an upload (a mount, too, is answered as an upload to make)
				w.Header().Set("Location", strings.TrimSuffix(r.URL.Path, "/")+"/lost")
				w.WriteHeader(http.StatusAccepted)
			case http.MethodPatch:
				w.Header().Set("Location", r.URL.Path)
				w.WriteHeader(http.StatusAccepted)
			default: // PUT, which completes the upload
				w.Header().Set("Docker-Content-Digest", r.URL.Query().Get("digest"))
				w.WriteHeader(http.StatusCreated)
			}
		})
	}
}

// ServeManifest answers the requests for manifest want of repository repo with manifest serve of the same
// repository, like a broken or hostile registry that serves other content for a digest. The requests are
// recorded as the client sent them, for want.
func ServeManifest(repo string, want, serve v1.Hash) Middleware {
	path := fmt.Sprintf("/v2/%s/manifests/%s", repo, want)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != path {
				next.ServeHTTP(w, r)
				return
			}
			r = r.Clone(r.Context())
			r.URL.Path, r.URL.RawPath = fmt.Sprintf("/v2/%s/manifests/%s", repo, serve), ""
			// A client asks for the media type it expects of want; serve may be of another.
			r.Header.Set("Accept", strings.Join([]string{string(types.OCIImageIndex), string(types.DockerManifestList),
				string(types.OCIManifestSchema1), string(types.DockerManifestSchema2)}, ","))
			next.ServeHTTP(w, r)
		})
	}
}
