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
# An operator from an earlier demo is reused, unless the binary was rebuilt since.
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && [ target/debug/nodeops -nt "$pidfile" ]; then
	echo "the operator was rebuilt: restarting it"
	kill "$(cat "$pidfile")"
	for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.2; done
fi
if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
	# The real node's images, pull policy and host entry (hack/real-node.sh writes them).
	node_env=()
	[ -f .local-cluster/real-node/operator.env ] && mapfile -t node_env <.local-cluster/real-node/operator.env
	env "${node_env[@]}" setsid target/debug/nodeops >.local-cluster/logs/nodeops.log 2>&1 </dev/null &
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
# An Invoker due 20 seconds from now, so a scheduled run happens during the demo (a new
# one each run: a Once Invoker fires once).
kubectl delete -n nodeops-demo invoker demo-soon --ignore-not-found --cascade=foreground --wait >/dev/null
sed "s/INVOKE_TIME/$(date -u -d '+20 seconds' +%Y-%m-%dT%H:%M:%SZ)/" hack/demo/invoker-soon.yaml.in |
	kubectl apply -n nodeops-demo -f -
get() { target/debug/nodeops get "$@" -n nodeops-demo; }
for name in $(kubectl get -n nodeops-demo asynccommands -o name); do
	step "AsyncCommand ${name#*/}: each node's result as it arrives, then the table"
	get asynccommand "${name#*/}" --watch
done
for name in $(kubectl get -n nodeops-demo agentinvocations -o name); do
	step "AgentInvocation ${name#*/}: each instance's result as it arrives, then the table"
	get agentinvocation "${name#*/}" --watch
done
step "the NodeAgent telescope: its version on each node"
kubectl wait --for=condition=Ready nodeagent telescope --timeout=120s >/dev/null
target/debug/nodeops get nodeagent telescope
kubectl get nodes -L agent.nodeops.io/telescope | awk 'NR <= 4'
kubectl get daemonsets -n nodeops-agents
step "AgentUpgradeJob upgrade-telescope: the dry-run plan (nothing changes)"
kubectl apply -n nodeops-demo -f config/samples/agentupgradejob.yaml
get agentupgradejob upgrade-telescope --watch
step "Invoker demo-soon: waiting for its scheduled run"
for _ in $(seq 120); do
	run=$(kubectl get -n nodeops-demo invoker demo-soon -o jsonpath='{.status.recentRuns[0].asyncCommand}')
	[ -n "$run" ] && break
	sleep 1
done
[ -n "$run" ] || { echo "demo-soon did not fire within 2 minutes" >&2; exit 1; }
get asynccommand "$run" --watch >/dev/null
for name in $(kubectl get -n nodeops-demo invokers -o name); do
	step "Invoker ${name#*/}: its runs and the latest run's nodes"
	get invoker "${name#*/}"
done
for name in $(kubectl get -n nodeops-demo commands -o name); do
	step "Command ${name#*/}: the AsyncCommands that ran it and the latest one's nodes"
	get command "${name#*/}"
done
step "every nodeops object"
kubectl get nodeops -A
cat <<MSG

The cluster and the operator keep running:
  export KUBECONFIG=$KUBECONFIG PATH=$BIN:\$PATH
  kubectl get nodeops -A
Stop everything with: make cluster-down
MSG
