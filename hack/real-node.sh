#!/usr/bin/env bash
# One real node beside the simulated ones: containerd + runc + CNI bridge from Debian, and
# the kubelet built with the control plane (hack/k8s-binaries.sh). Everything it writes
# lives under $CLUSTER_DIR/real-node; `down` restores what the kubelet and the bridge plugin
# change on the machine (sysctls, iptables chains, the bridge, mounts, cgroups).
#
#   hack/real-node.sh up      start it (idempotent), import the images, wait for Ready
#   hack/real-node.sh down    stop it and restore the machine
#   hack/real-node.sh state   print what of the machine a node changes (for the clean check)
#
# The node is tainted nodeops.io/real-node=true:NoSchedule so that only pods that tolerate it
# (nodeops' node runs tolerate every taint) land there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR="${CLUSTER_DIR:-$ROOT/.local-cluster}"
NAME="${REAL_NODE_NAME:-real-0001}"
DIR="$CLUSTER_DIR/real-node"
APISERVER_PORT="${APISERVER_PORT:-16443}"
KUBELET_PORT="${KUBELET_PORT:-10250}"
KUBELET_HEALTHZ_PORT="${KUBELET_HEALTHZ_PORT:-10248}"
MAX_PODS="${REAL_NODE_MAX_PODS:-16}"
POD_CIDR="${REAL_NODE_POD_CIDR:-10.89.0.0/24}"
BRIDGE=nodeops0
CGROUP_ROOT=nodeops-real-node
SOCK="$DIR/containerd/containerd.sock"
HOSTS_MARK="# nodeops real node"
# Sysctls the kubelet (protectKernelDefaults off) and the bridge plugin set.
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward net.ipv4.conf.all.forwarding)

log() { printf '[real-node] %s\n' "$*" >&2; }

running() { [ -f "$DIR/run/$1.pid" ] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }

# What a node may leave behind, one line per fact; `down` must bring it back to what it
# was before `up`.
state() {
	echo "processes: $(pgrep -x -c kubelet || true) kubelet, $(pgrep -c -f 'containerd-shim-runc' || true) shims, $(pgrep -x -c containerd || true) containerd"
	awk -v d="$CLUSTER_DIR" '$5 ~ "^"d || $5 ~ "^/(var/)?run/netns" || $5 ~ "^/run/containerd" {print "mount: " $5}' /proc/self/mountinfo | sort
	ip -o link show 2>/dev/null | awk -F': ' '{print "link: " $2}' | sed 's/@.*//' | grep -v -E '^link: veth' | sort
	echo "veths: $(ip -o link show type veth 2>/dev/null | wc -l)"
	local t
	for t in filter nat mangle; do
		iptables -t "$t" -S 2>/dev/null | awk -v t="$t" '$1 == "-N" {print "iptables " t ": " $2}'
		ip6tables -t "$t" -S 2>/dev/null | awk -v t="$t" '$1 == "-N" {print "ip6tables " t ": " $2}'
	done | sort
	local s
	for s in "${SYSCTLS[@]}"; do echo "sysctl $s = $(sysctl -n "$s" 2>/dev/null)"; done
	find /sys/fs/cgroup -maxdepth 2 -name "$CGROUP_ROOT" 2>/dev/null | sed 's/^/cgroup: /' | sort
	echo "/etc/hosts lines of the node: $(grep -c "$HOSTS_MARK\$" /etc/hosts)"
	# Host-installed sample agents (HostInstaller tests) must be gone with their tests.
	echo "sample agents on the host: $(grep -lzx AGENT_NAME=sample-agent /proc/[0-9]*/environ 2>/dev/null | wc -l)"
	for p in /var/lib/cni /run/netns /run/containerd /var/lib/kubelet /etc/cni/net.d /var/lib/nodeops; do
		[ -e "$p" ] && echo "path: $p"
	done
	true
}

need_pkgs() {
	local fresh=false
	dpkg -s containerd >/dev/null 2>&1 || fresh=true
	"$ROOT/hack/need-pkgs.sh" "$@"
	# Debian's containerd starts its service where an init system runs one: this node runs
	# its own, configured below. Only a service this script just installed is stopped.
	if $fresh && pgrep -x containerd >/dev/null; then
		systemctl stop containerd 2>/dev/null || service containerd stop 2>/dev/null || true
	fi
}

