package registry_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

var _ = Describe("the copy engine", func() {
	onEveryRegistryKind(func(r *registries) {
		var copier *registry.Copier

		BeforeEach(func() {
			copier = registry.New(registry.Options{})
		})

		// pushSharing pushes a base index and an index built on it (one more layer per platform) to the source and
		// returns the source names of both and the bytes of the second that the first does not have.
		pushSharing := func(repo string) (base, derived string, newBytes int64) {
			GinkgoHelper()
			baseIdx, err := registrytest.RandomIndex(testLayers, testLayerSize)
			Expect(err).NotTo(HaveOccurred())
			derivedIdx, err := registrytest.ExtendIndex(baseIdx, 1, testLayerSize)
			Expect(err).NotTo(HaveOccurred())
			_, err = r.upstream.WriteIndex(repo+"-base:v1", baseIdx)
			Expect(err).NotTo(HaveOccurred())
			_, err = r.upstream.WriteIndex(repo+"-app:v1", derivedIdx)
			Expect(err).NotTo(HaveOccurred())
			baseBlobs := blobsOf(r.src(repo + "-base:v1"))
			for d, size := range blobsOf(r.src(repo + "-app:v1")) {
				if _, shared := baseBlobs[d]; !shared {
					newBytes += size
				}
			}
			Expect(newBytes).To(BeNumerically(">", 0))
			return repo + "-base", repo + "-app", newBytes
		}

		It("mounts the blobs another backup repository holds and uploads only the new bytes", func(ctx SpecContext) {
			base, app, newBytes := pushSharing(uniqueRepo("shared"))
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(base + ":v1"), Target: r.dst("backup/" + base + ":v1")})).Error().NotTo(HaveOccurred())
			r.resetRequests()

			want := headDigest(r.src(app + ":v1"))
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(app + ":v1"), Target: r.dst("backup/" + app + ":v1")})).To(Equal(want))
			Expect(r.backup.UploadedBytes()).To(Equal(newBytes), "only the blobs the base image lacks are uploaded")
			if r.linksBlobs {
				shared := len(platformsOf(r.src(app+":v1"))) * testLayers
				Expect(r.backup.Mounts("backup/"+app)).To(Equal(shared), "every shared layer is mounted from the base repository")
				Expect(r.backup.Requests()).To(ContainElement(SatisfyAll(
					HaveField("Method", http.MethodPost), HaveField("Query", ContainSubstring("from=backup%2F"+strings.ReplaceAll(base, "/", "%2F")))),
				))
			}
			idx, err := remote.Index(r.dst("backup/" + app + ":v1"))
			Expect(err).NotTo(HaveOccurred())
			Expect(validate.Index(idx)).To(Succeed())
			Expect(blobsOf(r.dst("backup/" + app + ":v1"))).To(Equal(blobsOf(r.src(app + ":v1"))))
		})

		It("uploads a blob again when the repository it would mount it from no longer holds it", func(ctx SpecContext) {
			if !r.linksBlobs {
				Skip("this registry serves every blob in every repository")
			}
			base, app, _ := pushSharing(uniqueRepo("unlinked"))
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(base + ":v1"), Target: r.dst("backup/" + base + ":v1")})).Error().NotTo(HaveOccurred())
			for d := range blobsOf(r.dst("backup/" + base + ":v1")) {
				Expect(r.backup.DeleteBlob("backup/"+base, d)).To(Succeed())
			}
			r.resetRequests()

			want := headDigest(r.src(app + ":v1"))
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(app + ":v1"), Target: r.dst("backup/" + app + ":v1")})).To(Equal(want))
			Expect(r.backup.Mounts("")).To(BeZero())
			Expect(r.backup.UploadedBytes()).To(Equal(totalSize(blobsOf(r.src(app + ":v1")))))
			idx, err := remote.Index(r.dst("backup/" + app + ":v1"))
			Expect(err).NotTo(HaveOccurred())
			Expect(validate.Index(idx)).To(Succeed())
		})

		It("mounts nothing for a copier that has not verified the blobs itself", func(ctx SpecContext) {
			base, app, _ := pushSharing(uniqueRepo("forgotten"))
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(base + ":v1"), Target: r.dst("backup/" + base + ":v1")})).Error().NotTo(HaveOccurred())
			copier.ForgetVerified()
			r.resetRequests()

			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(app + ":v1"), Target: r.dst("backup/" + app + ":v1")})).Error().NotTo(HaveOccurred())
			Expect(r.backup.Mounts("")).To(BeZero())
		})

		It("never copies a blob whose bytes do not match its digest", func(ctx SpecContext) {
			repo := uniqueRepo("corrupt")
			want := r.pushIndex(repo + ":v1")
			dst := r.dst("backup/" + repo + ":v1")
			corrupt := &corruptBlobs{host: r.upstream.Host}
			corrupt.on.Store(true)
			copier = registry.New(registry.Options{Transport: corrupt})
			before := snapshotCopies()

			_, err := copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})
			Expect(err).To(HaveOccurred(), "the backup registry refuses content that does not match the digest")
			Expect(registry.ClassOf(err)).To(Equal(registry.Transient), "class of %q", err)
			Expect(corrupt.served.Load()).To(BeNumerically(">", 0))
			Expect(before.added("failed")).To(Equal(1.0))
			Expect(before.added("copied")).To(BeZero())

			corrupt.on.Store(false)
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: dst})).To(Equal(want))
			idx, err := remote.Index(dst)
			Expect(err).NotTo(HaveOccurred())
			Expect(validate.Index(idx)).To(Succeed())
		})

		It("reads at most LayerJobs blobs of an image at a time, and that many in parallel", func(ctx SpecContext) {
			repo := uniqueRepo("jobs")
			digest, err := r.upstream.PushIndex(repo+":v1", 4, testLayerSize)
			Expect(err).NotTo(HaveOccurred())
			reads := &slowBlobReads{host: r.upstream.Host, delay: 30 * time.Millisecond}
			copier = registry.New(registry.Options{Transport: reads, LayerJobs: 2})

			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(digest))
			Expect(reads.total.Load()).To(BeEquivalentTo(10), "two images of a config and four layers")
			Expect(reads.most.Load()).To(BeEquivalentTo(2))
		})

		It("checks a tag it has not verified with one request to each registry, both at the same time", func(ctx SpecContext) {
			repo := uniqueRepo("check")
			want := r.pushIndex(repo + ":v1")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
			r.resetRequests()
			before := snapshotCopies()

			// Each manifest check waits for the other: checking one registry after the other would time out.
			meet := newRendezvous(r.upstream.Host, r.backup.Host)
			fresh := registry.New(registry.Options{Transport: meet})
			Expect(fresh.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":v1"), Target: r.dst("backup/" + repo + ":v1")})).To(Equal(want))
			Expect(meet.met()).To(BeTrue())
			Expect(before.added("present")).To(Equal(1.0))
			for _, reg := range []*registrytest.Registry{r.upstream, r.backup} {
				Expect(reg.Requests()).To(ConsistOf(SatisfyAll(
					HaveField("Method", http.MethodHead), HaveField("Path", ContainSubstring("/manifests/v1")))),
				)
			}
		})

		It("moves the backup tag back when the source tag returns to an image copied before", func(ctx SpecContext) {
			repo := uniqueRepo("returning")
			first := r.pushIndex(repo + ":latest")
			dst := r.dst("backup/" + repo + ":latest")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":latest"), Target: dst})).To(Equal(first))
			second := r.pushIndex(repo + ":latest")
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":latest"), Target: dst})).To(Equal(second))

			desc, err := remote.Get(r.src(repo + "@" + first.String()))
			Expect(err).NotTo(HaveOccurred())
			Expect(remote.Tag(mustTag(r.upstream.Host+"/"+repo+":latest"), desc)).To(Succeed())
			Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: r.src(repo + ":latest"), Target: dst})).To(Equal(first))
			Expect(headDigest(dst)).To(Equal(first), "the backup tag follows the source tag")
		})
	})

	Describe("reading from a registry that hands out anonymous tokens", func() {
		It("gets a token after the first refusal and asks for one straight away afterwards", func(ctx SpecContext) {
			upstream, backup := registrytest.NewInProcess(), registrytest.NewInProcess()
			DeferCleanup(upstream.Close)
			DeferCleanup(backup.Close)
			want, err := upstream.PushImage("app:v1", testLayers, testLayerSize)
			Expect(err).NotTo(HaveOccurred())
			tokens := requireAnonymousToken(upstream.Host)
			copier := registry.New(registry.Options{})

			for _, tag := range []string{"v1", "v1-again"} {
				Expect(copier.Copy(withLogger(ctx), registry.CopyRequest{Source: mustRef(tokens.host + "/app:v1"), Target: mustTag(backup.Host + "/backup/app:" + tag)})).To(Equal(want))
			}
			Expect(tokens.refusedManifests.Load()).To(BeEquivalentTo(1), "only the first check was tried without a token")
		})
	})
})

