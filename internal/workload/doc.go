// Package workload holds the decisions that the reconciler and the admission webhook must make alike, so that
// they are made in one place: which workload kinds exist and where their pod templates are (Kind), which
// workloads are left alone (Policy.SkipReason: opt-outs, ignored namespaces, the backup registry's own
// workloads), which images are external and what their copies are called (Policy.Images), whose credentials
// pull a workload's sources (PullSecrets), and the JSON patch operations that point a pod template at its
// copies. It never talks to a registry.
package workload
