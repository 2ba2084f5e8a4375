// Package v1alpha1 holds the image-clone-controller.io/v1alpha1 API: ImageBackup, the inventory of the copies
// the controller keeps in the backup registry.
// +kubebuilder:object:generate=true
// +groupName=image-clone-controller.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of the types in this package.
	GroupVersion = schema.GroupVersion{Group: "image-clone-controller.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ImageBackup{}, &ImageBackupList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
