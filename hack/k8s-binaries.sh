#!/usr/bin/env bash
# Builds (once) the Kubernetes binaries the local control plane needs, from the Go module
# proxy, and prints the directory that holds them.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod maps every staging module
# (k8s.io/api, k8s.io/apiserver, ...) to ./staging at v0.0.0. A small wrapper module that
# requires k8s.io/kubernetes and replaces each staging module with its published v0.X.Y
# builds the commands with plain `go build`. The replace list is generated from the
# release's own go.mod, never hard-coded. etcd's server module is built the same way.
#
# Binaries found in $KUBEBUILDER_ASSETS or on PATH with the pinned version are used as they
# are; built ones are cached in $NODEOPS_CACHE (default ~/.cache/nodeops), keyed by version.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CACHE="${NODEOPS_CACHE:-$HOME/.cache/nodeops}"
BIN="$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
JOBS="${GO_BUILD_JOBS:-2}"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod"

log() { printf '[k8s-binaries] %s\n' "$*" >&2; }

mkdir -p "$BIN"

# Use a binary from KUBEBUILDER_ASSETS when it is there (kube-apiserver, etcd, ...).
adopt() {
	local name=$1
	[ -x "$BIN/$name" ] && return 0
	if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$name" ]; then
		ln -sf "$KUBEBUILDER_ASSETS/$name" "$BIN/$name"
		log "using $name from KUBEBUILDER_ASSETS"
		return 0
	fi
	return 1
}

# A PATH binary is adopted only when it reports the pinned version: tests need the server
# version they were written for.
adopt_path() {
	local name=$1 want=$2 p
	[ -x "$BIN/$name" ] && return 0
	p=$(command -v "$name" 2>/dev/null) || return 1
	if "$p" --version 2>/dev/null | grep -q -- "$want"; then
		ln -sf "$p" "$BIN/$name"
		log "using $name from PATH ($p)"
		return 0
	fi
	return 1
}

build_kubernetes() {
	local missing=() c
	for c in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet; do
		adopt "$c" || adopt_path "$c" "$K8S_VERSION" || missing+=("$c")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "building ${missing[*]} $K8S_VERSION from the Go module proxy (cold: 15-30 min on 2 cores)"
	local work="$CACHE/src/kubernetes-$K8S_VERSION"
	mkdir -p "$work"
	local modfile
	modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
	[ -f "$modfile" ] || { log "cannot download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
	local minor=${K8S_VERSION#v1.}
	local staging="v0.$minor"
	{
		echo "module nodeops.local/k8s-build"
		echo
		grep -E '^go [0-9]' "$modfile"
		grep -E '^godebug' "$modfile" || true
		# godebug blocks span lines; copy them whole.
		sed -n '/^godebug (/,/^)/p' "$modfile"
		echo
		echo "require k8s.io/kubernetes $K8S_VERSION"
		echo
		echo "replace ("
		sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\t\1 => \1 '"$staging"'#p' "$modfile"
		echo ")"
	} | awk '!seen[$0]++ || $0 == ")" || $0 == ""' >"$work/go.mod"
	cat >"$work/tools.go" <<EOF
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
EOF
	(cd "$work" && go mod tidy >&2)
	local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
	ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
	for c in "${missing[@]}"; do
		log "go build $c"
		(cd "$work" && go build -p "$JOBS" -trimpath -ldflags "$ld" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c" >&2)
		mv "$BIN/$c.tmp" "$BIN/$c"
	done
}

build_etcd() {
	adopt etcd && return 0
	adopt_path etcd "etcd Version: ${ETCD_VERSION#v}" && return 0
	log "building etcd $ETCD_VERSION"
	local work="$CACHE/src/etcd-$ETCD_VERSION"
	mkdir -p "$work"
	local modfile
	modfile=$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
	{
		echo "module nodeops.local/etcd-build"
		echo
		grep -E '^go [0-9]' "$modfile"
		echo
		echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
	} >"$work/go.mod"
	cat >"$work/tools.go" <<EOF
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
	(cd "$work" && go mod tidy >&2 && go build -p "$JOBS" -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3 >&2)
	mv "$BIN/etcd.tmp" "$BIN/etcd"
}

build_kwok() {
	adopt kwok && return 0
	log "building kwok $KWOK_VERSION"
	GOBIN="$BIN" go install -p "$JOBS" -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
}

case "${1:-all}" in
all)
	build_etcd
	build_kwok
	build_kubernetes
	;;
dir) ;;
*)
	echo "usage: $0 [all|dir]" >&2
	exit 2
	;;
esac
echo "$BIN"
