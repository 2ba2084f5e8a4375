// Package inventory keeps the ImageBackup objects: one per copy in the backup registry, created when the
// copier makes or finds a copy (registry.Options.OnBackup), and from then on owned by the keeper here, which
// runs in the same manager as the workload reconciler and talks to the backup registry through a narrow seam
// (Registry):
//
//   - usage.go finds, from the informer cache, what needs a copy: workloads whose pod templates name it or its
//     source, ReplicaSets and ControllerRevisions kept for rollback, Pods and Jobs; and asks the API server
//     the same right before anything is deleted;
//   - keeper.go holds the reconcile steps: record, verify (a manifest HEAD every --verify-interval, the full
//     verification every --deep-verify-every passes), restore a lost copy at its recorded digest, mark a copy
//     that exists nowhere Unrecoverable, and retire what nothing has needed for --retention;
//   - status.go writes the status and Events, naming.go the object names, metrics.go the metrics.
package inventory
