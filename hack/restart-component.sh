#!/usr/bin/env bash
# Stops and/or starts ONE component of a control plane that hack/cluster-up.sh started, the
# way a crash and a supervisor restart would: the process group is killed (SIGKILL by
# default), then the very same command line is started again (read from /proc before the
# kill, so no flag is repeated here), appending to its log, and the script waits until the
# component serves again.
#
#   CLUSTER_DIR=$PWD/.fault-cluster hack/restart-component.sh restart kube-apiserver
#   CLUSTER_DIR=... hack/restart-component.sh stop etcd     # ... and later:
#   CLUSTER_DIR=... hack/restart-component.sh start etcd
#
# Components: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok.
# SIGNAL=TERM stops gracefully instead. CLUSTER_DIR is required (no default), so a shared
# cluster is never restarted by accident.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
usage() {
	echo "usage: CLUSTER_DIR=DIR $0 stop|start|restart etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok" >&2
	exit 2
}
[ $# -eq 2 ] || usage
action=$1 name=$2
case "$name" in etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kwok) ;; *) usage ;; esac
: "${CLUSTER_DIR:?set CLUSTER_DIR to the cluster to act on (for example \$PWD/.fault-cluster)}"
SIGNAL="${SIGNAL:-KILL}"
[ -d "$CLUSTER_DIR/run" ] || {
	echo "no cluster in $CLUSTER_DIR" >&2
	exit 1
}
cd "$CLUSTER_DIR"
BIN=$("$ROOT/hack/k8s-binaries.sh" dir)
log() { printf '[restart-component] %s %s\n' "$(date +%H:%M:%S.%N | cut -c1-12)" "$*" >&2; }

stop() {
	local pidfile="run/$name.pid"
	[ -f "$pidfile" ] || {
		log "$name is not running"
		return 0
	}
	local pid
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		# What to start again: the binary and its exact arguments.
		readlink "/proc/$pid/exe" >"run/$name.exe"
		cp "/proc/$pid/cmdline" "run/$name.cmdline"
		kill "-$SIGNAL" -- "-$pid" 2>/dev/null || kill "-$SIGNAL" "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL -- "-$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$pidfile"
	log "stopped $name (pid $pid, SIG$SIGNAL)"
}

start() {
	if [ -f "run/$name.pid" ] && kill -0 "$(cat "run/$name.pid")" 2>/dev/null; then
		log "$name is already running"
		return 0
	fi
	[ -f "run/$name.cmdline" ] || {
		echo "no saved command line for $name: stop it with this script first" >&2
		exit 1
	}
	local args exe
	mapfile -d '' args <"run/$name.cmdline"
	exe=$(cat "run/$name.exe")
	PATH="$BIN:$PATH" setsid "$exe" "${args[@]:1}" >>"logs/$name.log" 2>&1 </dev/null &
	echo $! >"run/$name.pid"
	log "started $name (pid $!)"
	wait_ready
}

# Waits until the component serves: etcd's /health, the API server's /readyz; the others
# only have to stay up (they reconnect to the API server on their own).
wait_ready() {
	local tries=240 ok=false
	for _ in $(seq "$tries"); do
		case "$name" in
		etcd)
			local url
			url=$(tr '\0' '\n' <"run/$name.cmdline" | grep -A1 -- '^--listen-client-urls$' | tail -n1)
			curl -sf "$url/health" >/dev/null 2>&1 && ok=true
			;;
		kube-apiserver)
			"$BIN/kubectl" --kubeconfig "$CLUSTER_DIR/kubeconfig" get --raw /readyz >/dev/null 2>&1 && ok=true
			;;
		*)
			sleep 1
			kill -0 "$(cat "run/$name.pid")" 2>/dev/null && ok=true
			;;
		esac
		$ok && break
		sleep 0.25
	done
	$ok || {
		log "$name did not come back; last log lines:"
		tail -n 30 "logs/$name.log" >&2
		exit 1
	}
	log "$name serves again"
}

case "$action" in
stop) stop ;;
start) start ;;
restart)
	stop
	start
	;;
*) usage ;;
esac
