#!/usr/bin/env bash
# Runs a small Kubernetes cluster and the controller as ordinary local processes, without Docker, on
# 127.0.0.1 only: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (fake nodes whose pods
# "run" without containers), two distribution registries (the backup registry and an "upstream" seeded with
# small random images named like public ones, which the controller mirrors docker.io and ghcr.io from) and
# bin/image-clone-controller, which talks to the API server as its ServiceAccount (impersonated), so the
# shipped RBAC in config/rbac and config/components/webhook is what gets exercised. The API server calls the
# controller's admission webhook at https://localhost:LOCAL_WEBHOOK_PORT (the webhook configuration of
# config/components/webhook with that URL); the controller issues its certificate and injects the CA.
# kwokctl's binary runtime creates and starts the cluster (etcd, kube-* and kwok, with its certificates) from
# the binaries of hack/test-binaries.sh, so nothing is downloaded; this script starts the registries and the
# controller itself.
#
# State (pid files, logs, certificates, kubeconfigs, etcd and registry data) lives in LOCAL_DIR. Running it
# again while the cluster runs is harmless: it starts only what is not running. Stop with hack/local-down.sh.
#
# Usage: hack/local-up.sh                       start whatever is not running
#        hack/local-up.sh --restart-controller  restart only the controller (e.g. after make build)
#
# Tunables (environment variables, with their defaults):
#   LOCAL_DIR=<repo>/.local                state directory
#   LOCAL_NODES=3                          number of kwok nodes
#   LOCAL_APISERVER_PORT=6443              kube-apiserver (HTTPS)
#   LOCAL_ETCD_PORT=2379                   etcd clients
#   LOCAL_ETCD_PEER_PORT=2380              etcd peers
#   LOCAL_KWOK_CONTROLLER_PORT=10247       kwok-controller's health endpoint (kwokctl would pick one itself,
#                                          the same for two clusters started at the same moment)
#   LOCAL_BACKUP_REGISTRY_PORT=5001        backup registry (the controller's --backup-registry)
#   LOCAL_UPSTREAM_REGISTRY_PORT=5002      upstream registry (the controller's --source-mirror target)
#   LOCAL_BACKUP_REGISTRY_DEBUG_PORT=5011  backup registry's debug server: Prometheus metrics of the requests
#                                          it serves (registry_http_requests_total, ...) on /metrics
#   LOCAL_METRICS_PORT=8080                controller metrics
#   LOCAL_PROBE_PORT=8081                  controller /healthz and /readyz
#   LOCAL_WEBHOOK_PORT=9443                controller admission webhook (HTTPS, on 127.0.0.1)
#   LOCAL_WEBHOOK=true                     serve the admission webhook; false runs the controller with
#                                          --webhook=false and without a webhook configuration
#   LOCAL_CONTROLLER_ARGS=                 more controller flags, appended (so they win over those above), e.g.
#                                          "--zap-log-level=debug", or "--verify-interval=5s --deep-verify-every=2"
#                                          to see lost copies restored within seconds (make test-e2e passes
#                                          those, E2E_CONTROLLER_ARGS in the Makefile); they apply when the
#                                          controller starts, so change them with --restart-controller
#   LOCAL_CONTROLLER=true                  false starts only the cluster and the registries: no CRDs, RBAC,
#                                          webhook configuration or controller (make test-chart installs
#                                          those with the Helm chart and runs the controller itself)
#   LOCAL_SEED=true                        push the sample images to the upstream registry
#   LOCAL_TIMEOUT=90                       seconds to wait for each component to become ready
#   LOCAL_STOP_GRACE=10                    seconds between SIGTERM and SIGKILL when stopping
#   CONTROLLER_BIN=<repo>/bin/image-clone-controller
#   CACHE_DIR, GO                          as for hack/test-binaries.sh, which provides (and on first use
#                                          builds) etcd, kube-*, registry, kwok and kwokctl
set -euo pipefail

# shellcheck source=hack/local-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/local-lib.sh"

