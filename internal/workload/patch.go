package workload

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// PatchOp is one operation of a JSON patch (RFC 6902).
type PatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// ImageOps returns the JSON patch operations that point every container of spec (at templatePath in the
// object) whose image has a rewrite at its copy, and the images changed. Each replacement is preceded by tests
// of the container's name and current image, so that a patch computed from a stale read fails instead of
// rewriting a container someone changed or moved meanwhile.
func ImageOps(templatePath string, spec *corev1.PodSpec, rewrites map[string]string) ([]PatchOp, []string) {
	var ops []PatchOp
	var changed []string
	for _, list := range []struct {
		field      string
		containers []corev1.Container
	}{{"initContainers", spec.InitContainers}, {"containers", spec.Containers}} {
		for i, c := range list.containers {
			backup, ok := rewrites[c.Image]
			if !ok {
				continue
			}
			path := fmt.Sprintf("%s/spec/%s/%d", templatePath, list.field, i)
			ops = append(ops,
				PatchOp{Op: "test", Path: path + "/name", Value: c.Name},
				PatchOp{Op: "test", Path: path + "/image", Value: c.Image},
				PatchOp{Op: "replace", Path: path + "/image", Value: backup})
			changed = append(changed, c.Image)
		}
	}
	return ops, changed
}

// PullSecretOps returns the JSON patch operations that add the pull secret secretName to spec (at templatePath
// in the object). Appending to an existing list needs no guard; creating the list does when the patch is sent
// to the API server, since "add" would replace a list someone else created meanwhile, so it is guarded by
// resourceVersion, the version read ("" for no guard: an admission patch applies to the very object it was
// computed from).
func PullSecretOps(templatePath string, spec *corev1.PodSpec, secretName, resourceVersion string) []PatchOp {
	path := templatePath + "/spec/imagePullSecrets"
	ref := map[string]string{"name": secretName}
	if len(spec.ImagePullSecrets) > 0 {
		return []PatchOp{{Op: "add", Path: path + "/-", Value: ref}}
	}
	add := PatchOp{Op: "add", Path: path, Value: []map[string]string{ref}}
	if resourceVersion == "" {
		return []PatchOp{add}
	}
	return []PatchOp{{Op: "test", Path: "/metadata/resourceVersion", Value: resourceVersion}, add}
}

// ListsPullSecret reports whether spec lists the pull secret secretName.
func ListsPullSecret(spec *corev1.PodSpec, secretName string) bool {
	return slices.ContainsFunc(spec.ImagePullSecrets, func(ref corev1.LocalObjectReference) bool { return ref.Name == secretName })
}
