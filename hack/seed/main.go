// Command seed pushes small random multi-arch images (linux/amd64 and linux/arm64), named like public images,
// to a registry, so that the local cluster (hack/local-up.sh) has an "upstream" to mirror. Tags that already
// exist are left alone, so running it again is harmless.
//
// Usage: go run ./hack/seed [--registry 127.0.0.1:5002] [--layers 2] [--layer-size 4096] [repo:tag ...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/registrytest"
)

// defaultImages are the repositories the local cluster's examples use, as the upstream mirror stores them:
// Docker Hub paths as they are, other registries under a prefix (the controller's --source-mirror maps
// ghcr.io to <mirror>/ghcr).
var defaultImages = []string{
	"library/nginx:latest",
	"library/nginx:1.23",
	"library/fluentd:latest",
	"grafana/grafana:main",
	"ghcr/timebertt/speedtest-exporter:v0.1.0",
}

func main() {
	if !run() {
		os.Exit(1)
	}
}

// run seeds the images named by the command line and reports whether all of them are there.
func run() bool {
	registry := flag.String("registry", "127.0.0.1:5002", "Registry (host:port) to push to, spoken to over plain HTTP.")
	layers := flag.Int("layers", 2, "Layers per platform image.")
	layerSize := flag.Int64("layer-size", 4096, "Bytes per layer.")
	timeout := flag.Duration("timeout", time.Minute, "Time limit for the whole run.")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: go run ./hack/seed [flags] [repo:tag ...]\n\nDefault images: %v\n\nFlags:\n",
			defaultImages)
		flag.PrintDefaults()
	}
	flag.Parse()

	images := flag.Args()
	if len(images) == 0 {
		images = defaultImages
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, *timeout)
	defer cancelTimeout()

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed bool
	)
	for _, image := range images {
		wg.Go(func() {
			msg, err := seed(ctx, *registry+"/"+image, *layers, *layerSize)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = true
				fmt.Fprintf(os.Stderr, "seed: %s: %v\n", image, err)
				return
			}
			fmt.Printf("seed: %s: %s\n", image, msg)
		})
	}
	wg.Wait()
	return !failed
}

// seed pushes a random two-platform index to ref unless ref already exists.
func seed(ctx context.Context, ref string, layers int, layerSize int64) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure, name.StrictValidation)
	if err != nil {
		return "", err
	}
	opts := []remote.Option{remote.WithContext(ctx)}
	desc, err := remote.Head(r, opts...)
	if err == nil {
		return "exists (" + desc.Digest.String() + ")", nil
	}
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
		return "", fmt.Errorf("checking whether it exists: %w", err)
	}

	idx, err := registrytest.RandomIndex(layers, layerSize)
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(r, idx, opts...); err != nil {
		return "", fmt.Errorf("pushing: %w", err)
	}
	digest, err := idx.Digest()
	if err != nil {
		return "", err
	}
	return "pushed " + digest.String(), nil
}
