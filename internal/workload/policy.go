package workload

import (
	"context"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/imageref"
	"github.com/image-clone-controller/image-clone-controller/internal/registry"
)

// IgnoreAnnotation opts a workload, or every workload of a namespace, out of backups when set to "true".
const IgnoreAnnotation = "image-clone-controller.io/ignore"

// Policy decides which workloads are backed up and which of their images are external.
type Policy struct {
	// Backup is the registry (and path prefix) that copies go to.
	Backup imageref.Backup
	// Reader reads Namespaces and Services, through the manager's cache.
	Reader  client.Reader
	ignored map[string]bool
}

// NewPolicy returns the Policy for backup that leaves the ignored namespaces alone and reads through reader.
func NewPolicy(backup imageref.Backup, ignored []string, reader client.Reader) *Policy {
	p := &Policy{Backup: backup, Reader: reader, ignored: map[string]bool{}}
	for _, ns := range ignored {
		p.ignored[ns] = true
	}
	return p
}

// Ignores reports whether the workloads of namespace are left alone whatever they hold.
func (p *Policy) Ignores(namespace string) bool { return p.ignored[namespace] }

// SkipReason says why obj, whose pod template is template, is left alone, or "" if its images are backed up:
// it is being deleted, its namespace is ignored, it or its namespace carries IgnoreAnnotation, or it serves the
// backup registry (which must never depend on a copy of itself).
func (p *Policy) SkipReason(ctx context.Context, obj client.Object, template *corev1.PodTemplateSpec) (string, error) {
	switch {
	case obj.GetDeletionTimestamp() != nil:
		return "being deleted", nil
	case p.ignored[obj.GetNamespace()]:
		return "namespace is ignored", nil
	case obj.GetAnnotations()[IgnoreAnnotation] == "true":
		return "workload has " + IgnoreAnnotation + "=true", nil
	}
	ns := &corev1.Namespace{}
	if err := p.Reader.Get(ctx, types.NamespacedName{Name: obj.GetNamespace()}, ns); err != nil {
		return "", fmt.Errorf("reading namespace %s for its %s annotation: %w", obj.GetNamespace(), IgnoreAnnotation, err)
	}
	if ns.Annotations[IgnoreAnnotation] == "true" {
		return "namespace has " + IgnoreAnnotation + "=true", nil
	}
	// Last, because it may read Services.
	service, err := BackupService(ctx, p.Reader, p.Backup, obj, template)
	if err != nil || service == "" {
		return "", err
	}
	return "workload serves the backup registry (Service " + service + ")", nil
}

// Image is one distinct image of a pod template, parsed once into its backup mapping.
type Image struct {
	// Name is the image as the pod template names it.
	Name string
	// Mapping is the image's source and backup; Err is set instead when Name cannot be mapped.
	Mapping imageref.Mapping
	// Keep marks a copy the workload already runs from: its source is Mapping.Source, and it is only checked
	// (and restored if lost), never moved to what its upstream tag points to now.
	Keep bool
	// Err is a registry.Invalid error for an external image that has no backup name.
	Err error
}

// Images returns the distinct images of spec's containers and initContainers, sorted: the external ones, to
// copy and point at their copies, and the copies already named there that the controller made (Keep). Other
// images of the backup registry are none of the controller's business and are left out.
func (p *Policy) Images(spec *corev1.PodSpec) []Image {
	seen := map[string]bool{}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		seen[c.Image] = true
	}
	images := make([]Image, 0, len(seen))
	for _, name := range slices.Sorted(maps.Keys(seen)) {
		if p.Backup.Contains(name) {
			if mapping, err := p.Backup.Unmap(name); err == nil {
				images = append(images, Image{Name: name, Mapping: mapping, Keep: true})
			}
			continue
		}
		mapping, err := p.Backup.Map(name)
		images = append(images, Image{Name: name, Mapping: mapping, Err: registry.Classify(registry.Invalid, err)})
	}
	return images
}

// UsesBackup reports whether any container of spec runs an image from the backup registry.
func (p *Policy) UsesBackup(spec *corev1.PodSpec) bool {
	return slices.ContainsFunc(slices.Concat(spec.InitContainers, spec.Containers),
		func(c corev1.Container) bool { return p.Backup.Contains(c.Image) })
}