# wait_for WHAT TRIES PROCESS CMD...: until CMD succeeds, while PROCESS (started here) runs.
wait_for() {
	local what=$1 tries=$2 proc=$3
	shift 3
	for _ in $(seq "$tries"); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		running "$proc" || break
		sleep 0.5
	done
	log "timed out waiting for $what; last log lines:"
	tail -n 40 "$DIR"/logs/*.log >&2 || true
	exit 1
}

start() {
	local name=$1
	shift
	running "$name" && return 0
	setsid "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$DIR/run/$name.pid"
	log "started $name (pid $!)"
}

up() {
	if [ "$(id -u)" -ne 0 ]; then
		log "a real node (kubelet, containerd, mounts, cgroups) needs root; REAL_NODES=0 starts none"
		exit 1
	fi
	need_pkgs containerd runc containernetworking-plugins iptables iproute2
	local bin
	bin=$("$ROOT/hack/k8s-binaries.sh" dir)
	[ -x "$bin/kubelet" ] || "$ROOT/hack/k8s-binaries.sh" >/dev/null
	mkdir -p "$DIR"/{run,logs,pki,cni/net.d,cni/ipam,cni/cache,containerd,kubelet,pod-logs}
	# What to restore: recorded once, before anything of the node runs.
	if [ ! -f "$DIR/restore.env" ]; then
		{
			for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done
		} >"$DIR/restore.env"
		state >"$DIR/state.before"
		for t in filter nat mangle; do
			iptables -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}' >"$DIR/iptables-$t.before" || true
			ip6tables -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}' >"$DIR/ip6tables-$t.before" || true
		done
	fi

	# --- images
	"$ROOT/hack/images.sh" >"$DIR/images.env"
	# shellcheck disable=SC1091
	. "$DIR/images.env"

	# --- containerd, all state under $DIR
	cat >"$DIR/cni/net.d/10-nodeops.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "nodeops",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$DIR/cni/ipam", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
EOF
	cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
oom_score = 0
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Sandboxed VMs withhold CAP_SYS_RESOURCE from every process but PID 1: without this
  # every pod sandbox fails ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$DIR/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
    max_conf_num = 1
EOF
	start containerd containerd --config "$DIR/containerd/config.toml"
	wait_for containerd 60 containerd ctr --address "$SOCK" version
	# import BASE ARCHIVE: the image of ARCHIVE (an OCI archive whose tag is its ref name) as
	# BASE:<tag>, unless it is there with that digest.
	import() {
		ctr --address "$SOCK" -n k8s.io images import --base-name "$1" --digests "$2" >/dev/null
	}
	import "${RUNNER_IMAGE%:*}" "$RUNNER_IMAGE_ARCHIVE"
	import "${OPERATOR_IMAGE%:*}" "$OPERATOR_IMAGE_ARCHIVE"
	# The release tag too (v<Cargo package version>), which the chart's and config/manager's
	# default image names carry: installed with their defaults, they run these builds.
	local version
	version="v$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)"
	ctr --address "$SOCK" -n k8s.io images tag --force "$RUNNER_IMAGE" "${RUNNER_IMAGE%:*}:$version" >/dev/null
	ctr --address "$SOCK" -n k8s.io images tag --force "$OPERATOR_IMAGE" "${OPERATOR_IMAGE%:*}:$version" >/dev/null
	import "${TOOLBOX_IMAGE%:*}" "$TOOLBOX_IMAGE_ARCHIVE"
	import "${PAUSE_IMAGE%:*}" "$PAUSE_IMAGE_ARCHIVE"
	local a
	local archives
	IFS=: read -ra archives <<<"$SAMPLE_AGENT_ARCHIVES"
	for a in "${archives[@]}"; do import "$SAMPLE_AGENT_IMAGE" "$a"; done
	import "${SAMPLE_AGENT_INSTALLER_IMAGE%:*}" "$SAMPLE_AGENT_INSTALLER_IMAGE_ARCHIVE"
	log "imported $RUNNER_IMAGE $OPERATOR_IMAGE (both also as $version) $TOOLBOX_IMAGE $PAUSE_IMAGE $SAMPLE_AGENT_IMAGE:*"

	# --- the kubelet's identity: system:node:<name> in system:nodes, bound to system:node.
	local kc="$CLUSTER_DIR/kubeconfig" ca="$CLUSTER_DIR/pki/ca.crt"
	if [ ! -f "$DIR/pki/kubelet.crt" ]; then
		openssl genrsa -out "$DIR/pki/kubelet.key" 2048 2>/dev/null
		openssl req -new -key "$DIR/pki/kubelet.key" -subj "/O=system:nodes/CN=system:node:$NAME" \
			-out "$DIR/pki/kubelet.csr" 2>/dev/null
		printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$DIR/pki/kubelet.ext"
		openssl x509 -req -in "$DIR/pki/kubelet.csr" -CA "$ca" -CAkey "$CLUSTER_DIR/pki/ca.key" -CAcreateserial \
			-days 3650 -extfile "$DIR/pki/kubelet.ext" -out "$DIR/pki/kubelet.crt" 2>/dev/null
		rm -f "$DIR/pki/kubelet.csr" "$DIR/pki/kubelet.ext"
	fi
	cat >"$DIR/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nodeops-local
  cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$ca"}
users:
- name: kubelet
  user: {client-certificate: "$DIR/pki/kubelet.crt", client-key: "$DIR/pki/kubelet.key"}
contexts:
- name: nodeops-local
  context: {cluster: nodeops-local, user: kubelet}
current-context: nodeops-local
EOF
	# The API server runs RBAC without the Node authorizer: the group gets the node role.
	"$bin/kubectl" --kubeconfig "$kc" apply --server-side --field-manager nodeops-local-cluster -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: nodeops-local-nodes
  labels: {app.kubernetes.io/part-of: nodeops-local-cluster}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}
EOF

	# --- the kubelet. It serves on loopback only, and refuses a loopback node IP: the API
	# server reaches it by its Hostname address, which this line resolves to loopback.
	grep -q "$HOSTS_MARK\$" /etc/hosts || echo "127.0.0.1 $NAME $HOSTS_MARK" >>/etc/hosts
	cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine is cgroup v1 (hybrid); kubelet 1.35 refuses it unless told otherwise.
failCgroupV1: false
# containerd 1.6 does not answer the RuntimeConfig call that would tell the driver.
cgroupDriver: cgroupfs
# Every pod cgroup under one root, removed by "down".
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix://$SOCK
address: 127.0.0.1
port: $KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$ca"}
authorization: {mode: AlwaysAllow}
maxPods: $MAX_PODS
podCIDR: "$POD_CIDR"
podLogsDir: "$DIR/pod-logs"
volumePluginDir: "$DIR/kubelet/volume-plugins"
registerWithTaints:
- {key: nodeops.io/real-node, value: "true", effect: NoSchedule}
failSwapOn: false
# The disk is shared with everything else on this machine: no eviction or image GC of the
# images imported above.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: ""
clusterDomain: cluster.local
EOF
	# The cgroup root must exist in every hierarchy; cpuset needs its cpus and mems first.
	local h
	for h in /sys/fs/cgroup/*/; do
		[ -e "$h/cgroup.procs" ] || continue
		mkdir -p "$h$CGROUP_ROOT"
		if [ -e "$h/cpuset.cpus" ]; then
			cat "$h/cpuset.cpus" >"$h$CGROUP_ROOT/cpuset.cpus"
			cat "$h/cpuset.mems" >"$h$CGROUP_ROOT/cpuset.mems"
		fi
	done
	start kubelet "$bin/kubelet" --config "$DIR/kubelet.yaml" --kubeconfig "$DIR/kubelet.kubeconfig" \
		--hostname-override "$NAME" --root-dir "$DIR/kubelet" --cert-dir "$DIR/pki" \
		--node-labels "type=real,nodeops.io/real-node=true" --v=1
	wait_for "node $NAME Ready" 240 kubelet "$bin/kubectl" --kubeconfig "$kc" wait --for=condition=Ready "node/$NAME" --timeout=1s
	# What an operator needs for this node: its images (nothing is pulled here), and the host
	# process whose namespaces Host mode enters: PID 1, unless this machine refuses even root
	# its namespaces (sandboxed VMs); then the kubelet's, which are the host's.
	local host_process=1
	(exec 3</proc/1/ns/ipc) 2>/dev/null || host_process=kubelet
	cat >"$DIR/operator.env" <<EOF
NODEOPS_RUNNER_IMAGE=$RUNNER_IMAGE
NODEOPS_DEFAULT_IMAGE=$TOOLBOX_IMAGE
NODEOPS_IMAGE_PULL_POLICY=Never
NODEOPS_HOST_PROCESS=$host_process
EOF
	log "node $NAME is Ready (images: $RUNNER_IMAGE $TOOLBOX_IMAGE $PAUSE_IMAGE; Host mode enters: $host_process)"
}

