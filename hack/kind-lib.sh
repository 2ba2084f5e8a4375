# Shared by the kind scripts (kind-up, kind-down, deploy, undeploy): checks for a Docker engine, moves to the
# repository root and sets the tool and cluster defaults. Source it with the make target's name:
#   source "$(dirname "${BASH_SOURCE[0]}")/kind-lib.sh" deploy
# shellcheck shell=bash

if ! docker info >/dev/null 2>&1; then
  echo "make $1 needs a running Docker engine (docker info failed)." >&2
  echo "Without Docker, use 'make local-up' to run the controller against a local API server and registry instead." >&2
  exit 1
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KIND="${KIND:-kind}"
KUSTOMIZE="${KUSTOMIZE:-kustomize}"
KUBECTL="${KUBECTL:-kubectl}"
KIND_CLUSTER="${KIND_CLUSTER:-image-clone}"
IMG="${IMG:-image-clone-controller:dev}"
BACKUP_REGISTRY="${BACKUP_REGISTRY:-10.96.0.11:5001}"