// platformsOf returns the platforms of the index at ref.
func platformsOf(ref name.Reference) []string {
	GinkgoHelper()
	idx, err := remote.Index(ref)
	Expect(err).NotTo(HaveOccurred())
	m, err := idx.IndexManifest()
	Expect(err).NotTo(HaveOccurred())
	var platforms []string
	for _, child := range m.Manifests {
		platforms = append(platforms, child.Platform.String())
	}
	return platforms
}

// corruptBlobs flips a byte of every blob read from host while on is set, like a source that serves bad data.
type corruptBlobs struct {
	host   string
	on     atomic.Bool
	served atomic.Int64
}

func (c *corruptBlobs) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := remote.DefaultTransport.RoundTrip(req)
	if err != nil || !c.on.Load() || req.URL.Host != c.host || req.Method != http.MethodGet ||
		!strings.Contains(req.URL.Path, "/blobs/") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(body) > 0 {
		body[len(body)/2] ^= 0xff
	}
	c.served.Add(1)
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp, nil
}

// slowBlobReads delays every blob read from host and records how many were open at the same time.
type slowBlobReads struct {
	host  string
	delay time.Duration
	open  atomic.Int64
	most  atomic.Int64
	total atomic.Int64
}

func (s *slowBlobReads) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != s.host || req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/blobs/") {
		return remote.DefaultTransport.RoundTrip(req)
	}
	s.total.Add(1)
	n := s.open.Add(1)
	for {
		most := s.most.Load()
		if n <= most || s.most.CompareAndSwap(most, n) {
			break
		}
	}
	time.Sleep(s.delay)
	resp, err := remote.DefaultTransport.RoundTrip(req)
	if err != nil {
		s.open.Add(-1)
		return nil, err
	}
	resp.Body = &closeHook{ReadCloser: resp.Body, close: func() { s.open.Add(-1) }}
	return resp, nil
}