stop_pid() {
	local name=$1 f="$DIR/run/$1.pid" pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL -- "-$pid" 2>/dev/null || true
	rm -f "$f"
	log "stopped $name"
}

down() {
	[ -d "$DIR" ] || return 0
	# Every step runs even when one fails: the check at the end says what is left.
	set +e
	stop_pid kubelet
	# Containers outlive containerd and their shims: end them through runc first.
	local root="$DIR/containerd/runc/k8s.io" id
	if [ -d "$root" ]; then
		for id in $(runc --root "$root" list -q 2>/dev/null); do
			runc --root "$root" kill --all "$id" KILL 2>/dev/null || true
		done
		sleep 0.5
		for id in $(runc --root "$root" list -q 2>/dev/null); do
			runc --root "$root" delete --force "$id" 2>/dev/null || true
		done
	fi
	stop_pid containerd
	pkill -KILL -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null || true
	for _ in $(seq 50); do pgrep -f "containerd-shim-runc-v2 .*-address $SOCK" >/dev/null || break; sleep 0.1; done
	# Mounts under the node's directory (pod volumes, rootfs overlays, netns, shm), deepest
	# first.
	local m
	awk -v d="$DIR" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	ip link delete "$BRIDGE" 2>/dev/null || true
	# In place: /etc/hosts may be a bind mount (containers), which a rename would not update.
	if grep -q "$HOSTS_MARK\$" /etc/hosts; then
		local hosts
		hosts=$(grep -v "$HOSTS_MARK\$" /etc/hosts || true)
		printf '%s\n' "$hosts" >/etc/hosts
	fi
	# iptables chains the kubelet added (KUBE-*), in every table, both families.
	local t tool c
	for tool in iptables ip6tables; do
		for t in filter nat mangle; do
			local before="$DIR/$tool-$t.before"
			[ -f "$before" ] || continue
			for c in $($tool -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}'); do
				grep -qx "$c" "$before" && continue
				# Remove jumps to the chain, then the chain.
				{ $tool -t "$t" -S 2>/dev/null | grep -E -- "-j $c( |$)" || true; } | sed 's/^-A/-D/' | while read -r rule; do
					eval "$tool -t $t $rule" 2>/dev/null || true
				done
				$tool -t "$t" -F "$c" 2>/dev/null || true
			done
			for c in $($tool -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}'); do
				grep -qx "$c" "$before" || $tool -t "$t" -X "$c" 2>/dev/null || true
			done
		done
	done
	if [ -f "$DIR/restore.env" ]; then
		local kv
		while read -r kv; do sysctl -q -w "$kv" >/dev/null 2>&1 || true; done <"$DIR/restore.env"
	fi
	# Pod cgroups, deepest first.
	find /sys/fs/cgroup -depth -type d -path "*/$CGROUP_ROOT*" -exec rmdir {} \; 2>/dev/null || true
	# Paths the node created outside its directory (only when they were not there before).
	local p
	for p in /var/lib/cni /run/netns /run/containerd /var/lib/kubelet /etc/cni/net.d /var/lib/nodeops; do
		if [ -e "$p" ] && ! grep -qx "path: $p" "$DIR/state.before" 2>/dev/null; then
			rm -rf "$p"
		fi
	done
	if [ -f "$DIR/state.before" ]; then
		state >"$DIR/state.after"
		if ! diff -u "$DIR/state.before" "$DIR/state.after" >&2; then
			log "the machine is not as it was before the node started (diff above)"
			return 1
		fi
	fi
	rm -rf "$DIR"
	log "stopped; the machine is as before"
}

case "${1:-up}" in
up) up ;;
down) down ;;
state) state ;;
*)
	echo "usage: $0 [up|down|state]" >&2
	exit 2
	;;
esac
