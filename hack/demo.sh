#!/usr/bin/env bash
# `make demo`: brings up the local control plane with simulated nodes, installs the CRDs,
# starts the operator against it, applies one sample of every kind and prints what the
# cluster reports. The cluster and operator keep running for exploration; `make
# cluster-down` stops everything.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=$(hack/k8s-binaries.sh)
export PATH="$BIN:$PATH" KUBECONFIG="$ROOT/.local-cluster/kubeconfig"

step() { printf '\n==> %s\n' "$*"; }

step "local control plane"
hack/cluster-up.sh
step "CRDs"
kubectl apply --server-side --field-manager nodeops-crds -f crds/ >/dev/null
kubectl wait --for=condition=Established crd -l app.kubernetes.io/part-of=nodeops --timeout=60s >/dev/null
step "operator"
cargo build -q --bins
pidfile=.local-cluster/run/nodeops.pid
if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
	setsid target/debug/nodeops >.local-cluster/logs/nodeops.log 2>&1 </dev/null &
	echo $! >"$pidfile"
fi
echo "nodeops running (pid $(cat "$pidfile")), log: .local-cluster/logs/nodeops.log"
step "samples"
for ns in nodeops-demo nodeops-agents; do
	kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done
# The upgrade job fixes its set of agents when it starts: apply it once telescope is on
# its first nodes.
samples=$(ls config/samples/*.yaml | grep -v agentupgradejob)
kubectl apply -n nodeops-demo $(printf -- '-f %s ' $samples) -f hack/demo/
step "waiting for the AsyncCommands to finish"
kubectl wait -n nodeops-demo --for=condition=Complete asynccommand --all --timeout=120s >/dev/null
kubectl get -n nodeops-demo asynccommands
for name in $(kubectl get -n nodeops-demo asynccommands -o name); do
	step "per-node results of ${name#*/}"
	target/debug/nodeops get asynccommand "${name#*/}" -n nodeops-demo | head -25
done
step "waiting for the AgentInvocations to finish"
kubectl wait -n nodeops-demo --for=condition=Complete agentinvocation --all --timeout=120s >/dev/null
kubectl get -n nodeops-demo agentinvocations
for name in $(kubectl get -n nodeops-demo agentinvocations -o name); do
	step "per-instance results of ${name#*/}"
	target/debug/nodeops get agentinvocation "${name#*/}" -n nodeops-demo
done
step "the NodeAgent telescope: its version on each node"
kubectl wait --for=condition=Ready nodeagent telescope --timeout=120s >/dev/null
target/debug/nodeops get nodeagent telescope
kubectl get nodes -L agent.nodeops.io/telescope | awk 'NR <= 4'
kubectl get daemonsets -n nodeops-agents
step "the dry-run upgrade of telescope (nothing changes)"
kubectl apply -n nodeops-demo -f config/samples/agentupgradejob.yaml
kubectl wait -n nodeops-demo --for=condition=Complete agentupgradejob --all --timeout=120s >/dev/null
target/debug/nodeops get agentupgradejob upgrade-telescope -n nodeops-demo
step "the Invokers and their runs"
for name in $(kubectl get -n nodeops-demo invokers -o name); do
	target/debug/nodeops get invoker "${name#*/}" -n nodeops-demo
done
kubectl get -n nodeops-demo commands
step "every nodeops object"
kubectl get nodeops -A
cat <<MSG

The cluster and the operator keep running:
  export KUBECONFIG=$KUBECONFIG PATH=$BIN:\$PATH
  kubectl get nodeops -A
Stop everything with: make cluster-down
MSG
