// Package managertest runs controller-runtime managers for tests.
package managertest

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Start runs mgr in the background until the returned stop function is called; stop waits for the manager to
// return and reports its error.
func Start(mgr manager.Manager) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}
