package controller

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

// countingCopier answers every copy with digest (or err) and counts the calls.
type countingCopier struct {
	digest v1.Hash
	err    error
	calls  int
}

func (c *countingCopier) Copy(context.Context, name.Reference, name.Tag, ...registry.CopyOption) (v1.Hash, error) {
	c.calls++
	return c.digest, c.err
}

func TestTagCache(t *testing.T) {
	ctx := context.Background()
	digest := v1.Hash{Algorithm: "sha256", Hex: "1b873868af4ae805e16b93a1c63b71f119d0313f66a9c396fdb0e7bf92a92de3"}
	tag := name.MustParseReference("nginx:1.23")
	pinned, err := name.ParseReference("nginx@sha256:" + digest.Hex)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := name.NewTag("backup.example.com/index_docker_io/library/nginx:1.23")
	if err != nil {
		t.Fatal(err)
	}
	otherDst, err := name.NewTag("backup.example.com/index_docker_io/library/nginx:other")
	if err != nil {
		t.Fatal(err)
	}

	next := &countingCopier{digest: digest}
	cache := newTagCache(next, time.Minute)
	now := time.Unix(1000, 0)
	cache.now = func() time.Time { return now }

	copyExpect := func(src name.Reference, to name.Tag, wantCalls int, opts ...registry.CopyOption) {
		t.Helper()
		got, err := cache.Copy(ctx, src, to, opts...)
		if err != nil || got != digest {
			t.Fatalf("Copy(%s, %s) = %v, %v; want %v", src, to, got, err, digest)
		}
		if next.calls != wantCalls {
			t.Fatalf("after Copy(%s, %s): %d copier calls, want %d", src, to, next.calls, wantCalls)
		}
	}
	copyExpect(tag, dst, 1)
	copyExpect(tag, dst, 1)      // remembered
	copyExpect(tag, otherDst, 2) // another backup
	copyExpect(pinned, dst, 3)   // digests always go to the copier (which needs no request for them)
	copyExpect(pinned, dst, 4)
	now = now.Add(time.Minute)
	copyExpect(tag, dst, 5) // expired

	next.err = errors.New("registry down")
	now = now.Add(time.Hour)
	if _, err := cache.Copy(ctx, tag, dst); err == nil {
		t.Fatal("want the copier's error once the entry expired")
	}
	next.err = nil
	copyExpect(tag, dst, 7) // failures are not remembered
	copyExpect(tag, dst, 7)

	// Each set of pull credentials proves its own access, to tags and digests alike.
	alice := registry.SourceAuth{ID: "alice"}
	bob := registry.SourceAuth{ID: "bob"}
	copyExpect(tag, dst, 8, alice)
	copyExpect(tag, dst, 8, alice)
	copyExpect(tag, dst, 9, bob)
	copyExpect(tag, dst, 10, registry.SourceAuth{}) // no credentials at all is a set of its own
	copyExpect(tag, dst, 10)                        // the copier's own keychain, remembered earlier
	copyExpect(pinned, dst, 11, alice)
	copyExpect(pinned, dst, 11, alice)
	copyExpect(pinned, dst, 12, bob)
}

func TestTagCacheBounded(t *testing.T) {
	next := &countingCopier{digest: v1.Hash{Algorithm: "sha256", Hex: "00"}}
	cache := newTagCache(next, time.Minute)
	dst, err := name.NewTag("backup.example.com/x:1")
	if err != nil {
		t.Fatal(err)
	}
	for i := range tagCacheMaxEntries + 10 {
		src, err := name.ParseReference(fmt.Sprintf("example.com/image:t%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cache.Copy(context.Background(), src, dst); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(cache.entries); n > tagCacheMaxEntries {
		t.Fatalf("%d entries, want at most %d", n, tagCacheMaxEntries)
	}
}

func TestImagePatch(t *testing.T) {
	spec := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
		Containers:     []corev1.Container{{Name: "app", Image: "nginx:1.23"}, {Name: "local", Image: "backup/x:1"}, {Name: "again", Image: "busybox"}},
	}
	ops, changed := imagePatch("/spec/template", spec, map[string]string{"busybox": "b/busybox:latest", "nginx:1.23": "b/nginx:1.23"})
	want := []jsonPatchOp{
		{Op: "test", Path: "/spec/template/spec/initContainers/0/name", Value: "init"},
		{Op: "test", Path: "/spec/template/spec/initContainers/0/image", Value: "busybox"},
		{Op: "replace", Path: "/spec/template/spec/initContainers/0/image", Value: "b/busybox:latest"},
		{Op: "test", Path: "/spec/template/spec/containers/0/name", Value: "app"},
		{Op: "test", Path: "/spec/template/spec/containers/0/image", Value: "nginx:1.23"},
		{Op: "replace", Path: "/spec/template/spec/containers/0/image", Value: "b/nginx:1.23"},
		{Op: "test", Path: "/spec/template/spec/containers/2/name", Value: "again"},
		{Op: "test", Path: "/spec/template/spec/containers/2/image", Value: "busybox"},
		{Op: "replace", Path: "/spec/template/spec/containers/2/image", Value: "b/busybox:latest"},
	}
	if len(ops) != len(want) {
		t.Fatalf("got %d ops %v, want %v", len(ops), ops, want)
	}
	for i := range want {
		if ops[i] != want[i] {
			t.Errorf("op %d = %+v, want %+v", i, ops[i], want[i])
		}
	}
	if len(changed) != 3 {
		t.Errorf("changed = %v, want the three rewritten containers' images", changed)
	}
	if ops, changed := imagePatch("/spec/template", spec, map[string]string{"other": "b/other"}); len(ops) != 0 || len(changed) != 0 {
		t.Errorf("nothing to rewrite: got %v, %v", ops, changed)
	}
}
