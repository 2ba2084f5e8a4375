package controller

import (
	"context"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/image-clone-controller/image-clone-controller/internal/workload"
)

// patchAttempts bounds how often a patch that lost a race against another writer is retried on a fresh read
// before the workload goes back to the queue.
const patchAttempts = 3

// patch rewrites the images in one JSON patch (RFC 6902) that replaces only the image fields, each guarded by
// tests of the container's name and image as they were read. Writes by others to anything else — the
// Deployment controller updating status right after a workload is created, a user editing env — neither make
// it fail nor get overwritten. If a user changed one of those images (or reordered the containers) in the
// meantime, a test fails and the rewrite is computed again from a fresh read; images the fresh read no longer
// has are simply not rewritten.
//
// addSecret also adds the backup pull secret to the pod template, unless a fresh read lists it already or
// runs nothing from the backup.
//
// It reports whether this call rewrote images: a stale read of a workload that an earlier reconcile already
// patched ends up with nothing to change.
func (r *Reconciler[T]) patch(ctx context.Context, obj T, rewrites map[string]string, addSecret bool) (bool, error) {
	log := ctrl.LoggerFrom(ctx)
	current := obj
	for attempt := 1; ; attempt++ {
		spec := &r.Kind.PodTemplate(current).Spec
		ops, changed := workload.ImageOps(r.Kind.TemplatePath, spec, rewrites)
		// On a fresh read the secret is added only where pods will pull from the backup.
		withSecret := addSecret && r.lacksBackupPullSecret(spec) && (len(changed) > 0 || r.policy.UsesBackup(spec))
		if withSecret {
			ops = append(ops, workload.PullSecretOps(r.Kind.TemplatePath, spec, r.backupSecret.name, current.GetResourceVersion())...)
		}
		if len(ops) == 0 {
			return false, nil // an earlier reconcile (or the user) already changed every image we would rewrite
		}
		body, err := json.Marshal(ops)
		if err != nil {
			return false, fmt.Errorf("encoding the image patch: %w", err)
		}
		target := workload.NewObject[T]()
		target.SetNamespace(obj.GetNamespace())
		target.SetName(obj.GetName())
		err = r.Client.Patch(ctx, target, client.RawPatch(types.JSONPatchType, body), client.FieldOwner(FieldOwner))
		if err == nil {
			workloadsPatched.WithLabelValues(r.Kind.Name).Inc()
			// The patch response is the workload as stored: the reconcile its generation triggers need not check
			// again the copies this one just checked (see keptChecked).
			r.ownPatches.Add(obj.GetUID(), target.GetGeneration())
			for _, image := range changed {
				log.Info("Pointed workload at backup", "image", image, "backup", rewrites[image])
			}
			if withSecret {
				log.Info("Added the backup pull secret to the pod template", "secret", r.backupSecret.name)
			}
			return len(changed) > 0, nil
		}
		// A failed test comes back as 422 Invalid; a conflict is not expected without a resourceVersion in the
		// patch, but means the same: the read was stale.
		if !apierrors.IsInvalid(err) && !apierrors.IsConflict(err) || attempt == patchAttempts {
			return false, fmt.Errorf("patching images: %w", err)
		}
		log.V(1).Info("Workload changed concurrently; patching a fresh read", "attempt", attempt, "error", err.Error())
		current = workload.NewObject[T]()
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(obj), current); err != nil {
			return false, fmt.Errorf("re-reading workload after a failed patch: %w", err)
		}
	}
}
