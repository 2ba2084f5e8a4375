// Package admission rewrites workloads before they are stored: a mutating admission webhook, served by every
// replica of the manager, points each external image of a pod template at its copy when the backup registry
// already holds that copy complete, so a new workload rolls out once, on its copies, and a GitOps tool that
// applies the public image again leaves nothing to change.
//
// It makes the reconciler's decisions (internal/workload: opt-outs, which images are external, whose pull
// secrets must prove access) and asks the copier's state (registry.Copier.Lookup), within a small time budget.
// It never copies: an image without a verified copy, a slow registry or any error admits the object unchanged,
// and the reconciler copies and patches as it always does. certs.go provides the serving certificate.
package admission