type closeHook struct {
	io.ReadCloser
	once  sync.Once
	close func()
}

func (c *closeHook) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(c.close)
	return err
}

// rendezvous holds each manifest HEAD sent to one of two hosts until one has been sent to the other as well.
type rendezvous struct {
	mu      sync.Mutex
	arrived map[string]bool
	both    chan struct{}
}

func newRendezvous(a, b string) *rendezvous {
	return &rendezvous{arrived: map[string]bool{a: false, b: false}, both: make(chan struct{})}
}

func (m *rendezvous) met() bool {
	select {
	case <-m.both:
		return true
	default:
		return false
	}
}

func (m *rendezvous) RoundTrip(req *http.Request) (*http.Response, error) {
	m.mu.Lock()
	seen, ok := m.arrived[req.URL.Host]
	if ok && req.Method == http.MethodHead && strings.Contains(req.URL.Path, "/manifests/") && !seen {
		m.arrived[req.URL.Host] = true
		if allTrue(m.arrived) {
			close(m.both)
		}
		m.mu.Unlock()
		select {
		case <-m.both:
		case <-time.After(10 * time.Second):
			return nil, errors.New("the other registry was not asked meanwhile")
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	} else {
		m.mu.Unlock()
	}
	return remote.DefaultTransport.RoundTrip(req)
}

func allTrue(m map[string]bool) bool {
	for _, v := range m {
		if !v {
			return false
		}
	}
	return true
}

// tokenRegistry is a registry that, like Docker Hub, serves anonymous reads only with a token from its realm.
type tokenRegistry struct {
	host string
	// refusedManifests counts manifest requests refused for want of a token.
	refusedManifests atomic.Int64
}

// requireAnonymousToken puts a proxy in front of the registry at host that demands a bearer token, which its
// realm hands to anyone.
func requireAnonymousToken(host string) *tokenRegistry {
	GinkgoHelper()
	const token = "anonymous-token"
	target, err := url.Parse("http://" + host)
	Expect(err).NotTo(HaveOccurred())
	proxy := httputil.NewSingleHostReverseProxy(target)
	t := &tokenRegistry{}
	var realm string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/token" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = fmt.Fprintf(w, `{"token":%q}`, token)
			return
		}
		if req.Header.Get("Authorization") != "Bearer "+token {
			if strings.Contains(req.URL.Path, "/manifests/") {
				t.refusedManifests.Add(1)
			}
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="test"`, realm))
			w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, req)
	}))
	DeferCleanup(srv.Close)
	realm = srv.URL + "/token"
	t.host = strings.TrimPrefix(srv.URL, "http://")
	return t
}

var (
	_ http.RoundTripper = (*corruptBlobs)(nil)
	_ http.RoundTripper = (*slowBlobReads)(nil)
	_ http.RoundTripper = (*rendezvous)(nil)
)
