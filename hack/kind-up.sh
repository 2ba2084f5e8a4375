#!/usr/bin/env bash
# Creates the kind cluster KIND_CLUSTER (unless it exists) and the in-cluster backup registry
# (config/registry) that the nodes can pull from over plain HTTP. Safe to run repeatedly.
#
# Env: KIND, KUSTOMIZE (paths to the binaries, set by the Makefile), KIND_CLUSTER (default image-clone),
# KUBECTL (default kubectl).
set -euo pipefail

# shellcheck source=hack/kind-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/kind-lib.sh" kind-up

# Fixed ClusterIP and port of Service registry/registry (config/registry/registry.yaml).
REGISTRY_ADDRESS=10.96.0.11:5001
CONTEXT="kind-${KIND_CLUSTER}"

if "$KIND" get clusters 2>/dev/null | grep -xF "$KIND_CLUSTER" >/dev/null; then
  echo "kind cluster ${KIND_CLUSTER} already exists"
  # Make sure the kubeconfig has the cluster's context, e.g. after the kubeconfig was reset.
  "$KIND" export kubeconfig --name "$KIND_CLUSTER"
else
  "$KIND" create cluster --name "$KIND_CLUSTER" --config hack/kind-config.yaml --wait 3m
fi

# Let containerd on every node pull from the registry over plain HTTP. containerd reads hosts.toml on
# every pull, so no restart is needed.
hosts_dir="/etc/containerd/certs.d/${REGISTRY_ADDRESS}"
mapfile -t nodes < <("$KIND" get nodes --name "$KIND_CLUSTER")
if [[ ${#nodes[@]} -eq 0 ]]; then
  echo "kind cluster ${KIND_CLUSTER} has no nodes." >&2
  exit 1
fi
for node in "${nodes[@]}"; do
  docker exec "$node" mkdir -p "$hosts_dir"
  docker exec -i "$node" cp /dev/stdin "${hosts_dir}/hosts.toml" <<TOML
server = "http://${REGISTRY_ADDRESS}"

[host."http://${REGISTRY_ADDRESS}"]
  capabilities = ["pull", "resolve"]
TOML
done

"$KUSTOMIZE" build config/registry | "$KUBECTL" --context "$CONTEXT" apply -f -
"$KUBECTL" --context "$CONTEXT" -n registry rollout status deployment/registry --timeout=3m

# Check the path containerd takes: from a node through the ClusterIP.
node="${nodes[0]}"
for _ in $(seq 30); do
  if docker exec "$node" curl -fs -o /dev/null "http://${REGISTRY_ADDRESS}/v2/"; then
    echo "Registry is ready: ${REGISTRY_ADDRESS} in the cluster, localhost:5001 from this host."
    exit 0
  fi
  sleep 1
done
echo "The registry does not answer at http://${REGISTRY_ADDRESS}/v2/ from node ${node}." >&2
exit 1
