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

manifest="$CLUSTER_DIR/nodes.yaml"
: >"$manifest"
for i in $(seq 1 "$N"); do
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
kubectl --kubeconfig "$KC" apply --server-side --force-conflicts --field-manager nodeops-local-cluster -f "$manifest" >/dev/null
printf '[nodes] %s nodes applied, waiting for Ready\n' "$N" >&2
kubectl --kubeconfig "$KC" wait --for=condition=Ready node -l type=kwok --timeout=300s >/dev/null
