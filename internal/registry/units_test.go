package registry_test

import (
	"testing"

	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

func TestBinaryUnits(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		v    float64
		unit string
	}{
		{0, 0, "B"},
		{1023, 1023, "B"},
		{1024, 1, "KiB"},
		{1536, 1.5, "KiB"},
		{5 << 20, 5, "MiB"},
		{3 << 30, 3, "GiB"},
		{1 << 62, 4, "EiB"},
	} {
		if v, unit := registry.BinaryUnits(tc.n); v != tc.v || unit != tc.unit {
			t.Errorf("BinaryUnits(%d) = %g %s, want %g %s", tc.n, v, unit, tc.v, tc.unit)
		}
	}
}
