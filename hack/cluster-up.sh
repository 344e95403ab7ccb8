#!/usr/bin/env bash
# Starts a real local Kubernetes control plane on loopback: etcd, kube-apiserver (TLS,
# client-certificate authentication, RBAC, service-account tokens), kube-controller-manager,
# kube-scheduler, kwok simulating $NODES nodes and one real node (kubelet + containerd;
# REAL_NODES=0 for none). Writes the admin kubeconfig to
# $CLUSTER_DIR/kubeconfig. Idempotent: a cluster that is already up is left as it is (more
# nodes are added when NODES grew).
#
#   NODES=1000 NODE_LABELS="zone=a,tier=batch" NODE_TAINTS="dedicated=ops:NoSchedule" hack/cluster-up.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR="${CLUSTER_DIR:-$ROOT/.local-cluster}"
NODES="${NODES:-10}"
NODE_PREFIX="${NODE_PREFIX:-node}"
NODE_LABELS="${NODE_LABELS:-}"
NODE_TAINTS="${NODE_TAINTS:-}"
# One real node (kubelet + containerd, hack/real-node.sh) beside the simulated ones; 0: none.
REAL_NODES="${REAL_NODES:-1}"
ETCD_PORT="${ETCD_PORT:-23790}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${APISERVER_PORT:-16443}"
KCM_PORT="${KCM_PORT:-10357}"
SCHEDULER_PORT="${SCHEDULER_PORT:-10359}"
KWOK_PORT="${KWOK_PORT:-10347}"
export CLUSTER_DIR NODE_PREFIX NODE_LABELS NODE_TAINTS

log() { printf '[cluster-up] %s\n' "$*" >&2; }

BIN=$("$ROOT/hack/k8s-binaries.sh")
export PATH="$BIN:$PATH"
mkdir -p "$CLUSTER_DIR"/{pki,logs,run}
cd "$CLUSTER_DIR"
KC="$CLUSTER_DIR/kubeconfig"

running() { [ -f "run/$1.pid" ] && kill -0 "$(cat "run/$1.pid")" 2>/dev/null; }

# start NAME CMD...: runs CMD in the background (its own session, so cluster-down can end
# it and everything it spawned), logging to logs/NAME.log.
start() {
	local name=$1
	shift
	if running "$name"; then
		return 0
	fi
	setsid "$@" >"logs/$name.log" 2>&1 </dev/null &
	echo $! >"run/$name.pid"
	log "started $name (pid $!)"
}

