#!/usr/bin/env bash
# Builds the controller image IMG, loads it into the kind cluster KIND_CLUSTER and deploys config/default
# with that image and --backup-registry=BACKUP_REGISTRY. The manifests are rendered from a temporary copy
# of config/, so the work tree stays untouched. Safe to run repeatedly; the controller is only rolled when
# the image or the manifests changed. Done when the rollout is and the webhook configuration has the CA of
# the controller's certificate.
#
# Env: KIND, KUSTOMIZE (paths to the binaries, set by the Makefile), KIND_CLUSTER (default image-clone),
# IMG (default image-clone-controller:dev), BACKUP_REGISTRY (default 10.96.0.11:5001, the kind registry),
# KUBECTL (default kubectl).
set -euo pipefail

# shellcheck source=hack/kind-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/kind-lib.sh" deploy

# The flag value in config/manager/manager.yaml.
DEFAULT_BACKUP_REGISTRY=10.96.0.11:5001
CONTEXT="kind-${KIND_CLUSTER}"
NAMESPACE=image-clone-system

if ! "$KIND" get clusters 2>/dev/null | grep -xF "$KIND_CLUSTER" >/dev/null; then
  echo "kind cluster ${KIND_CLUSTER} does not exist: run 'make kind-up' first." >&2
  exit 1
fi
if [[ ! -f config/rbac/role.yaml ]]; then
  echo "config/rbac/role.yaml is missing: run 'make generate' first." >&2
  exit 1
fi
if [[ ! "$BACKUP_REGISTRY" =~ ^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]+)?$ ]]; then
  echo "BACKUP_REGISTRY=${BACKUP_REGISTRY} is not of the form HOST[:PORT][/PATH]." >&2
  exit 1
fi

docker build -t "$IMG" .
"$KIND" load docker-image "$IMG" --name "$KIND_CLUSTER"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -R config "$tmp/"

# Image and backup registry.
(cd "$tmp/config/default" && "$KUSTOMIZE" edit set image "controller=${IMG}")
if [[ "$BACKUP_REGISTRY" != "$DEFAULT_BACKUP_REGISTRY" ]]; then
  manager="$tmp/config/manager/manager.yaml"
  old="- --backup-registry=${DEFAULT_BACKUP_REGISTRY}"
  content="$(<"$manager")"
  if [[ "$content" != *"$old"* ]]; then
    echo "config/manager/manager.yaml has no '${old}' argument to replace." >&2
    exit 1
  fi
  printf '%s\n' "${content//"$old"/"- --backup-registry=${BACKUP_REGISTRY}"}" >"$manager"
fi

# A rebuilt image usually keeps its tag; recording the image ID in the pod template rolls the Deployment
# exactly when the image content changed.
image_id="$(docker image inspect --format '{{.Id}}' "$IMG")"
(cd "$tmp/config/default" && "$KUSTOMIZE" edit add patch --kind Deployment --name image-clone-controller \
  --patch "[{\"op\": \"add\", \"path\": \"/spec/template/metadata/annotations\", \"value\": {\"image-clone-controller/image-id\": \"${image_id}\"}}]")

"$KUSTOMIZE" build "$tmp/config/default" >"$tmp/manifests.yaml"
"$KUBECTL" --context "$CONTEXT" apply -f "$tmp/manifests.yaml"
"$KUBECTL" --context "$CONTEXT" -n "$NAMESPACE" rollout status deployment/image-clone-controller --timeout=3m
# The webhook fails open: until its configuration has the CA of the controller's certificate, the API server
# admits workloads unchanged, without a word. Skipped where config/default no longer includes the webhook.
if grep -qx 'kind: MutatingWebhookConfiguration' "$tmp/manifests.yaml"; then
  for _ in $(seq 60); do
    ca="$("$KUBECTL" --context "$CONTEXT" get mutatingwebhookconfiguration image-clone-controller \
      -o jsonpath='{.webhooks[0].clientConfig.caBundle}' 2>/dev/null || true)"
    [[ -n "$ca" ]] && break
    sleep 1
  done
  if [[ -z "$ca" ]]; then
    echo "MutatingWebhookConfiguration image-clone-controller has no CA bundle after 60s; see the controller's log:" >&2
    echo "  $KUBECTL --context $CONTEXT -n $NAMESPACE logs deployment/image-clone-controller" >&2
    exit 1
  fi
fi
echo "Deployed ${IMG} (backup registry ${BACKUP_REGISTRY}) to kind cluster ${KIND_CLUSTER}."
