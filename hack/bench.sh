#!/usr/bin/env bash
# `make bench`: starts the local control plane with 1000 simulated nodes (unless one is
# running), installs the CRDs and runs the benchmark binary, which prints its tables.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export NODES="${BENCH_NODES:-1000}"
BIN=$(hack/k8s-binaries.sh)
started_here=false
if ! { [ -f .local-cluster/kubeconfig ] && "$BIN/kubectl" --kubeconfig .local-cluster/kubeconfig get --raw /readyz >/dev/null 2>&1; }; then
	started_here=true
	trap 'hack/cluster-down.sh' EXIT
fi
hack/cluster-up.sh
"$BIN/kubectl" --kubeconfig .local-cluster/kubeconfig apply --server-side --field-manager nodeops-crds -f crds/ >/dev/null
"$BIN/kubectl" --kubeconfig .local-cluster/kubeconfig wait --for=condition=Established crd -l app.kubernetes.io/part-of=nodeops --timeout=60s >/dev/null
NODEOPS_TEST_KUBECONFIG="$ROOT/.local-cluster/kubeconfig" cargo bench --bench nodeops -- "$@"
$started_here || echo "(the local control plane was already running and is left running)"
