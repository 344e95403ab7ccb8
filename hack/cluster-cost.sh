#!/usr/bin/env bash
# What a running local control plane costs at rest, over SECONDS (default 120): CPU seconds
# and RSS of each component, the node Lease renewals a watch sees, and the nodes' Ready
# states at the end. For sizing NODES on this machine (docs/local-cluster.md).
#
#   hack/cluster-cost.sh 120
#   CLUSTER_DIR=target/bench-cluster hack/cluster-cost.sh 60
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR="${CLUSTER_DIR:-$ROOT/.local-cluster}"
SECONDS_TO_WATCH="${1:-120}"
BIN=$("$ROOT/hack/k8s-binaries.sh" dir)
kc=(--kubeconfig "$CLUSTER_DIR/kubeconfig")
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
tick=$(getconf CLK_TCK)
pid() { cat "$CLUSTER_DIR/run/$1.pid"; }
# utime + stime of the process, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$(pid "$1")/stat"; }

declare -A before
for c in "${components[@]}"; do before[$c]=$(ticks "$c"); done
renewals=$(timeout "$SECONDS_TO_WATCH" "$BIN/kubectl" "${kc[@]}" get leases -n kube-node-lease \
	--watch-only -o name 2>/dev/null | wc -l || true)
for c in "${components[@]}"; do
	rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$(pid "$c")/status")
	awk -v c="$c" -v d=$(($(ticks "$c") - ${before[$c]})) -v t="$tick" -v s="$SECONDS_TO_WATCH" -v r="$rss" \
		'BEGIN { printf "%-24s %6.1f CPU s in %s s (%4.2f cores)  RSS %s MiB\n", c, d / t, s, d / t / s, r }'
done
echo "node Lease renewals: $renewals in $SECONDS_TO_WATCH s"
echo "nodes by Ready state: $("$BIN/kubectl" "${kc[@]}" get nodes --no-headers | awk '{print $2}' | sort | uniq -c | xargs)"
