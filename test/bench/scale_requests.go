package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// apiCounter is a reverse proxy between the controller and the API server that counts the controller's
// requests by verb and resource: the controller's own rest_client_requests_total has the HTTP method only,
// and the API server's apiserver_request_total counts every client together (the controller manager's
// Events and status updates among them). The controller talks plain HTTP to the proxy on loopback, with the
// impersonation of hack/local-up.sh's controller.kubeconfig; the proxy forwards with the admin certificate of
// the cluster, so the API server sees the same user and the same impersonated ServiceAccount as without it.
type apiCounter struct {
	adminKubeconfig string
	listener        net.Listener
	server          *http.Server

	mu        sync.Mutex
	transport http.RoundTripper
	target    *url.URL
	counts    map[string]float64 // by "verb resource", e.g. "get serviceaccounts"
	failures  map[string]float64 // by "verb resource code" for answers other than 2xx
}

// The identity hack/local-up.sh gives the controller (controller_namespace, controller_sa there).
const (
	localControllerNamespace = "image-clone-system"
	localControllerSA        = "image-clone-controller"
)

// startAPICounter serves the proxy on 127.0.0.1:port. The cluster need not run yet: the proxy reads the admin
// kubeconfig on the first request that needs it.
func startAPICounter(ctx context.Context, port int, adminKubeconfig string) (*apiCounter, error) {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("starting the API request counter: %w", err)
	}
	a := &apiCounter{adminKubeconfig: adminKubeconfig, listener: l, counts: map[string]float64{}, failures: map[string]float64{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			// The impersonation headers pass unchanged.
			if t := a.upstream(); t != nil {
				r.SetURL(t)
			}
		},
		Transport:     roundTripperFunc(a.roundTrip),
		FlushInterval: -1, // watches stream
		ModifyResponse: func(resp *http.Response) error {
			a.record(resp.Request, resp.StatusCode)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			a.record(req, noAnswer)
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}
	a.server = &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = a.server.Serve(l) }()
	return a, nil
}

// addr is host:port of the proxy.
func (a *apiCounter) addr() string { return a.listener.Addr().String() }