LOCAL_CONTROLLER_ARGS=${LOCAL_CONTROLLER_ARGS:-}
LOCAL_SEED=${LOCAL_SEED:-true}
LOCAL_WEBHOOK=${LOCAL_WEBHOOK:-true}
LOCAL_CONTROLLER=${LOCAL_CONTROLLER:-true}
LOCAL_TIMEOUT=${LOCAL_TIMEOUT:-90}

controller_namespace=image-clone-system
controller_sa=image-clone-controller
webhook_configuration=image-clone-controller
service_cidr=10.0.0.0/24
pod_cidr=10.244.0.0/16

mode=up
case "${1:-}" in
"") ;;
--restart-controller) mode=restart-controller ;;
-h | --help)
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
	exit 0
	;;
*) die "unknown argument $1 (see --help)" ;;
esac
case $LOCAL_WEBHOOK in
true | false) ;;
*) die "LOCAL_WEBHOOK must be true or false, not '$LOCAL_WEBHOOK'" ;;
esac
case $LOCAL_CONTROLLER in
true | false) ;;
*) die "LOCAL_CONTROLLER must be true or false, not '$LOCAL_CONTROLLER'" ;;
esac

started_at=$SECONDS
# shellcheck disable=SC2154 # rc is assigned in the trap
trap 'rc=$?; [ $rc -eq 0 ] || log "failed; what did start keeps running: fix the cause and run this again, or stop it all with hack/local-down.sh (make local-down)"' EXIT
k() { kubectl --kubeconfig "$LOCAL_DIR/kubeconfig" "$@"; }

for tool in openssl curl kubectl setsid ss realpath; do
	command -v "$tool" >/dev/null || die "$tool is required"
done

