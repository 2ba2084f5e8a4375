package inventory

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestObjectName(t *testing.T) {
	cases := []struct {
		target, prefix string
	}{
		{"registry.local:5000/backup/index_docker_io/library/nginx:1.23", "nginx-1-23-"},
		{"127.0.0.1:5001/index_docker_io/grafana/grafana:main", "grafana-main-"},
		{"b.example/ghcr_io/Org/App:V1.0_rc", "app-v1-0-rc-"},
		{"b.example/index_docker_io/library/nginx:sha256_" + strings.Repeat("ab", 32), "nginx-sha256-abababababababababababababa-"},
		{"b.example/x/.hidden:..tag", "hidden-tag-"},
		{"b.example/x/___:___", "image-"},
		{"b.example/x/" + strings.Repeat("a", 200) + ":" + strings.Repeat("b", 128), strings.Repeat("a", 40) + "-"},
	}
	for _, c := range cases {
		got := ObjectName(c.target)
		if !strings.HasPrefix(got, c.prefix) || len(got) != len(c.prefix)+10 {
			t.Errorf("ObjectName(%q) = %q, want %q followed by 10 hex digits", c.target, got, c.prefix)
		}
		if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
			t.Errorf("ObjectName(%q) = %q is not a valid name: %v", c.target, got, errs)
		}
		if again := ObjectName(c.target); again != got {
			t.Errorf("ObjectName(%q) is not stable: %q, then %q", c.target, got, again)
		}
	}
	if a, b := ObjectName("b.example/x/nginx:1.23"), ObjectName("b.example/y/nginx:1.23"); a == b {
		t.Errorf("two references share the name %q", a)
	}
}

func FuzzObjectName(f *testing.F) {
	f.Add("registry.local:5000/backup/index_docker_io/library/nginx:1.23")
	f.Add("x/.-_.:-")
	f.Add("")
	f.Add("00000000. 00")
	f.Fuzz(func(t *testing.T, target string) {
		got := ObjectName(target)
		if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
			t.Fatalf("ObjectName(%q) = %q is not a valid name: %v", target, got, errs)
		}
		if ObjectName(target) != got {
			t.Fatalf("ObjectName(%q) is not stable", target)
		}
	})
}
