#!/usr/bin/env bash
# Builds (once) krew, the kubectl plugin manager, from the Go module proxy and prints the
# path of the binary. tests/plugin.rs installs the plugin with it from the manifest
# plugins/krew/nodeops.yaml and the archive hack/krew-package.sh builds.
#
# krew's binary runs as `krew` as well as `kubectl krew`; `krew install --manifest=FILE
# --archive=FILE` needs neither git nor the network (git is for the plugin index only).
#
# A `krew` on PATH that reports the pinned version is used as it is; a built one is cached
# in $NODEOPS_CACHE (default ~/.cache/nodeops)/bin/krew-<version>/krew.
set -euo pipefail

KREW_VERSION="${KREW_VERSION:-v0.4.3}"
CACHE="${NODEOPS_CACHE:-$HOME/.cache/nodeops}"
DIR="$CACHE/bin/krew-$KREW_VERSION"
JOBS="${GO_BUILD_JOBS:-2}"

log() { printf '[krew] %s\n' "$*" >&2; }

if [ -x "$DIR/krew" ]; then
	echo "$DIR/krew"
	exit 0
fi

# `krew version` prints a table whose GitTag row is the version. Every krew command creates
# its directories under $KREW_ROOT (default ~/.krew): a throwaway one here.
reports() {
	local root
	root=$(mktemp -d)
	KREW_ROOT="$root" KREW_NO_UPGRADE_CHECK=1 "$1" version 2>/dev/null | awk '$1 == "GitTag" { print $2 }'
	rm -rf "$root"
}

if p=$(command -v krew 2>/dev/null) && [ "$(reports "$p")" = "$KREW_VERSION" ]; then
	echo "$p"
	exit 0
fi

command -v go >/dev/null || {
	log "krew $KREW_VERSION is not cached and go is not installed: cannot build it"
	exit 1
}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod"
log "building krew $KREW_VERSION from the Go module proxy (cold: about 35 s on 2 cores)"
mkdir -p "$DIR"
tmp=$(mktemp -d "$DIR/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# krew's own release ldflags: the version `krew version` reports.
ld="-s -w -X sigs.k8s.io/krew/internal/version.gitTag=$KREW_VERSION"
GOBIN="$tmp" go install -p "$JOBS" -trimpath -ldflags "$ld" "sigs.k8s.io/krew/cmd/krew@$KREW_VERSION" >&2
got=$(reports "$tmp/krew")
[ "$got" = "$KREW_VERSION" ] || {
	log "built krew reports '$got', not $KREW_VERSION"
	exit 1
}
# Atomic: a concurrent run (two test binaries) sees either no binary or a whole one.
mv "$tmp/krew" "$DIR/krew"
log "krew $KREW_VERSION ready"
echo "$DIR/krew"
