#!/usr/bin/env bash
# `make test`: formatting and lints, then every unit and end-to-end test. The end-to-end
# tests share one local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok, and one real node: kubelet + containerd) that this script starts
# once and stops at the end, unless one was already running (then it is reused and left
# running).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export NODES="${TEST_NODES:-100}"

step() { printf '\n==> %s\n' "$*"; }

step "building the Kubernetes binaries (cached after the first run)"
start=$(date +%s)
hack/k8s-binaries.sh >/dev/null
echo "binaries ready in $(($(date +%s) - start))s"

step "building helm (cached after the first run; tests/chart.rs uses it)"
start=$(date +%s)
hack/helm.sh >/dev/null
echo "helm ready in $(($(date +%s) - start))s"

step "building krew (cached after the first run; tests/plugin.rs uses it)"
start=$(date +%s)
hack/krew.sh >/dev/null
echo "krew ready in $(($(date +%s) - start))s"

started_here=false
if ! { [ -f .local-cluster/kubeconfig ] && "$(hack/k8s-binaries.sh dir)/kubectl" --kubeconfig .local-cluster/kubeconfig get --raw /readyz >/dev/null 2>&1; }; then
	started_here=true
	trap 'step "stopping the local control plane"; hack/cluster-down.sh' EXIT
fi
step "starting the local control plane with $NODES simulated nodes"
hack/cluster-up.sh
# An operator left running by `make demo` watches every namespace: it would act on the
# tests' objects beside the operators the tests start.
if [ -f .local-cluster/run/nodeops.pid ] && kill -0 "$(cat .local-cluster/run/nodeops.pid)" 2>/dev/null; then
	echo "stopping the operator that make demo left running"
	kill "$(cat .local-cluster/run/nodeops.pid)"
fi

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

# tests/remote_install.rs runs a real sshd.
hack/need-pkgs.sh openssh-server openssh-client

step "tests (unit and end-to-end against the local control plane)"
# End-to-end tests mostly wait on the cluster, so more of them run at once than cores.
NODEOPS_TEST_KUBECONFIG="$ROOT/.local-cluster/kubeconfig" RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}" \
	cargo test --lib --bins --tests --no-fail-fast
if $started_here; then
	# The fault suite loads both cores: the shared control plane must not compete with it.
	# cluster-down fails when the real node left anything on the machine (processes,
	# mounts, links, iptables chains, sysctls, cgroups, paths): that is checked here too.
	step "stopping the local control plane, checking the machine is as before"
	hack/cluster-down.sh
	trap - EXIT
else
	echo "(the local control plane was already running and is left running)"
fi

step "fault suite: operator kills, control-plane restarts, 410 Gone, other writers, secrets (its own control plane; docs/reliability.md)"
hack/faults.sh