# port_in_use PORT succeeds if something listens on PORT (on any address).
port_in_use() { [ -n "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]; }

# ports_free NAME PORTVAR... fails unless the ports that component NAME listens on are free.
ports_free() {
	local name=$1 var
	shift
	for var in "$@"; do
		port_in_use "${!var}" && die "cannot start $name: port ${!var} is in use by another process (set $var)"
	done
	return 0
}

# start NAME PORTVAR... -- COMMAND... starts component NAME in its own session, detached from the terminal,
# logging to logs/NAME.log. The pid file is written by the process itself right before it execs COMMAND,
# so it holds the pid of COMMAND. The ports must be free.
start() {
	local name=$1 ports=()
	shift
	while [ "$1" != "--" ]; do
		ports+=("$1")
		shift
	done
	shift
	ports_free "$name" "${ports[@]}"
	rm -f "$pids_dir/$name.pid"
	echo "---- $(date -u +%FT%TZ) starting: $*" >>"$logs_dir/$name.log"
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pids_dir/$name.pid" "$@" \
		</dev/null >>"$logs_dir/$name.log" 2>&1 &
	local i
	for i in $(seq 50); do
		[ -s "$pids_dir/$name.pid" ] && break
		sleep 0.1
	done
	log "started $name (pid $(cat "$pids_dir/$name.pid" 2>/dev/null || echo '?'), log ${logs_dir#"$root"/}/$name.log)"
}

# wait_for NAME WHAT COMMAND... retries COMMAND until it succeeds; fails early if component NAME exits.
wait_for() {
	local name=$1 what=$2 deadline=$((SECONDS + LOCAL_TIMEOUT))
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ! pid_of "$name" >/dev/null; then
			tail -n 30 "$logs_dir/$name.log" >&2 || true
			die "$name exited while waiting for $what; its log: $logs_dir/$name.log"
		fi
		if [ $SECONDS -ge $deadline ]; then
			tail -n 30 "$logs_dir/$name.log" >&2 || true
			die "timed out after ${LOCAL_TIMEOUT}s waiting for $what; log: $logs_dir/$name.log"
		fi
		sleep 0.3
	done
}

# wait_cluster WHAT COMMAND... is wait_for for the components kwokctl runs. kube-controller-manager gives up
# unless the API server is healthy within 10s of its start, which a busy machine can make it miss while the
# API server bootstraps, so a component that exited is started again (at most 3 times) instead of failing.
wait_cluster() {
	local what=$1 restarts=0 name deadline=$((SECONDS + LOCAL_TIMEOUT))
	shift
	until "$@" >/dev/null 2>&1; do
		for name in "${cluster_components[@]}"; do
			pid_of "$name" >/dev/null && continue
			if [ $restarts -ge 3 ]; then
				tail -n 30 "$logs_dir/$name.log" >&2 || true
				die "$name exited again while waiting for $what; its log: $logs_dir/$name.log"
			fi
			restarts=$((restarts + 1))
			log "$name exited while waiting for $what; starting it again (its log: ${logs_dir#"$root"/}/$name.previous.log)"
			start_cluster
			deadline=$((SECONDS + LOCAL_TIMEOUT))
			break
		done
		[ $SECONDS -lt $deadline ] || die "timed out after ${LOCAL_TIMEOUT}s waiting for $what"
		sleep 0.3
	done
}

running() {
	local pid
	if pid=$(pid_of "$1"); then
		log "$1 is running (pid $pid)"
		return 0
	fi
	return 1
}

# --- kubeconfigs -------------------------------------------------------------------------------------------

# write_kubeconfig FILE CERT [IMPERSONATED-USER GROUP...] writes a kubeconfig for the client certificate
# CERT.crt of kwokctl's PKI, optionally impersonating a user with groups.
write_kubeconfig() {
	local file=$1 cert=$2 impersonate=
	shift 2
	if [ $# -gt 0 ]; then
		impersonate="    as: $1
    as-groups:"
		shift
		local g
		for g in "$@"; do
			impersonate+="
    - $g"
		done
	fi
	cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$LOCAL_APISERVER_PORT
    certificate-authority: $pki_dir/ca.crt
users:
- name: $cert
  user:
    client-certificate: $pki_dir/$cert.crt
    client-key: $pki_dir/$cert.key
${impersonate}
contexts:
- name: local
  context:
    cluster: local
    user: $cert
current-context: local
EOF
	mv "$file.tmp" "$file"
}

# --- components -------------------------------------------------------------------------------------------

# start_registry NAME PORTVAR [DEBUGPORTVAR]: with DEBUGPORTVAR, the registry also serves its debug server with
# Prometheus metrics (/metrics) on that port.
start_registry() {
	local name=$1 var=$2 debug_var=${3:-} dir=$LOCAL_DIR/registry/$1 debug=
	running "registry-$name" && return
	mkdir -p "$dir/data"
	if [ -n "$debug_var" ]; then
		debug="
  debug:
    addr: 127.0.0.1:${!debug_var}
    prometheus:
      enabled: true
      path: /metrics"
	fi
	# Deletes are enabled, as retention needs them. There is deliberately no storage.cache section: a blob
	# descriptor cache would keep answering that blobs exist after their files are gone, so a registry whose
	# storage was wiped (as the e2e suite does) would claim copies it no longer has; without one, every answer
	# comes from the files and a wipe needs no restart.
	cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${!var}
  secret: $(openssl rand -hex 16)${debug}
EOF
	# The registry exports OpenTelemetry data to localhost:4318 unless told not to.
	# shellcheck disable=SC2086 # debug_var is empty or one variable name
	start "registry-$name" "$var" $debug_var -- env OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
		"$registry_bin" serve "$dir/config.yml"
}

# cluster_config prints the kwokctl configuration of the cluster: the binary runtime on 127.0.0.1 with the
# binaries of hack/test-binaries.sh, so kwokctl downloads nothing (it runs kubectl to see the API server
# answer, and would download one if none were on PATH), and the components' flags that differ from
# kwokctl's defaults:
#   - etcd skips fsync: the cluster is thrown away anyway.
#   - The API server advertises 127.0.0.1 (without it, it picks the address of the default route, and fails
#     where there is none), which the endpoint reconciler of the "kubernetes" Service rejects (a loopback
#     address); nothing in this cluster reaches the API server through that Service, so it is turned off.
#   - kube-controller-manager and kube-scheduler serve nothing (--secure-port=0): fewer ports, and nothing
#     here scrapes them; no leader election, which would only delay a restarted one. Each controller of the
#     controller manager uses its own ServiceAccount, as in a real cluster.
#   - kwok serves only its health endpoint, on LOCAL_KWOK_CONTROLLER_PORT. It manages the nodes annotated
#     kwok.x-k8s.io/node=fake: kwokctl's stages make them Ready and the pods scheduled onto them Running (and
#     delete pods once they are terminating), and it renews their Leases, which keeps the node lifecycle
#     controller from tainting them unreachable.
cluster_config() {
	cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeApiserverPort: $LOCAL_APISERVER_PORT
  etcdPort: $LOCAL_ETCD_PORT
  etcdPeerPort: $LOCAL_ETCD_PEER_PORT
  kwokControllerPort: $LOCAL_KWOK_CONTROLLER_PORT
  etcdBinary: $etcd_bin
  kubeApiserverBinary: $apiserver_bin
  kubeControllerManagerBinary: $kcm_bin
  kubeSchedulerBinary: $scheduler_bin
  kwokControllerBinary: $kwok_bin
componentsPatches:
- name: etcd
  extraArgs:
  - {key: unsafe-no-fsync, value: "true"}
  - {key: log-level, value: warn}
- name: kube-apiserver
  extraArgs:
  - {key: advertise-address, value: 127.0.0.1}
  - {key: endpoint-reconciler-type, value: none}
  - {key: service-cluster-ip-range, value: $service_cidr}
  - {key: profiling, value: "false"}
- name: kube-controller-manager
  extraArgs:
  - {key: secure-port, value: "0", override: true}
  - {key: leader-elect, value: "false"}
  - {key: use-service-account-credentials, value: "true"}
  - {key: cluster-signing-cert-file, value: $pki_dir/ca.crt}
  - {key: cluster-signing-key-file, value: $pki_dir/ca.key}
  - {key: service-cluster-ip-range, value: $service_cidr}
  - {key: controllers, value: "*,-node-ipam-controller"}
  - {key: profiling, value: "false"}
- name: kube-scheduler
  extraArgs:
  - {key: secure-port, value: "0", override: true}
  - {key: leader-elect, value: "false"}
  - {key: profiling, value: "false"}
- name: kwok-controller
  extraArgs:
  - {key: server-address, value: "", override: true}
  - {key: manage-all-nodes, value: "false", override: true}
  - {key: manage-nodes-with-annotation-selector, value: kwok.x-k8s.io/node=fake}
  - {key: node-ip, value: 127.0.0.1, override: true}
  - {key: cidr, value: $pod_cidr}
EOF
}

# start_cluster has kwokctl create the cluster, or start the components of it that are not running. kwokctl
# names pid files and logs after the components and keeps them in its cluster directory, whose pids/ and
# logs/ are links to LOCAL_DIR's, so the components are found and stopped like the others. kwokctl takes a
# pid file naming any live process for a running component; pid_of is stricter, and its verdict wins.
start_cluster() {
	local name down=() pid
	for name in "${cluster_components[@]}"; do
		running "$name" || down+=("$name")
	done
	[ ${#down[@]} -gt 0 ] || return 0
	for name in "${down[@]}"; do
		case $name in
		etcd) ports_free etcd LOCAL_ETCD_PORT LOCAL_ETCD_PEER_PORT ;;
		kube-apiserver) ports_free kube-apiserver LOCAL_APISERVER_PORT ;;
		kwok-controller) ports_free kwok-controller LOCAL_KWOK_CONTROLLER_PORT ;;
		esac
		rm -f "$pids_dir/$name.pid"
		# kwokctl truncates the log of a component it starts: keep the one of the previous run.
		if [ -s "$logs_dir/$name.log" ]; then
			mv "$logs_dir/$name.log" "$logs_dir/$name.previous.log"
		fi
	done
	mkdir -p "$cluster_dir"
	ln -sfn "$pids_dir" "$cluster_dir/pids"
	ln -sfn "$logs_dir" "$cluster_dir/logs"
	cluster_config >"$kwok_workdir/kwok.yaml.new"
	# kwokctl starts an existing cluster as it was created, whatever the configuration says now.
	if [ -f "$cluster_dir/kwok.yaml" ] && ! cmp -s "$kwok_workdir/kwok.yaml.new" "$kwok_workdir/kwok.yaml"; then
		rm -f "$kwok_workdir/kwok.yaml.new"
		die "the settings (ports, binaries) differ from those the cluster in $LOCAL_DIR was created with: stop it with 'make local-down' first"
	fi
	mv "$kwok_workdir/kwok.yaml.new" "$kwok_workdir/kwok.yaml"
	echo "---- $(date -u +%FT%TZ) starting: ${down[*]}" >>"$logs_dir/kwokctl.log"
	# KWOK_WORKDIR keeps the user's ~/.kwok out of this cluster, and without the user's KWOK_* variables
	# (which override the configuration) it is the same cluster for everyone.
	# shellcheck disable=SC2046 # one -u option per variable
	env $(compgen -e | sed -n 's/^KWOK_.*/-u &/p') KWOK_WORKDIR="$kwok_workdir" \
		"$kwokctl_bin" --config="$kwok_workdir/kwok.yaml" --name="$cluster_name" \
		create cluster --kubeconfig= --timeout="${LOCAL_TIMEOUT}s" </dev/null >>"$logs_dir/kwokctl.log" 2>&1 || {
		tail -n 30 "$logs_dir/kwokctl.log" >&2
		die "kwokctl could not create or start the cluster; its log: $logs_dir/kwokctl.log"
	}
	for name in "${down[@]}"; do
		pid=$(pid_of "$name") || pid='?'
		log "started $name (pid $pid, log ${logs_dir#"$root"/}/$name.log)"
	done
}

start_controller() {
	local pid
	if pid=$(pid_of controller); then
		log "controller is running (pid $pid)"
		if [[ $(readlink "/proc/$pid/exe") == *" (deleted)" ]]; then
			log "note: ${CONTROLLER_BIN#"$root"/} changed since the controller started; 'make local-restart-controller' runs the new build"
		fi
		if ! tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "--webhook=$LOCAL_WEBHOOK"; then
			log "note: the controller was not started with LOCAL_WEBHOOK=$LOCAL_WEBHOOK; 'make local-restart-controller LOCAL_WEBHOOK=$LOCAL_WEBHOOK' restarts it so"
		fi
		local arg
		# shellcheck disable=SC2086 # LOCAL_CONTROLLER_ARGS is a list of flags
		for arg in $LOCAL_CONTROLLER_ARGS; do
			if ! tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$arg"; then
				log "note: the controller was not started with $arg (LOCAL_CONTROLLER_ARGS); 'make local-restart-controller' restarts it with LOCAL_CONTROLLER_ARGS"
				break
			fi
		done
		return
	fi
	[ -x "$CONTROLLER_BIN" ] || die "$CONTROLLER_BIN does not exist: run 'make build' (or 'make local-up')"
	local ports=(LOCAL_METRICS_PORT LOCAL_PROBE_PORT) webhook=(--webhook=false)
	if [ "$LOCAL_WEBHOOK" = true ]; then
		# The API server runs on this host and calls https://localhost:LOCAL_WEBHOOK_PORT, so the certificate
		# names localhost; the rotator writes it into the directory.
		mkdir -p "$LOCAL_DIR/webhook-certs"
		ports+=(LOCAL_WEBHOOK_PORT)
		webhook=(--webhook=true --webhook-host=127.0.0.1 --webhook-port="$LOCAL_WEBHOOK_PORT"
			--webhook-cert-dir="$LOCAL_DIR/webhook-certs" --webhook-cert-names=localhost)
	fi
	# shellcheck disable=SC2086 # LOCAL_CONTROLLER_ARGS is a list of flags
	start controller "${ports[@]}" -- env -u KUBECONFIG POD_NAMESPACE="$controller_namespace" \
		"$CONTROLLER_BIN" \
		--kubeconfig="$LOCAL_DIR/controller.kubeconfig" \
		--backup-registry="127.0.0.1:$LOCAL_BACKUP_REGISTRY_PORT" \
		--source-mirror="index.docker.io=127.0.0.1:$LOCAL_UPSTREAM_REGISTRY_PORT" \
		--source-mirror="ghcr.io=127.0.0.1:$LOCAL_UPSTREAM_REGISTRY_PORT/ghcr" \
		--metrics-bind-address="127.0.0.1:$LOCAL_METRICS_PORT" \
		--health-probe-bind-address="127.0.0.1:$LOCAL_PROBE_PORT" \
		"${webhook[@]}" \
		$LOCAL_CONTROLLER_ARGS
}

wait_controller() {
	wait_for controller "the controller's /readyz (http://127.0.0.1:$LOCAL_PROBE_PORT/readyz)" \
		curl -fsS "http://127.0.0.1:$LOCAL_PROBE_PORT/readyz"
	log "controller is ready"
	if [ "$LOCAL_WEBHOOK" = true ]; then
		wait_for controller "the CA bundle in MutatingWebhookConfiguration $webhook_configuration" webhook_ca_injected
		log "webhook configuration has the controller's CA bundle"
	fi
}

webhook_ca_injected() {
	[ -n "$(k get mutatingwebhookconfiguration "$webhook_configuration" -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]
}

apiserver_ready() {
	curl -fsS --cacert "$pki_dir/ca.crt" --cert "$pki_dir/admin.crt" --key "$pki_dir/admin.key" \
		"https://127.0.0.1:$LOCAL_APISERVER_PORT/readyz"
}

# nodes_manifest prints LOCAL_NODES kwok nodes: the annotation hands them to kwok; no taint, so ordinary
# pods schedule onto them.
nodes_manifest() {
	local i
	for ((i = 0; i < LOCAL_NODES; i++)); do
		cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
EOF
	done
}

# apply_crds installs the controller's CRDs (config/crd) and waits until the API server serves them, since the
# controller's caches start with them.
apply_crds() {
	local out
	out=$(kubectl kustomize "$root/config/crd") || die "rendering config/crd failed"
	k apply --server-side --field-manager=local-up -f - <<<"$out" >/dev/null
	k wait --for condition=established --timeout="${LOCAL_TIMEOUT}s" crd/imagebackups.image-clone-controller.io >/dev/null
	log "applied config/crd"
}

apply_rbac() {
	[ -f "$root/config/rbac/role.yaml" ] || die "config/rbac/role.yaml is missing: run 'make generate'"
	k create namespace "$controller_namespace" --dry-run=client -o yaml | k apply -f - >/dev/null
	local out
	out=$(kubectl kustomize "$root/config/rbac") || die "rendering config/rbac failed"
	k apply -n "$controller_namespace" -f - <<<"$out" >/dev/null
	log "applied config/rbac (namespace $controller_namespace)"
}

# webhook_manifest prints the objects of config/components/webhook the local controller needs: its Secret and
# RBAC, and the webhook configuration with the controller's local URL in place of the Service (which has no
# pods to send to here and is left out). It is rendered from the component, so the rules and the selector
# are the shipped ones. kustomize takes only relative paths.
webhook_manifest() {
	local dir=$LOCAL_DIR/webhook component
	mkdir -p "$dir"
	component=$(realpath --relative-to="$dir" "$root/config/components/webhook")
	cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
components:
- $component
patches:
# The component has one webhook.
- target:
    kind: MutatingWebhookConfiguration
    name: $webhook_configuration
  patch: |-
    - op: replace
      path: /webhooks/0/clientConfig
      value:
        url: https://localhost:$LOCAL_WEBHOOK_PORT/mutate-workloads
- patch: |-
    \$patch: delete
    apiVersion: v1
    kind: Service
    metadata:
      name: image-clone-controller-webhook
      namespace: $controller_namespace
EOF
	kubectl kustomize "$dir"
}

# apply_webhook applies the webhook's objects, or with LOCAL_WEBHOOK=false deletes the configuration an
# earlier run may have left (the API server would keep calling a webhook nobody serves). An applied
# configuration keeps the CA bundle the controller injected: apply leaves fields it never set alone.
apply_webhook() {
	if [ "$LOCAL_WEBHOOK" = false ]; then
		if k get mutatingwebhookconfiguration "$webhook_configuration" >/dev/null 2>&1; then
			k delete mutatingwebhookconfiguration "$webhook_configuration" >/dev/null
			log "deleted MutatingWebhookConfiguration $webhook_configuration (LOCAL_WEBHOOK=false)"
		fi
		return
	fi
	local out
	out=$(webhook_manifest) || die "rendering config/components/webhook failed"
	k apply -f - <<<"$out" >/dev/null
	log "applied config/components/webhook (webhook at https://localhost:$LOCAL_WEBHOOK_PORT/mutate-workloads)"
}

summary() {
	local rel=${LOCAL_DIR#"$root"/} webhook_summary="admission webhook off (LOCAL_WEBHOOK=false)"
	if [ "$LOCAL_WEBHOOK" = true ]; then
		webhook_summary="admission webhook https://localhost:$LOCAL_WEBHOOK_PORT/mutate-workloads (certificate in ${rel}/webhook-certs)"
	fi
	if [ "$LOCAL_CONTROLLER" = false ]; then
		cat <<EOF

Local cluster is up ($((SECONDS - started_at))s) without the controller (LOCAL_CONTROLLER=false): $LOCAL_NODES kwok nodes,
API server https://127.0.0.1:$LOCAL_APISERVER_PORT, kubeconfig $LOCAL_DIR/kubeconfig,
backup registry 127.0.0.1:$LOCAL_BACKUP_REGISTRY_PORT, upstream registry 127.0.0.1:$LOCAL_UPSTREAM_REGISTRY_PORT. Stop everything: make local-down.
EOF
		return
	fi
	cat <<EOF

Local cluster is up ($((SECONDS - started_at))s): $LOCAL_NODES kwok nodes, API server https://127.0.0.1:$LOCAL_APISERVER_PORT

  export KUBECONFIG=$LOCAL_DIR/kubeconfig

  backup registry     127.0.0.1:$LOCAL_BACKUP_REGISTRY_PORT   (--backup-registry; request metrics: http://127.0.0.1:$LOCAL_BACKUP_REGISTRY_DEBUG_PORT/metrics)
  upstream registry   127.0.0.1:$LOCAL_UPSTREAM_REGISTRY_PORT   (mirrors index.docker.io, and ghcr.io under /ghcr)
  controller          metrics http://127.0.0.1:$LOCAL_METRICS_PORT/metrics, probes http://127.0.0.1:$LOCAL_PROBE_PORT/readyz
                      as system:serviceaccount:$controller_namespace:$controller_sa (impersonated)
                      $webhook_summary
  logs                $rel/logs/controller.log (make local-logs), $rel/logs/<component>.log
                      for etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
                      kwok-controller, kwokctl, registry-backup, registry-upstream, seed

Try:
  kubectl create deployment nginx --image nginx
  kubectl create deployment grafana --image grafana/grafana:main
  kubectl create deployment speedtest-exporter --image ghcr.io/timebertt/speedtest-exporter:v0.1.0
  kubectl apply -f hack/local/fluentd-daemonset.yaml
  kubectl get pods -o custom-columns=NAME:.metadata.name,IMAGE:.spec.containers[0].image,STATUS:.status.phase
  curl -s http://127.0.0.1:$LOCAL_BACKUP_REGISTRY_PORT/v2/_catalog

Rebuild and restart the controller: make local-restart-controller. Stop everything: make local-down.
EOF
}

# --- main -------------------------------------------------------------------------------------------------

mkdir -p "$LOCAL_DIR" "$pids_dir" "$logs_dir"
touch "$marker"

if [ "$mode" = restart-controller ]; then
	pid_of kube-apiserver >/dev/null || die "the local cluster is not running: run 'make local-up'"
	stop controller
	apply_crds
	apply_webhook
	start_controller
	wait_controller
	log "restarted the controller in $((SECONDS - started_at))s; log: ${logs_dir#"$root"/}/controller.log"
	exit 0
fi

log "resolving binaries in ${CACHE_DIR:-the cache} (missing ones are built now, which takes minutes the first time)"
bins=$root/hack/test-binaries.sh
etcd_bin=$("$bins" etcd)
apiserver_bin=$("$bins" kube-apiserver)
kcm_bin=$("$bins" kube-controller-manager)
scheduler_bin=$("$bins" kube-scheduler)
registry_bin=$("$bins" registry)
kwok_bin=$("$bins" kwok)
kwokctl_bin=$("$bins" kwokctl)

start_registry backup LOCAL_BACKUP_REGISTRY_PORT LOCAL_BACKUP_REGISTRY_DEBUG_PORT
start_registry upstream LOCAL_UPSTREAM_REGISTRY_PORT

# Seed the upstream registry while the cluster starts.
seed_pid=
if [ "$LOCAL_SEED" = true ]; then
	wait_for registry-upstream "the upstream registry" curl -fsS "http://127.0.0.1:$LOCAL_UPSTREAM_REGISTRY_PORT/v2/"
	(cd "$root" && "$go" run ./hack/seed --registry "127.0.0.1:$LOCAL_UPSTREAM_REGISTRY_PORT") \
		>"$logs_dir/seed.log" 2>&1 &
	seed_pid=$!
fi

start_cluster
# kwokctl writes the certificates when it creates the cluster; every client uses its admin certificate
# (group system:masters), which may impersonate the controller's ServiceAccount.
write_kubeconfig "$LOCAL_DIR/kubeconfig" admin
write_kubeconfig "$LOCAL_DIR/controller.kubeconfig" admin \
	"system:serviceaccount:$controller_namespace:$controller_sa" \
	system:serviceaccounts "system:serviceaccounts:$controller_namespace"
wait_for registry-backup "the backup registry" curl -fsS "http://127.0.0.1:$LOCAL_BACKUP_REGISTRY_PORT/v2/"

wait_for kube-apiserver "the API server's /readyz" apiserver_ready
log "kube-apiserver is ready"
if [ "$LOCAL_NODES" -gt 0 ]; then
	nodes_manifest | k apply -f - >/dev/null
	log "applied $LOCAL_NODES kwok nodes"
fi
if [ "$LOCAL_CONTROLLER" = true ]; then
	apply_crds
	apply_rbac
	apply_webhook
fi

if [ -n "$seed_pid" ]; then
	wait "$seed_pid" || {
		tail -n 20 "$logs_dir/seed.log" >&2
		die "seeding the upstream registry failed; log: $logs_dir/seed.log"
	}
	log "upstream registry seeded ($(grep -c ': pushed' "$logs_dir/seed.log" || true) pushed, $(grep -c ': exists' "$logs_dir/seed.log" || true) already there)"
fi

if [ "$LOCAL_CONTROLLER" = true ]; then
	start_controller
	wait_controller
else
	log "no controller, CRDs, RBAC or webhook configuration (LOCAL_CONTROLLER=false)"
fi

# Ready nodes and the default ServiceAccount (which pods need) mean workloads can run right away.
if [ "$LOCAL_NODES" -gt 0 ]; then
	wait_cluster "$LOCAL_NODES Ready nodes" k wait --for=condition=Ready node --all --timeout=5s
fi
wait_cluster "the default ServiceAccount" k get serviceaccount default -n default
log "nodes are Ready"

summary
