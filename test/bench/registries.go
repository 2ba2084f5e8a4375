package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// server is a distribution registry started by the harness, with its storage in its own directory.
// Backend (the registry itself) is what timed copies use; Host (a counting proxy) is for rows that count
// requests and bytes at the registry side.
type server struct {
	*registrytest.Registry
	dir string
}

var registrySeq atomic.Int64

// startRegistry starts a distribution registry with empty storage. stop it when done with it; the harness
// stops whatever is left at exit.
func (env *benchEnv) startRegistry(name string) (*server, error) {
	dir := filepath.Join(env.tmp, fmt.Sprintf("%s-%d", name, registrySeq.Add(1)))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	reg, err := registrytest.StartDistribution(env.registryBinary, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	r := &server{Registry: reg, dir: dir}
	env.onClose(r.stop)
	return r, nil
}

// stop kills the registry and deletes its storage; stopping twice is harmless.
func (r *server) stop() {
	r.Close()
	_ = os.RemoveAll(r.dir)
}

// sourceRegistry returns the registry all rows copy from, starting it on first use.
func (env *benchEnv) sourceRegistry() (*server, error) {
	if env.source != nil {
		return env.source, nil
	}
	reg, err := env.startRegistry("source")
	if err != nil {
		return nil, err
	}
	env.source = reg
	return reg, nil
}

// withFreshBackup runs f with a backup registry that holds nothing, so that every measured copy is cold for
// every contender (blobs in a registry's storage are shared by its repositories), and stops it afterwards.
func (env *benchEnv) withFreshBackup(f func(backup *server) error) error {
	backup, err := env.startRegistry("backup")
	if err != nil {
		return err
	}
	defer backup.stop()
	return f(backup)
}
