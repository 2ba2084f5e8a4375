#!/usr/bin/env bash
# Deletes what hack/deploy.sh applied (config/default) from the kind cluster KIND_CLUSTER, including the
# namespace image-clone-system and everything in it. Backups in the registry stay. Safe to run repeatedly.
#
# Env: KIND, KUSTOMIZE (paths to the binaries, set by the Makefile), KIND_CLUSTER (default image-clone),
# KUBECTL (default kubectl).
set -euo pipefail

# shellcheck source=hack/kind-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/kind-lib.sh" undeploy

if ! "$KIND" get clusters 2>/dev/null | grep -xF "$KIND_CLUSTER" >/dev/null; then
  echo "kind cluster ${KIND_CLUSTER} does not exist: nothing to undeploy."
  exit 0
fi
if [[ ! -f config/rbac/role.yaml ]]; then
  echo "config/rbac/role.yaml is missing: run 'make generate' first." >&2
  exit 1
fi

# Names do not depend on IMG or BACKUP_REGISTRY, so config/default as is selects everything deploy applied.
"$KUSTOMIZE" build config/default | "$KUBECTL" --context "kind-${KIND_CLUSTER}" delete --ignore-not-found --wait -f -