wait_for() {
	local what=$1 tries=$2
	shift 2
	for _ in $(seq "$tries"); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.5
	done
	log "timed out waiting for $what; last log lines:"
	tail -n 30 logs/*.log >&2 || true
	exit 1
}

# --- PKI: a CA, the serving certificate, client certificates, the service-account key.
cert() { # name CN O [SAN]
	local name=$1 cn=$2 o=$3 san=${4:-}
	[ -f "pki/$name.crt" ] && return 0
	openssl genrsa -out "pki/$name.key" 2048 2>/dev/null
	local subj="/CN=$cn"
	[ -n "$o" ] && subj="/O=$o/CN=$cn"
	openssl req -new -key "pki/$name.key" -subj "$subj" -out "pki/$name.csr" 2>/dev/null
	local ext="pki/$name.ext"
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=digitalSignature,keyEncipherment"
		if [ -n "$san" ]; then
			echo "extendedKeyUsage=serverAuth,clientAuth"
			echo "subjectAltName=$san"
		else
			echo "extendedKeyUsage=clientAuth"
		fi
	} >"$ext"
	openssl x509 -req -in "pki/$name.csr" -CA pki/ca.crt -CAkey pki/ca.key -CAcreateserial \
		-days 3650 -extfile "$ext" -out "pki/$name.crt" 2>/dev/null
	rm -f "pki/$name.csr" "$ext"
}
if [ ! -f pki/ca.crt ]; then
	openssl req -x509 -newkey rsa:2048 -nodes -keyout pki/ca.key -out pki/ca.crt -days 3650 \
		-subj "/CN=nodeops-local-ca" 2>/dev/null
fi
cert apiserver kube-apiserver "" "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin admin system:masters
cert kcm system:kube-controller-manager ""
cert scheduler system:kube-scheduler ""
# The API server's client identity towards kubelets (logs, exec).
cert apiserver-kubelet kube-apiserver-kubelet-client system:masters
[ -f pki/sa.key ] || {
	openssl genrsa -out pki/sa.key 2048 2>/dev/null
	openssl rsa -in pki/sa.key -pubout -out pki/sa.pub 2>/dev/null
}

kubeconfig() { # file user
	local file=$1 user=$2
	cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nodeops-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $CLUSTER_DIR/pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $CLUSTER_DIR/pki/$user.crt
    client-key: $CLUSTER_DIR/pki/$user.key
contexts:
- name: nodeops-local
  context:
    cluster: nodeops-local
    user: $user
current-context: nodeops-local
EOF
}
kubeconfig "$KC" admin
kubeconfig kcm.kubeconfig kcm
kubeconfig scheduler.kubeconfig scheduler

# --- etcd
# Without fsync by default: the test cluster is thrown away, and fsync is most of etcd's
# cost on a small disk. ETCD_FSYNC=1 keeps etcd's durability (the fault suite's cluster,
# which SIGKILLs etcd: without fsync a kill loses writes etcd had acknowledged, which a
# real etcd never does, and the cluster's own Job controller can then wait for ever).
etcd_fsync=(--unsafe-no-fsync)
[ "${ETCD_FSYNC:-0}" = 1 ] && etcd_fsync=()
start etcd etcd --name nodeops-local --data-dir "$CLUSTER_DIR/etcd" \
	--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
	--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster "nodeops-local=http://127.0.0.1:$ETCD_PEER_PORT" \
	"${etcd_fsync[@]}" --quota-backend-bytes=4294967296 --log-level=warn
wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver
start kube-apiserver kube-apiserver \
	--etcd-servers "http://127.0.0.1:$ETCD_PORT" \
	--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
	--tls-cert-file pki/apiserver.crt --tls-private-key-file pki/apiserver.key \
	--client-ca-file pki/ca.crt \
	--authorization-mode RBAC \
	--service-account-issuer https://kubernetes.default.svc.cluster.local \
	--service-account-key-file pki/sa.pub --service-account-signing-key-file pki/sa.key \
	--service-cluster-ip-range 10.96.0.0/16 \
	--allow-privileged=true \
	--kubelet-client-certificate pki/apiserver-kubelet.crt --kubelet-client-key pki/apiserver-kubelet.key \
	--kubelet-preferred-address-types Hostname,InternalIP \
	--max-requests-inflight 800 --max-mutating-requests-inflight 400 \
	--v=1
wait_for kube-apiserver 240 kubectl --kubeconfig "$KC" get --raw /readyz

# --- controllers, scheduler
# Node heartbeats: kwok renews every node's Lease a quarter of its duration apart, as the
# kubelet does. The kubelet's 40 s up to 1000 nodes; at 5000 that would be 500 writes a
# second of heartbeats alone, so above 1000 a 300 s lease and a node lifecycle grace period
# to match (the Lease is what keeps a node Ready). Chosen when the control plane starts: a
# running one keeps its own (docs/local-cluster.md).
LEASE_SECONDS=40
node_grace=()
if [ "$NODES" -gt 1000 ]; then
	LEASE_SECONDS=300
	node_grace=(--node-monitor-grace-period 360s)
fi
start kube-controller-manager kube-controller-manager \
	--kubeconfig kcm.kubeconfig \
	--authentication-kubeconfig kcm.kubeconfig --authorization-kubeconfig kcm.kubeconfig \
	--bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
	--leader-elect=false \
	--root-ca-file pki/ca.crt --service-account-private-key-file pki/sa.key \
	--use-service-account-credentials=true \
	--cluster-cidr 10.244.0.0/16 --service-cluster-ip-range 10.96.0.0/16 \
	--kube-api-qps 500 --kube-api-burst 1000 \
	--concurrent-job-syncs 50 --concurrent-daemonset-syncs 10 --concurrent-gc-syncs 50 \
	"${node_grace[@]}" --v=1
start kube-scheduler kube-scheduler \
	--kubeconfig scheduler.kubeconfig \
	--authentication-kubeconfig scheduler.kubeconfig --authorization-kubeconfig scheduler.kubeconfig \
	--bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
	--leader-elect=false --v=1
# kwok: manages only nodes annotated as its own, drives their pods through the stages.
start kwok kwok --kubeconfig "$KC" \
	--manage-all-nodes=false \
	--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
	--config "$ROOT/hack/kwok-stages.yaml" \
	--node-lease-duration-seconds "$LEASE_SECONDS" \
	--server-address "127.0.0.1:$KWOK_PORT" \
	--cidr 10.244.0.0/16 --node-ip 10.250.0.1

# The default ServiceAccount appears when the controller manager's token controllers run.
wait_for "default ServiceAccount" 120 kubectl --kubeconfig "$KC" -n default get serviceaccount default

# --- simulated nodes
"$ROOT/hack/nodes.sh" "$NODES"
# --- the real node
case "$REAL_NODES" in
0) ;;
1) CLUSTER_DIR="$CLUSTER_DIR" APISERVER_PORT="$APISERVER_PORT" "$ROOT/hack/real-node.sh" up ;;
*)
	log "REAL_NODES=$REAL_NODES: only 0 or 1 real node is supported on one machine"
	exit 1
	;;
esac
log "ready: $(kubectl --kubeconfig "$KC" get nodes --no-headers | wc -l) nodes; KUBECONFIG=$KC"