// writeKubeconfig writes the controller's kubeconfig for the proxy to path.
func (a *apiCounter) writeKubeconfig(path string) error {
	return os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: http://%s
users:
- name: controller
  user:
    as: system:serviceaccount:%s:%s
    as-groups:
    - system:serviceaccounts
    - system:serviceaccounts:%s
contexts:
- name: local
  context:
    cluster: local
    user: controller
current-context: local
`, a.addr(), localControllerNamespace, localControllerSA, localControllerNamespace)), 0o600)
}

// upstream returns the API server's URL once the admin kubeconfig has been read.
func (a *apiCounter) upstream() *url.URL {
	if _, err := a.connect(); err != nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.target
}

// connect builds the transport to the API server from the admin kubeconfig, which kwokctl's certificates are
// written into once the cluster is created.
func (a *apiCounter) connect() (http.RoundTripper, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.transport != nil {
		return a.transport, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", a.adminKubeconfig)
	if err != nil {
		return nil, fmt.Errorf("the cluster's admin kubeconfig is not there yet: %w", err)
	}
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, err
	}
	target, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, err
	}
	a.transport, a.target = tr, target
	return tr, nil
}

func (a *apiCounter) roundTrip(req *http.Request) (*http.Response, error) {
	tr, err := a.connect()
	if err != nil {
		return nil, err
	}
	if req.URL.Host == a.addr() || req.URL.Scheme != "https" {
		return nil, errors.New("the API server's address is not known yet")
	}
	return tr.RoundTrip(req)
}

// noAnswer is the code recorded for a request the API server did not answer: the controller went away (it
// is stopped with requests in flight) or the proxy could not reach the API server.
const noAnswer = 0

func (a *apiCounter) record(req *http.Request, code int) {
	key := requestKey(req)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counts[key]++
	switch {
	case code == noAnswer:
		a.failures[key+" (no answer)"]++
	case code < 200 || code > 299:
		a.failures[key+" "+strconv.Itoa(code)]++
	}
}

// snapshot returns the counts so far, by "verb resource" and, for answers other than 2xx, by "verb resource code".
func (a *apiCounter) snapshot() (counts, failures map[string]float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.counts), maps.Clone(a.failures)
}

func (a *apiCounter) close() {
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = a.server.Shutdown(ctx)
	_ = a.server.Close()
}

// requestKey names a request to the API server as "verb resource" the way the API server's request metrics
// do: get, list, watch, create, update, patch, delete or deletecollection, and the resource with its group and
// subresource (e.g. "patch deployments.apps", "update imagebackups.image-clone-controller.io/status");
// discovery and other paths are "get /path".
func requestKey(req *http.Request) string {
	path := strings.Trim(req.URL.Path, "/")
	var group string
	var rest []string
	switch parts := strings.Split(path, "/"); {
	case len(parts) >= 3 && parts[0] == "api":
		rest = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		group, rest = parts[1], parts[3:]
	default:
		return strings.ToLower(req.Method) + " /" + path
	}
	// namespaces/<ns>/<resource>/... is a namespaced resource; namespaces/<name> is a Namespace.
	if len(rest) >= 3 && rest[0] == "namespaces" {
		rest = rest[2:]
	}
	resource := rest[0]
	if group != "" {
		resource += "." + group
	}
	named := len(rest) >= 2
	if len(rest) >= 3 {
		resource += "/" + rest[2]
	}
	var verb string
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		q := req.URL.Query().Get("watch")
		switch {
		case q == "true" || q == "1":
			verb = "watch"
		case named:
			verb = "get"
		default:
			verb = "list"
		}
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		verb = "delete"
		if !named {
			verb = "deletecollection"
		}
	default:
		verb = strings.ToLower(req.Method)
	}
	return verb + " " + resource
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// countedKubeconfig is where the cluster keeps the controller's kubeconfig for the API request counter.
func (c *localCluster) countedKubeconfig() string {
	return filepath.Join(c.dir, "controller-counted.kubeconfig")
}

// apiRequests returns the controller's API requests counted so far (empty maps without a counter).
func (c *localCluster) apiRequests() (counts, failures map[string]float64) {
	if c.api == nil {
		return map[string]float64{}, map[string]float64{}
	}
	return c.api.snapshot()
}

// deltaCounts returns after - before, leaving out what did not change.
func deltaCounts(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// splitKeeper splits counts by verb and resource (see requestKey) into the inventory keeper's, those of
// ImageBackups, and the rest, the workload reconcilers'.
func splitKeeper(counts map[string]float64) (keeper, rest map[string]float64) {
	keeper, rest = map[string]float64{}, map[string]float64{}
	for k, v := range counts {
		if strings.Contains(k, " imagebackups.") {
			keeper[k] = v
		} else {
			rest[k] = v
		}
	}
	return keeper, rest
}

// sumCounts adds up counts.
func sumCounts(m map[string]float64) float64 {
	var n float64
	for _, v := range m {
		n += v
	}
	return n
}

// upstreamRequests returns the requests the upstream registry's counting proxy saw (nil without one).
func (c *localCluster) upstreamRequests() []registrytest.Request {
	if c.upstream == nil {
		return nil
	}
	return c.upstream.Requests()
}

// upstreamManifestGets counts the manifest GETs among reqs: what Docker Hub counts as pulls.
func upstreamManifestGets(reqs []registrytest.Request) float64 {
	var n float64
	for _, r := range reqs {
		if r.Method == http.MethodGet && strings.Contains(r.Path, "/manifests/") {
			n++
		}
	}
	return n
}

// budgetGetsByRepo counts the manifest GETs among reqs by repository.
func budgetGetsByRepo(reqs []registrytest.Request) map[string]float64 {
	out := map[string]float64{}
	for _, r := range reqs {
		if repo, _, ok := strings.Cut(strings.TrimPrefix(r.Path, "/v2/"), "/manifests/"); ok && r.Method == http.MethodGet {
			out[repo]++
		}
	}
	return out
}

// upstreamByKind counts reqs by method and kind of path (manifests, blobs, blob uploads, tags, referrers, the
// /v2/ ping), with the status when it is not 2xx, e.g. "HEAD manifests", "GET referrers 404".
func upstreamByKind(reqs []registrytest.Request) map[string]float64 {
	out := map[string]float64{}
	for _, r := range reqs {
		kind := r.Path
		switch {
		case strings.Contains(r.Path, "/manifests/"):
			kind = "manifests"
		case strings.Contains(r.Path, "/blobs/uploads/"):
			kind = "blob uploads"
		case strings.Contains(r.Path, "/blobs/"):
			kind = "blobs"
		case strings.HasSuffix(r.Path, "/tags/list"):
			kind = "tags"
		case strings.Contains(r.Path, "/referrers/"):
			kind = "referrers"
		case r.Path == "/v2/" || r.Path == "/v2":
			kind = "ping"
		}
		key := r.Method + " " + kind
		if r.Status < 200 || r.Status > 299 {
			key += fmt.Sprintf(" %d", r.Status)
		}
		out[key]++
	}
	return out
}

// listCounts renders counts as "a: 1, b: 2", sorted by key, leaving out zeros.
func listCounts(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "none"
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %g", k, m[k])
	}
	return strings.Join(parts, ", ")
}
