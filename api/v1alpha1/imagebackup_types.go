package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Phase is where an ImageBackup stands in its life.
// +kubebuilder:validation:Enum=Copying;Ready;Failed;Lost;Restoring;Unrecoverable
type Phase string

// The phases of an ImageBackup.
const (
	// PhaseCopying: the first copy is under way.
	PhaseCopying Phase = "Copying"
	// PhaseReady: the backup registry holds the copy, verified complete at status.digest.
	PhaseReady Phase = "Ready"
	// PhaseFailed: the image could not be copied (see the Ready condition); workloads run from the source.
	PhaseFailed Phase = "Failed"
	// PhaseLost: the backup registry no longer holds the copy complete, and restoring it has not started or
	// failed for a reason that may pass (see the Ready condition).
	PhaseLost Phase = "Lost"
	// PhaseRestoring: the lost copy is being copied again from the source at status.digest.
	PhaseRestoring Phase = "Restoring"
	// PhaseUnrecoverable: neither the backup nor the source registry holds the image at status.digest; new
	// pods of the workloads using it cannot start.
	PhaseUnrecoverable Phase = "Unrecoverable"
)

// Condition types of an ImageBackup.
const (
	// ConditionReady is True while the backup registry holds the copy complete, so that pods can pull it.
	ConditionReady = "Ready"
	// ConditionVerified is True when the last verification found the copy intact.
	ConditionVerified = "Verified"
)

// ImageBackupSpec names an image and its copy.
type ImageBackupSpec struct {
	// Source is the public image reference the copy is made from, as workloads name it, fully qualified.
	// +kubebuilder:validation:MinLength=1
	Source string `json:"source"`
	// Backup is the reference of the copy in the backup registry (a tag).
	// +kubebuilder:validation:MinLength=1
	Backup string `json:"backup"`
}

// WorkloadReference names an object whose pod template uses a backup.
type WorkloadReference struct {
	// Kind is the object's kind: Deployment, DaemonSet, StatefulSet, CronJob, Job, ReplicaSet or Pod.
	Kind string `json:"kind"`
	// Namespace of the object.
	Namespace string `json:"namespace"`
	// Name of the object.
	Name string `json:"name"`
}

// Usage says what needs a backup.
type Usage struct {
	// Count is the number of workloads (Deployments, DaemonSets, StatefulSets, CronJobs, and Jobs, ReplicaSets
	// and Pods that no controller owns) whose pod templates name the copy or its source.
	Count int32 `json:"count"`
	// Workloads lists some of them (at most 10), sorted.
	// +optional
	// +listType=atomic
	Workloads []WorkloadReference `json:"workloads,omitempty"`
	// Retained is the number of other objects that still name it: ReplicaSets and ControllerRevisions kept
	// for rollback, and Pods and Jobs of the workloads.
	// +optional
	Retained int32 `json:"retained,omitempty"`
}

// ImageBackupStatus is what the controller knows of a backup.
type ImageBackupStatus struct {
	// Phase summarises the conditions.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// Digest is the digest of the copy: of its index for a multi-platform image.
	// +optional
	Digest string `json:"digest,omitempty"`
	// ShortDigest is the first 12 hexadecimal digits of Digest, for display.
	// +optional
	ShortDigest string `json:"shortDigest,omitempty"`
	// MediaType is the media type of the manifest at Digest.
	// +optional
	MediaType string `json:"mediaType,omitempty"`
	// Platforms lists the platforms of an index (os/architecture[/variant]).
	// +optional
	// +listType=atomic
	Platforms []string `json:"platforms,omitempty"`
	// Size is the sum of the sizes of the copy's distinct blobs, as --max-image-size measures it, in bytes.
	// +optional
	Size int64 `json:"size,omitempty"`
	// DisplaySize is Size in a readable unit, for display.
	// +optional
	DisplaySize string `json:"displaySize,omitempty"`
	// PreviousDigests lists, newest first, digests that a moving tag was copied at before (at most 10).
	// +optional
	// +listType=atomic
	PreviousDigests []string `json:"previousDigests,omitempty"`
	// LastCopied is when the copy was last written to the backup registry (first copy or restore).
	// +optional
	LastCopied *metav1.Time `json:"lastCopied,omitempty"`
	// LastVerified is when the backup registry was last found to hold the copy.
	// +optional
	LastVerified *metav1.Time `json:"lastVerified,omitempty"`
	// LastDeepVerified is when every manifest and blob of the copy was last checked.
	// +optional
	LastDeepVerified *metav1.Time `json:"lastDeepVerified,omitempty"`
	// UsedBy says what needs the copy; always written, so that a copy nothing uses shows 0. While it changes
	// (many workloads created at once) it is written at most every 30 seconds; unusedSince, whether anything
	// needs the copy at all, is written at once.
	// +optional
	UsedBy Usage `json:"usedBy"`
	// UnusedSince is when nothing was found to need the copy any more; retention counts from it.
	// +optional
	UnusedSince *metav1.Time `json:"unusedSince,omitempty"`
	// Conditions are Ready and Verified.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ImageBackup is the inventory record of one copy in the backup registry: what it is a copy of, whether the
// backup registry still holds it complete, and what needs it. The controller creates, verifies, restores and
// retires them; they are cluster-scoped because copies are shared by every namespace.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ib,categories=image-clone
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.source`
// +kubebuilder:printcolumn:name="Digest",type=string,JSONPath=`.status.shortDigest`
// +kubebuilder:printcolumn:name="Size",type=string,JSONPath=`.status.displaySize`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Verified",type=date,JSONPath=`.status.lastVerified`
// +kubebuilder:printcolumn:name="Used By",type=integer,JSONPath=`.status.usedBy.count`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Backup",type=string,JSONPath=`.spec.backup`,priority=1
type ImageBackup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ImageBackupSpec   `json:"spec"`
	Status ImageBackupStatus `json:"status,omitempty"`
}

// ImageBackupList is a list of ImageBackups.
// +kubebuilder:object:root=true
type ImageBackupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageBackup `json:"items"`
}
