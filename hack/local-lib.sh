# Shared by hack/local-up.sh and hack/local-down.sh (sourced, not run): the settings of the local cluster
# and the bookkeeping of its processes. The tunables are documented at the top of hack/local-up.sh.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
go=${GO:-go}

LOCAL_DIR=${LOCAL_DIR:-$root/.local}
# kwokctl runs each component in its cluster directory, so relative paths would point elsewhere.
[[ $LOCAL_DIR == /* ]] || LOCAL_DIR=$PWD/$LOCAL_DIR
LOCAL_APISERVER_PORT=${LOCAL_APISERVER_PORT:-6443}
LOCAL_ETCD_PORT=${LOCAL_ETCD_PORT:-2379}
LOCAL_ETCD_PEER_PORT=${LOCAL_ETCD_PEER_PORT:-2380}
LOCAL_BACKUP_REGISTRY_PORT=${LOCAL_BACKUP_REGISTRY_PORT:-5001}
LOCAL_UPSTREAM_REGISTRY_PORT=${LOCAL_UPSTREAM_REGISTRY_PORT:-5002}
LOCAL_BACKUP_REGISTRY_DEBUG_PORT=${LOCAL_BACKUP_REGISTRY_DEBUG_PORT:-5011}
LOCAL_METRICS_PORT=${LOCAL_METRICS_PORT:-8080}
LOCAL_PROBE_PORT=${LOCAL_PROBE_PORT:-8081}
LOCAL_WEBHOOK_PORT=${LOCAL_WEBHOOK_PORT:-9443}
LOCAL_KWOK_CONTROLLER_PORT=${LOCAL_KWOK_CONTROLLER_PORT:-10247}
LOCAL_NODES=${LOCAL_NODES:-3}
LOCAL_STOP_GRACE=${LOCAL_STOP_GRACE:-10}
CONTROLLER_BIN=${CONTROLLER_BIN:-$root/bin/image-clone-controller}

pids_dir=$LOCAL_DIR/pids
logs_dir=$LOCAL_DIR/logs
# Marks a directory as the state of this script, so that local-down deletes nothing else.
marker=$LOCAL_DIR/.local-cluster
# kwokctl's work directory (KWOK_WORKDIR) and its cluster, with the certificates kwokctl generates.
kwok_workdir=$LOCAL_DIR/kwokctl
cluster_name=local
cluster_dir=$kwok_workdir/clusters/$cluster_name
pki_dir=$cluster_dir/pki

# Components in start order: pid file name and the name of the binary the process must run.
components=(
	registry-backup:registry
	registry-upstream:registry
	etcd:etcd
	kube-apiserver:kube-apiserver
	kube-controller-manager:kube-controller-manager
	kube-scheduler:kube-scheduler
	kwok-controller:kwok
	controller:image-clone-controller
)
# The components kwokctl runs (the names it gives their pid files and logs).
# shellcheck disable=SC2034 # used by local-up.sh
cluster_components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok-controller)

log() { echo "local: $*" >&2; }
die() {
	echo "local: error: $*" >&2
	exit 1
}

# exe_of NAME prints the binary name that component NAME runs.
exe_of() {
	local c
	for c in "${components[@]}"; do
		if [ "${c%%:*}" = "$1" ]; then
			echo "${c#*:}"
			return
		fi
	done
	die "unknown component $1"
}

# pid_of NAME prints the pid of component NAME and succeeds if it runs: its pid file names a live process
# that runs the expected binary with this state directory on its command line (so a recycled pid, or the
# same binary started by someone else, is never taken for it).
pid_of() {
	local name=$1 pidfile=$pids_dir/$1.pid pid exe
	[ -s "$pidfile" ] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	exe=${exe% (deleted)}
	[ "${exe##*/}" = "$(exe_of "$name")" ] || return 1
	tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$LOCAL_DIR/" || return 1
	echo "$pid"
}

# stop NAME... sends SIGTERM to the named components that run, waits up to LOCAL_STOP_GRACE seconds for
# them to exit, sends SIGKILL to the rest and removes their pid files.
stop() {
	local name pid
	local -A pids=()
	for name in "$@"; do
		if pid=$(pid_of "$name"); then
			kill -TERM "$pid" 2>/dev/null || true
			pids[$name]=$pid
		fi
	done
	local all=("${pids[@]}")
	local deadline=$((SECONDS + LOCAL_STOP_GRACE))
	while [ ${#pids[@]} -gt 0 ]; do
		for name in "${!pids[@]}"; do
			if ! pid_of "$name" >/dev/null; then
				log "stopped $name (pid ${pids[$name]})"
				unset "pids[$name]"
			fi
		done
		[ ${#pids[@]} -gt 0 ] || break
		if [ $SECONDS -ge $deadline ]; then
			for name in "${!pids[@]}"; do
				log "$name (pid ${pids[$name]}) did not exit within ${LOCAL_STOP_GRACE}s: killing it"
				kill -KILL "${pids[$name]}" 2>/dev/null || true
			done
			deadline=$((SECONDS + 5))
			sleep 0.5
			for name in "${!pids[@]}"; do
				pid_of "$name" >/dev/null && log "warning: $name (pid ${pids[$name]}) survived SIGKILL"
				unset "pids[$name]"
			done
			break
		fi
		sleep 0.2
	done
	for name in "$@"; do
		rm -f "$pids_dir/$name.pid"
	done
	# The processes were detached from local-up, so pid 1 reaps them; give it a moment, so that they are gone
	# from the process table (not just zombies) when this returns.
	deadline=$((SECONDS + 10))
	for pid in "${all[@]}"; do
		while [ -e "/proc/$pid" ] && [ $SECONDS -lt $deadline ]; do
			sleep 0.2
		done
	done
}

# strays lists processes that still run one of the components' binaries with this state directory on their
# command line (started by an earlier run whose pid files are gone); they are reported, never killed.
strays() {
	local dir pid exe c known
	for dir in /proc/[0-9]*; do
		pid=${dir#/proc/}
		exe=$(readlink "$dir/exe" 2>/dev/null) || continue
		exe=${exe% (deleted)}
		known=
		for c in "${components[@]}"; do
			[ "${exe##*/}" = "${c#*:}" ] && known=1
		done
		[ -n "$known" ] || continue
		tr '\0' '\n' <"$dir/cmdline" 2>/dev/null | grep -qF -- "$LOCAL_DIR/" || continue
		echo "$pid $(tr '\0' ' ' <"$dir/cmdline")"
	done
}
