#!/bin/sh
# The sample agent's host installer: the payload of nodeops.local/sample-agent-installer
# (hack/images.sh), staged on the host by nodeops' HostInstaller mode and run there as root
# with the host's own tools (see docs/installers.md). It takes
#   NODEOPS_PARAM_action           install | update | rollback
#   NODEOPS_PARAM_version          the version that runs afterwards
#   NODEOPS_PARAM_previousVersion  the version that ran before (empty on a first install)
#   AGENT_PREFIX                   where the agent lives (default /opt/nodeops-sample-agent)
#   AGENT_READY_SECONDS            how long a started agent has to become ready (default 10)
# and keeps under AGENT_PREFIX:
#   versions/<v>/agent, versions/<v>/agent.env   each installed version
#   current -> versions/<v>                       the version the service runs
#   agent.pid, agent.log, ready                   the service
# The service is started as a service manager would start it (systemd is not assumed):
# detached, in its own session, in the cgroups of the host's PID 1, so it outlives the
# installer's pod. Install and update keep the previous version's files for a rollback;
# a rollback removes the files of the version it rolls back from. A version that does not
# become ready is undone (its files removed, the previous version started again) and the
# installer fails: the host is left as it was found.
set -eu
payload=$(cd "$(dirname "$0")" && pwd)
prefix=${AGENT_PREFIX:-/opt/nodeops-sample-agent}
ready_seconds=${AGENT_READY_SECONDS:-10}
action=${NODEOPS_PARAM_action:?NODEOPS_PARAM_action is not set}
version=${NODEOPS_PARAM_version:?NODEOPS_PARAM_version is not set}
previous=${NODEOPS_PARAM_previousVersion:-}

say() { echo "sample-agent installer: $*"; }
fail() {
	say "$*" >&2
	exit 1
}

# The pid of the running service, if it is ours (a pid file can outlive its process).
service_pid() {
	[ -f "$prefix/agent.pid" ] || return 1
	pid=$(cat "$prefix/agent.pid")
	[ -r "/proc/$pid/environ" ] && tr '\0' '\n' <"/proc/$pid/environ" | grep -qxF "AGENT_PREFIX=$prefix"
}

# Whether process $1 runs (a zombie does not; the environment of a process is unreadable
# for a moment while it execs, so that is no test of life).
alive() {
	state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ -n "$state" ] && [ "$state" != Z ]
}

stop() {
	if service_pid; then
		kill -TERM "$pid" 2>/dev/null || true
		i=0
		while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$pid" 2>/dev/null || true
		say "stopped $(readlink "$prefix/current" 2>/dev/null || echo '?') (pid $pid)"
	fi
	rm -f "$prefix/agent.pid" "$prefix/ready"
}

# Starts the version `current` points at and waits until it is ready.
start() {
	rm -f "$prefix/ready"
	AGENT_PREFIX=$prefix sh -c '
		# Into the cgroups of PID 1, as a service manager puts its services.
		while IFS=: read -r _ controllers path; do
			case $controllers in
			"") dir=/sys/fs/cgroup; [ -d /sys/fs/cgroup/unified ] && dir=/sys/fs/cgroup/unified ;;
			name=*) dir=/sys/fs/cgroup/${controllers#name=} ;;
			*) dir=/sys/fs/cgroup/$controllers ;;
			esac
			[ -w "$dir$path/cgroup.procs" ] && echo $$ >"$dir$path/cgroup.procs" 2>/dev/null || true
		done </proc/1/cgroup
		set -a
		. "$AGENT_PREFIX/current/agent.env"
		set +a
		exec setsid "$AGENT_PREFIX/current/agent" </dev/null >>"$AGENT_PREFIX/agent.log" 2>&1
	' &
	pid=$!
	echo "$pid" >"$prefix/agent.pid"
	i=0
	while [ "$i" -lt $((ready_seconds * 10)) ]; do
		alive "$pid" || break
		if [ -f "$prefix/ready" ]; then
			say "$(readlink "$prefix/current") is running (pid $pid)"
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
	say "$(readlink "$prefix/current") exited or was not ready within ${ready_seconds}s; its log ends:" >&2
	tail -n 3 "$prefix/agent.log" >&2 || true
	return 1
}

behaviour=$(awk -v v="$version" '$1 == v {print $2}' "$payload/versions")
mkdir -p "$prefix/versions"
case $action in
install | update)
	[ -n "$behaviour" ] || fail "this installer has no version $version (it has: $(awk '!/^#/ {printf "%s ", $1}' "$payload/versions"))"
	before=$(readlink "$prefix/current" 2>/dev/null || true)
	fresh=true
	[ ! -d "$prefix/versions/$version" ] || fresh=false
	mkdir -p "$prefix/versions/$version"
	cp "$payload/agent" "$prefix/versions/$version/agent"
	chmod 0755 "$prefix/versions/$version/agent"
	printf 'AGENT_NAME=sample-agent\nAGENT_VERSION=%s\nAGENT_BEHAVIOUR=%s\nAGENT_PREFIX=%s\nAGENT_READY_FILE=%s\n' \
		"$version" "$behaviour" "$prefix" "$prefix/ready" >"$prefix/versions/$version/agent.env"
	stop
	ln -sfn "versions/$version" "$prefix/current"
	if start; then
		case $action in install) done=installed ;; *) done=updated ;; esac
		say "$done $version (was: ${previous:-none})"
		exit 0
	fi
	# Undo: the host as it was found.
	stop
	[ "$fresh" = false ] || rm -rf "${prefix:?}/versions/$version"
	if [ -n "$before" ] && [ "$before" != "versions/$version" ]; then
		ln -sfn "$before" "$prefix/current"
		start || say "the previous version $before did not start again either" >&2
		fail "$action to $version failed; $before runs again"
	fi
	rm -f "$prefix/current"
	fail "$action to $version failed; nothing is installed"
	;;
rollback)
	[ -d "$prefix/versions/$version" ] || fail "version $version is not installed here: nothing to roll back to"
	stop
	ln -sfn "versions/$version" "$prefix/current"
	start || fail "rolled back to $version, which did not start"
	if [ -n "$previous" ] && [ "$previous" != "$version" ]; then
		rm -rf "${prefix:?}/versions/$previous"
		say "removed $previous"
	fi
	say "rolled back to $version"
	;;
*)
	fail "unknown action $action (install, update or rollback)"
	;;
esac
