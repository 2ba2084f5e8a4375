package controller

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// This file exports what the envtest specs of package controller_test need of the package's unexported parts.
// It is compiled only with the package's tests.

// NewBackupServerForTest is newBackupServer.
var NewBackupServerForTest = newBackupServer

// IndexBackupServices is indexBackupServices, the index SetupWithManager registers on the manager's cache so
// that a backup registry addressed by a cluster IP finds its Service.
var IndexBackupServices = indexBackupServices

// Serves is serves, for the specs in package controller_test.
func (s backupServer) Serves(ctx context.Context, c client.Reader, obj client.Object, template *corev1.PodTemplateSpec) (string, error) {
	return s.serves(ctx, c, obj, template)
}
