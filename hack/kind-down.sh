#!/usr/bin/env bash
# Deletes the kind cluster KIND_CLUSTER, including the registry and all backups in it. Safe to run repeatedly.
#
# Env: KIND (path to the binary, set by the Makefile), KIND_CLUSTER (default image-clone).
set -euo pipefail

# shellcheck source=hack/kind-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/kind-lib.sh" kind-down

if "$KIND" get clusters 2>/dev/null | grep -xF "$KIND_CLUSTER" >/dev/null; then
  "$KIND" delete cluster --name "$KIND_CLUSTER"
else
  echo "kind cluster ${KIND_CLUSTER} does not exist"
fi
