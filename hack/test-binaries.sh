#!/usr/bin/env bash
# Installs the binaries that tests and the local cluster run, cached by version outside the clone so that a
# fresh clone (and CI) reuses them:
#   kube-apiserver, kube-controller-manager, kube-scheduler  built from k8s.io/kubernetes (hack/tools/kube)
#   etcd                                                     built from go.etcd.io/etcd (hack/tools/etcd)
#   registry                                                 the distribution registry (go install)
#   kwok                                                     fake nodes and pods for the local cluster (go install)
#   kwokctl                                                  runs the local cluster's etcd, kube-* and kwok from the
#                                                            binaries above (go install, the same release as kwok)
# For envtest it first tries setup-envtest's official binaries (users with internet access get those), and
# falls back to building from source, which takes ~10 minutes on 2 cores the first time.
#
# Usage: hack/test-binaries.sh all | envtest-dir | registry | kwok | kwokctl | kube-apiserver |
#        kube-controller-manager | kube-scheduler | etcd
# Every command but `all` prints one path on stdout; progress goes to stderr.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/image-clone-controller}
go=${GO:-go}

kube_version=v1.37.2
etcd_version=v3.6.16
registry_version=v3.1.2
setup_envtest_version=v0.25.1
kwok_version=v0.8.0
envtest_timeout=${ENVTEST_DOWNLOAD_TIMEOUT:-30}

log() { echo "test-binaries: $*" >&2; }

mkdir -p "$cache"
# Serialize concurrent callers (parallel make, several shells) so a binary is built once.
exec 9>"$cache/.lock"
flock 9

# build_kube NAME prints the path of a Kubernetes component built from hack/tools/kube.
build_kube() {
	local name=$1 dir="$cache/kubernetes-$kube_version"
	if [ ! -x "$dir/$name" ]; then
		log "building $name $kube_version from source (first time only; minutes on a small machine)..."
		mkdir -p "$dir"
		local pkg=k8s.io/component-base/version
		local minor=${kube_version#v1.}; minor=${minor%%.*}
		(cd "$root/hack/tools/kube" && "$go" build -trimpath \
			-ldflags "-s -w -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
			-o "$dir/$name.tmp" "k8s.io/kubernetes/cmd/$name")
		mv "$dir/$name.tmp" "$dir/$name"
		log "built $dir/$name"
	fi
	echo "$dir/$name"
}

build_etcd() {
	local dir="$cache/etcd-$etcd_version"
	if [ ! -x "$dir/etcd" ]; then
		log "building etcd $etcd_version from source (first time only, about a minute)..."
		mkdir -p "$dir"
		(cd "$root/hack/tools/etcd" && "$go" build -trimpath -ldflags "-s -w" -o "$dir/etcd.tmp" .)
		mv "$dir/etcd.tmp" "$dir/etcd"
		log "built $dir/etcd"
	fi
	echo "$dir/etcd"
}

install_registry() {
	local dir="$cache/registry-$registry_version"
	if [ ! -x "$dir/registry" ]; then
		log "installing the distribution registry $registry_version (go install)..."
		mkdir -p "$dir"
		GOBIN="$dir" GOFLAGS=-buildvcs=false "$go" install "github.com/distribution/distribution/v3/cmd/registry@$registry_version"
	fi
	echo "$dir/registry"
}

# install_kwok NAME prints the path of kwok or kwokctl (NAME), of the same kwok release.
install_kwok() {
	local name=$1 dir="$cache/kwok-$kwok_version"
	if [ ! -x "$dir/$name" ]; then
		log "installing $name $kwok_version (go install, first time only; a few minutes on a small machine)..."
		mkdir -p "$dir"
		GOBIN="$dir" GOFLAGS=-buildvcs=false "$go" install "sigs.k8s.io/kwok/cmd/$name@$kwok_version"
	fi
	echo "$dir/$name"
}

# envtest_dir prints a directory holding kube-apiserver and etcd for controller-runtime's envtest.
envtest_dir() {
	local dir="$cache/envtest-$kube_version"
	if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ]; then
		echo "$dir"
		return
	fi
	local setup=${SETUP_ENVTEST:-$cache/setup-envtest-$setup_envtest_version/setup-envtest}
	if [ ! -x "$setup" ]; then
		log "installing setup-envtest $setup_envtest_version (go install)..."
		GOBIN="$(dirname "$setup")" "$go" install "sigs.k8s.io/controller-runtime/tools/setup-envtest@$setup_envtest_version" ||
			log "could not install setup-envtest"
	fi
	if [ -x "$setup" ]; then
		log "trying setup-envtest for official ${kube_version#v} binaries (${envtest_timeout}s limit)..."
		local official
		if official=$(timeout "$envtest_timeout" "$setup" use "${kube_version#v}" --bin-dir "$cache/setup-envtest" -p path 2>/dev/null) &&
			[ -x "$official/kube-apiserver" ]; then
			mkdir -p "$dir"
			ln -sf "$official/kube-apiserver" "$official/etcd" "$dir/"
			echo "$dir"
			return
		fi
		log "setup-envtest could not download binaries; building them instead"
	fi
	local apiserver etcd
	apiserver=$(build_kube kube-apiserver)
	etcd=$(build_etcd)
	mkdir -p "$dir"
	ln -sf "$apiserver" "$etcd" "$dir/"
	echo "$dir"
}

case "${1:-}" in
all)
	envtest_dir >/dev/null
	install_registry >/dev/null
	;;
envtest-dir) envtest_dir ;;
registry) install_registry ;;
kwok | kwokctl) install_kwok "$1" ;;
etcd) build_etcd ;;
kube-apiserver | kube-controller-manager | kube-scheduler) build_kube "$1" ;;
*)
	echo "usage: $0 all|envtest-dir|registry|kwok|kwokctl|etcd|kube-apiserver|kube-controller-manager|kube-scheduler" >&2
	exit 2
	;;
esac
