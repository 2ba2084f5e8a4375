#!/usr/bin/env bash
# Stops the processes hack/local-up.sh started (by their pid files, after checking that each pid still runs
# the expected binary with this state directory; SIGTERM, then SIGKILL after LOCAL_STOP_GRACE seconds) and
# deletes the state directory LOCAL_DIR (default <repo>/.local). That includes the cluster kwokctl runs: its
# pid files are in LOCAL_DIR too, and all its state below it, so `kwokctl delete cluster` (which kills the
# components without a grace period) is not needed.
set -euo pipefail

# shellcheck source=hack/local-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/local-lib.sh"

if [ ! -d "$LOCAL_DIR" ]; then
	log "nothing to do: $LOCAL_DIR does not exist"
	exit 0
fi
if [ ! -e "$marker" ]; then
	die "$LOCAL_DIR was not created by hack/local-up.sh (no ${marker##*/}); not touching it"
fi

# Clients first, etcd last, so that nothing logs errors about what is already gone.
stop controller kwok-controller kube-scheduler kube-controller-manager registry-backup registry-upstream
stop kube-apiserver
stop etcd

left=$(strays)
if [ -n "$left" ]; then
	echo "$left" >&2
	die "the processes above still use $LOCAL_DIR but have no pid file (started by hand?); stop them and run this again"
fi

rm -rf "$LOCAL_DIR"
log "removed $LOCAL_DIR"
