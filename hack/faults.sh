#!/usr/bin/env bash
# `make faults`: the fault suite (tests/faults/) on a control plane of its own, never the
# shared one in .local-cluster: the suite kills and restarts etcd and kube-apiserver and
# compacts etcd's history. Starts it (100 simulated nodes) on ports shifted away from the
# defaults, installs the CRDs, runs the scenarios one at a time, and stops it on exit.
#
#   FAULT_SEED=0x2545F4914F6CDD1D make faults   # another sequence of operator kill points
#   hack/faults.sh conflicting                   # only the scenarios whose name has "conflicting"
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

export CLUSTER_DIR="${FAULT_CLUSTER_DIR:-$ROOT/.fault-cluster}"
export ETCD_PORT="${FAULT_ETCD_PORT:-24790}"
export ETCD_PEER_PORT="${FAULT_ETCD_PEER_PORT:-24800}"
export APISERVER_PORT="${FAULT_APISERVER_PORT:-17443}"
export KCM_PORT="${FAULT_KCM_PORT:-11357}"
export SCHEDULER_PORT="${FAULT_SCHEDULER_PORT:-11359}"
export KWOK_PORT="${FAULT_KWOK_PORT:-11347}"
export NODES="${FAULT_NODES:-100}"
# The fault suite is about the operator and the control plane: simulated nodes only.
export REAL_NODES=0
# etcd is SIGKILLed here: with fsync, as in production, so a kill loses no acknowledged
# write (without it, a Job's finished Pod could vanish and the Job wait for ever).
export ETCD_FSYNC=1
if [ "$CLUSTER_DIR" = "$ROOT/.local-cluster" ]; then
	echo "refusing to inject faults into the shared cluster in .local-cluster" >&2
	exit 1
fi

step() { printf '\n==> %s\n' "$*"; }
suite_start=$(date +%s)

# Leftovers of an interrupted run would only confuse this one.
hack/cluster-down.sh >/dev/null 2>&1 || true
# On failure the components' logs outlive the cluster (in target/fault-logs) and their
# tails are printed, so a CI failure can be read without the machine.
on_exit() {
	rc=$?
	if [ "$rc" -ne 0 ] && [ -d "$CLUSTER_DIR/logs" ]; then
		rm -rf "$ROOT/target/fault-logs" && mkdir -p "$ROOT/target" && cp -r "$CLUSTER_DIR/logs" "$ROOT/target/fault-logs"
		step "the suite failed (exit $rc); the components' logs are kept in target/fault-logs"
		for f in "$CLUSTER_DIR"/logs/*.log; do
			printf -- '--- last lines of %s\n' "$(basename "$f")"
			grep -v '^\s*$' "$f" | tail -n 15 || true
		done
	fi
	step "stopping the fault control plane"
	hack/cluster-down.sh
	exit "$rc"
}
trap on_exit EXIT

step "starting the fault control plane ($CLUSTER_DIR, $NODES simulated nodes, API on :$APISERVER_PORT, etcd on :$ETCD_PORT)"
start=$(date +%s)
hack/cluster-up.sh
echo "control plane ready in $(($(date +%s) - start))s"

KUBECTL="$(hack/k8s-binaries.sh dir)/kubectl --kubeconfig $CLUSTER_DIR/kubeconfig"
step "installing the CRDs"
$KUBECTL apply --server-side --field-manager nodeops-crds -f crds/ >/dev/null
$KUBECTL wait --for=condition=Established crd -l app.kubernetes.io/part-of=nodeops --timeout=60s >/dev/null

step "building the fault suite"
start=$(date +%s)
cargo test --test faults --no-run
echo "built in $(($(date +%s) - start))s"

step "fault scenarios (one at a time: they restart shared components)"
start=$(date +%s)
# NODEOPS_FAULT_CLUSTER_DIR arms the scenarios (without it they skip, so a plain
# `cargo test` never injects faults into whatever cluster it is pointed at).
NODEOPS_TEST_KUBECONFIG="$CLUSTER_DIR/kubeconfig" NODEOPS_FAULT_CLUSTER_DIR="$CLUSTER_DIR" \
	NODEOPS_FAULT_ETCD_URL="http://127.0.0.1:$ETCD_PORT" NODEOPS_FAULT_SEED="${FAULT_SEED:-${NODEOPS_FAULT_SEED:-}}" \
	cargo test --test faults -- --test-threads=1 --nocapture "$@"
echo "scenarios took $(($(date +%s) - start))s; the whole suite $(($(date +%s) - suite_start))s"
