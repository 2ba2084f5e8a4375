#!/usr/bin/env bash
# Deletes the kind cluster KIND_CLUSTER, including the registry and all backups in it. Safe to run repeatedly.
#
# Env: KIND (path to the binary, set by the Makefile), KIND_CLUSTER (default image-clone).
set -euo pipefail

if ! docker info >/dev/null 2>&1; then
  echo "make kind-down needs a running Docker engine (docker info failed)." >&2
  echo "Without Docker there is no kind cluster to delete; 'make local-up' environments are not managed here." >&2
  exit 1
fi

KIND="${KIND:-kind}"
KIND_CLUSTER="${KIND_CLUSTER:-image-clone}"

if "$KIND" get clusters 2>/dev/null | grep -xF "$KIND_CLUSTER" >/dev/null; then
  "$KIND" delete cluster --name "$KIND_CLUSTER"
else
  echo "kind cluster ${KIND_CLUSTER} does not exist"
fi
