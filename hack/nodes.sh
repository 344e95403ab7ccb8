#!/usr/bin/env bash
# Ensures simulated nodes $NODE_PREFIX-0001 .. $NODE_PREFIX-<N> exist (kwok makes them Ready)
# and waits until they are Ready. NODE_LABELS="k=v,..." and NODE_TAINTS="k=v:Effect,..."
# are applied to every node.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR="${CLUSTER_DIR:-$ROOT/.local-cluster}"
N="${1:-${NODES:-10}}"
NODE_PREFIX="${NODE_PREFIX:-node}"
NODE_LABELS="${NODE_LABELS:-}"
NODE_TAINTS="${NODE_TAINTS:-}"
KC="$CLUSTER_DIR/kubeconfig"
BIN=$("$ROOT/hack/k8s-binaries.sh" dir)
export PATH="$BIN:$PATH"

# One file per 250 nodes, applied 8 at a time: kubectl applies a file's objects one request
# after the other, and 5000 of them in a row take minutes.
chunks="$CLUSTER_DIR/nodes"
rm -rf "$chunks"
mkdir -p "$chunks"
for i in $(seq 1 "$N"); do
	printf -v manifest '%s/%04d.yaml' "$chunks" $(((i - 1) / 250))
	name=$(printf '%s-%04d' "$NODE_PREFIX" "$i")
	{
		echo "---"
		echo "apiVersion: v1"
		echo "kind: Node"
		echo "metadata:"
		echo "  name: $name"
		echo "  annotations:"
		echo "    kwok.x-k8s.io/node: fake"
		echo "    node.alpha.kubernetes.io/ttl: \"0\""
		echo "  labels:"
		echo "    kubernetes.io/hostname: $name"
		echo "    kubernetes.io/os: linux"
		echo "    kubernetes.io/arch: amd64"
		echo "    type: kwok"
		IFS=',' read -ra labels <<<"$NODE_LABELS"
		for l in "${labels[@]}"; do
			[ -n "$l" ] && echo "    ${l%%=*}: \"${l#*=}\""
		done
		echo "spec:"
		echo "  taints:"
		IFS=',' read -ra taints <<<"$NODE_TAINTS"
		for t in "${taints[@]}"; do
			[ -z "$t" ] && continue
			kv=${t%%:*}
			echo "  - key: ${kv%%=*}"
			[ "$kv" != "${kv%%=*}" ] && echo "    value: \"${kv#*=}\""
			echo "    effect: ${t##*:}"
		done
		echo "status:"
		echo "  allocatable: {cpu: \"32\", memory: 256Gi, pods: \"250\"}"
		echo "  capacity: {cpu: \"32\", memory: 256Gi, pods: \"250\"}"
	} >>"$manifest"
done
# With no NODE_TAINTS, "taints:" is left empty (null): no taints.
find "$chunks" -name '*.yaml' -print0 | sort -z |
	xargs -0 -P 8 -I{} kubectl --kubeconfig "$KC" apply --server-side --force-conflicts --field-manager nodeops-local-cluster -f {} >/dev/null
printf '[nodes] %s nodes applied, waiting for Ready\n' "$N" >&2
# Until every simulated node is Ready: 300 s, or a tenth of a second per node for a larger
# fleet. One list every 2 s (`kubectl wait` on thousands of nodes waits on each in turn).
wait_s=$((N / 10 > 300 ? N / 10 : 300))
deadline=$((SECONDS + wait_s))
while :; do
	states=$(kubectl --kubeconfig "$KC" get nodes -l type=kwok \
		-o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')
	ready=$(grep -c '^True$' <<<"$states" || true)
	total=$(grep -c . <<<"$states" || true)
	[ "$ready" -ge "$N" ] && [ "$ready" -eq "$total" ] && break
	if [ "$SECONDS" -ge "$deadline" ]; then
		printf '[nodes] %s of %s nodes Ready after %s s\n' "$ready" "$total" "$wait_s" >&2
		exit 1
	fi
	sleep 2
done
