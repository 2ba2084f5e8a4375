package controller

import (
	"errors"
	"strings"
	"testing"

	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

func TestDescribeFailures(t *testing.T) {
	long := "registry.example.com/" + strings.Repeat("a", 2000) + ":1"
	note := describeFailures([]backupResult{
		{Image: workload.Image{Name: "nginx@sha256:abc"}, err: errors.New("invalid checksum digest length")},
		{Image: workload.Image{Name: long}, err: errors.New("repository must be between 1 and 255 characters in length: " + long)},
	}, nil)
	if len(note) > maxEventNote {
		t.Fatalf("note has %d bytes, more than the limit of %d", len(note), maxEventNote)
	}
	for _, want := range []string{"Cannot back up image nginx@sha256:abc: invalid checksum digest length; ", "Cannot back up image " + long[:100]} {
		if !strings.Contains(note, want) {
			t.Errorf("note %q does not contain %q", note, want)
		}
	}

	short := describeFailures([]backupResult{{Image: workload.Image{Name: "a:1"}, err: errors.New("x")}, {Image: workload.Image{Name: "b:1"}, err: errors.New("y")}}, nil)
	if want := "Cannot back up image a:1: x; Cannot back up image b:1: y"; short != want {
		t.Errorf("got %q, want %q", short, want)
	}

	withSecrets := describeFailures([]backupResult{{Image: workload.Image{Name: "a:1"}, err: errors.New("x")}}, []string{"regcred (not found)"})
	if want := "Pull secrets not used: regcred (not found). Cannot back up image a:1: x"; withSecrets != want {
		t.Errorf("got %q, want %q", withSecrets, want)
	}
	manySecrets := make([]string, 200)
	for i := range manySecrets {
		manySecrets[i] = "some-long-secret-name (the controller may not read it)"
	}
	crowded := describeFailures([]backupResult{{Image: workload.Image{Name: "a:1"}, err: errors.New("x")}, {Image: workload.Image{Name: long}, err: errors.New(long)}}, manySecrets)
	if len(crowded) > maxEventNote || !strings.Contains(crowded, "Cannot back up image a:1: x; ") {
		t.Errorf("%d bytes, want at most %d and every image named: %q", len(crowded), maxEventNote, crowded)
	}
}
