#!/usr/bin/env bash
# Builds (once) hack/kstatus, the small program that runs sigs.k8s.io/cli-utils' kstatus
# library (Flux's and kpt's judge of custom resources) on JSON objects, and prints the path
# of the binary. Built from the Go module proxy with the versions pinned in
# hack/kstatus/go.mod and go.sum; cached in $NODEOPS_CACHE (default ~/.cache/nodeops)/bin
# under a hash of those files and the source, so an edit builds a new one.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC="$ROOT/hack/kstatus"
CACHE="${NODEOPS_CACHE:-$HOME/.cache/nodeops}"
key=$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-12)
BIN="$CACHE/bin/kstatus-$key/kstatus"
if [ ! -x "$BIN" ]; then
	command -v go >/dev/null || { echo "[kstatus] go is needed to build hack/kstatus" >&2; exit 1; }
	mkdir -p "$(dirname "$BIN")"
	(cd "$SRC" && GOFLAGS=-mod=mod go build -p "${GO_BUILD_JOBS:-2}" -trimpath -o "$BIN.tmp" .)
	mv "$BIN.tmp" "$BIN"
	echo "[kstatus] built $BIN" >&2
fi
echo "$BIN"
