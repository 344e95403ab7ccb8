#!/usr/bin/env bash
# Builds (once) helm v3 from the Go module proxy and prints the path of the binary.
#
# Debian has no helm package and there is no internet here beyond the package registries,
# so helm is `go install`ed from helm.sh/helm/v3 at a pinned version, with the ldflags of
# helm's own Makefile (the version `helm version` reports, and the Kubernetes version
# `helm template` and `helm lint` assume, taken from the release's k8s.io/client-go).
#
# A `helm` on PATH that reports the pinned version is used as it is; a built one is cached
# in $NODEOPS_CACHE (default ~/.cache/nodeops)/bin/helm-<version>/helm.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
CACHE="${NODEOPS_CACHE:-$HOME/.cache/nodeops}"
DIR="$CACHE/bin/helm-$HELM_VERSION"
JOBS="${GO_BUILD_JOBS:-2}"

log() { printf '[helm] %s\n' "$*" >&2; }

if [ -x "$DIR/helm" ]; then
	echo "$DIR/helm"
	exit 0
fi

if p=$(command -v helm 2>/dev/null) && [ "$("$p" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; then
	echo "$p"
	exit 0
fi

command -v go >/dev/null || {
	log "helm $HELM_VERSION is not cached and go is not installed: cannot build it"
	exit 1
}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod"
log "building helm $HELM_VERSION from the Go module proxy (cold: about 2 minutes on 2 cores)"
info=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" 2>&1) || true
modfile=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' <<<"$info")
[ -f "$modfile" ] || {
	log "cannot download helm.sh/helm/v3@$HELM_VERSION from the Go module proxy ($(go env GOPROXY)):"
	printf '%s\n' "$info" >&2
	exit 1
}
# helm's Makefile: client-go v0.X.Y means Kubernetes 1.X.
client_go=$(sed -n 's#^\s*k8s\.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$modfile" | head -n1)
[ -n "$client_go" ] || {
	log "no k8s.io/client-go requirement in $modfile"
	exit 1
}
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ld="$ld -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
	ld="$ld -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$client_go"
done

mkdir -p "$DIR"
tmp=$(mktemp -d "$DIR/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install -p "$JOBS" -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
got=$("$tmp/helm" version --template '{{.Version}}')
[ "$got" = "$HELM_VERSION" ] || {
	log "built helm reports $got, not $HELM_VERSION"
	exit 1
}
# Atomic: a concurrent run (two test binaries) sees either no binary or a whole one.
mv "$tmp/helm" "$DIR/helm"
log "helm $HELM_VERSION ready"
echo "$DIR/helm"
