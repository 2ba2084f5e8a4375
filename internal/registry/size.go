package registry

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/resource"
)

// The size of an image, as --max-image-size limits it, is the most a copy can move: the sum of the sizes of its
// distinct blobs, i.e. the config and layers of every platform of an index (a layer that several platforms share
// counts once) and blobs an index lists directly. Foreign layers count for nothing, as they are never copied, and
// neither do manifests, which are a few KiB at most. The sizes are those the manifests give: measuring an image
// reads its manifests and no blob.

// measure reads every manifest of image (the children of an index LayerJobs at a time) and returns the image's
// size. Reading all children before the push, rather than as the pusher reaches them, refuses an image over the
// limit, an index that lists a manifest the registry does not have, and indexes nested too deep before a single
// blob has moved. The pusher is handed the very children read here (see copyIndex.child), so this costs no
// request that the push would not have made anyway.
func (c *Copier) measure(ctx context.Context, image remote.Taggable) (int64, error) {
	m := &measurer{jobs: c.opts.LayerJobs, blobs: map[v1.Hash]int64{}}
	var err error
	switch image := image.(type) {
	case *copyIndex:
		err = m.index(ctx, image, 0)
	case *copyImage:
		err = m.image(image)
	default:
		err = fmt.Errorf("cannot measure a %T", image) // unreachable: source returns one of the above
	}
	if err != nil {
		return 0, err
	}
	return totalSize(m.blobs), nil
}

// totalSize adds up the sizes of blobs, saturating: sizes that overflow an int64 must not wrap around to an
// image that looks small. Sizes are never negative (see measurer.add).
func totalSize(blobs map[v1.Hash]int64) int64 {
	var size int64
	for _, n := range blobs {
		if size > math.MaxInt64-n {
			return math.MaxInt64
		}
		size += max(n, 0)
	}
	return size
}

// measurer collects the distinct blobs of an image while its manifests are read.
type measurer struct {
	jobs int

	mu    sync.Mutex
	blobs map[v1.Hash]int64
}

// add counts the blobs descs describe. A negative size, which would make an image look smaller than it is,
// refuses the image: no registry serves such a blob, so it could not be copied anyway.
func (m *measurer) add(descs ...v1.Descriptor) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range descs {
		if d.Size < 0 {
			return permanent(fmt.Errorf("the manifest gives blob %s a negative size (%d)", d.Digest, d.Size))
		}
		if d.MediaType.IsDistributable() {
			m.blobs[d.Digest] = d.Size
		}
	}
	return nil
}

func (m *measurer) image(img *copyImage) error {
	manifest, err := img.Manifest()
	if err != nil {
		return err
	}
	return m.add(append([]v1.Descriptor{manifest.Config}, manifest.Layers...)...)
}

// index measures idx and its children. A registry cannot make an index list itself, directly or through another
// index: a manifest's digest would have to be part of its own content. What a registry can serve is indexes
// nested arbitrarily deep, so the depth is bounded, by the bound verification applies to the copy.
func (m *measurer) index(ctx context.Context, idx *copyIndex, depth int) error {
	if depth >= maxIndexDepth {
		return permanent(fmt.Errorf("image indexes nest more than %d levels deep (the index at %s is level %d); the controller copies at most %d",
			maxIndexDepth, idx.ref, depth+1, maxIndexDepth))
	}
	manifest, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("reading the image index at %s: %w", idx.ref, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.jobs)
	for _, child := range manifest.Manifests {
		switch {
		case child.MediaType.IsIndex():
			g.Go(func() error {
				sub, err := idx.childIndex(child.Digest)
				if err != nil {
					return err
				}
				return m.index(gctx, sub, depth+1)
			})
		case child.MediaType.IsImage():
			g.Go(func() error {
				img, err := idx.childImage(child.Digest)
				if err != nil {
					return err
				}
				return m.image(img)
			})
		default:
			// The pusher copies other children of an index as blobs (see copyIndex.Layer).
			g.Go(func() error { return m.add(child) })
		}
	}
	return g.Wait()
}

// checkSize refuses an image of size bytes if it is larger than MaxImageSize. Retrying cannot shrink an image,
// so the refusal is TooLarge: the workload's other images are backed up without it.
func (c *Copier) checkSize(orig name.Reference, size int64) error {
	if c.opts.MaxImageSize <= 0 || size <= c.opts.MaxImageSize {
		return nil
	}
	return withClass(TooLarge, fmt.Errorf("image %s is %s (%d bytes), larger than --max-image-size allows (%s); raise the limit to back it up",
		orig, humanBytes(size), size, humanBytes(c.opts.MaxImageSize)))
}

// ParseMaxImageSize parses a --max-image-size value, a Kubernetes quantity of bytes such as 10Gi or 500Mi, into
// Options.MaxImageSize; "0" means no limit.
func ParseMaxImageSize(s string) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a quantity of bytes like 10Gi or 500Mi: %w", s, err)
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("%q is negative; give a size like 10Gi, or 0 for no limit", s)
	}
	if q.Cmp(*resource.NewQuantity(math.MaxInt64, resource.BinarySI)) > 0 {
		return 0, fmt.Errorf("%q is larger than any image can be; give a size like 10Gi, or 0 for no limit", s)
	}
	// Value rounds fractions of a byte up; a suffix like m (milli), given for M or Mi, would silently make the
	// limit a byte or so and refuse every image.
	if n := q.Value(); resource.NewQuantity(n, resource.BinarySI).Cmp(q) != 0 {
		return 0, fmt.Errorf("%q is not a whole number of bytes (for mebibytes write Mi, for megabytes M)", s)
	}
	return q.Value(), nil
}

// humanBytes renders n bytes in binary units with one decimal, e.g. "1.5 GiB" or "500 MiB".
func humanBytes(n int64) string {
	v, unit := BinaryUnits(n)
	if unit == "B" {
		return strconv.FormatInt(n, 10) + " B"
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	if len(s) > 2 && s[len(s)-2:] == ".0" {
		s = s[:len(s)-2]
	}
	return s + " " + unit
}

// BinaryUnits scales n bytes to the largest binary unit (KiB, MiB, … EiB) that leaves at least 1, for people to
// read: 1536 is 1.5 "KiB". Below 1 KiB it is n "B".
func BinaryUnits(n int64) (float64, string) {
	const units = "KMGTPE"
	if n < 1024 {
		return float64(n), "B"
	}
	v, unit := float64(n)/1024, 0
	for v >= 1024 && unit < len(units)-1 {
		v /= 1024
		unit++
	}
	return v, units[unit:unit+1] + "iB"
}
