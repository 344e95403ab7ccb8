#!/usr/bin/env bash
# Stops every process hack/cluster-up.sh started (each runs in its own session, so the whole
# process group is ended) and removes the cluster's state. The real node's teardown
# (hack/real-node.sh down) checks the machine is as it was and fails otherwise.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR="${CLUSTER_DIR:-$ROOT/.local-cluster}"
[ -d "$CLUSTER_DIR/run" ] || { rm -rf "$CLUSTER_DIR"; exit 0; }
rc=0
# The real node first: it restores what it changed on the machine, and says so when it
# could not.
CLUSTER_DIR="$CLUSTER_DIR" "$ROOT/hack/real-node.sh" down || rc=1
# Reverse start order: clients first, etcd last.
for name in nodeops kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
	f="$CLUSTER_DIR/run/$name.pid"
	[ -f "$f" ] || continue
	pid=$(cat "$f")
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL -- "-$pid" 2>/dev/null || true
	printf '[cluster-down] stopped %s\n' "$name" >&2
done
rm -rf "$CLUSTER_DIR"
exit $rc
