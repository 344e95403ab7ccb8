#!/usr/bin/env bash
# `make bench`: the benchmark (benches/nodeops.rs) on a control plane of its own, never the
# shared one in .local-cluster. Builds the operator as the image ships it (the Dockerfile's
# build step: static musl, release, symbols stripped; cached in target/bench-musl), starts
# a control plane with $BENCH_NODES (default 1000) simulated nodes on ports shifted away
# from both the defaults (hack/cluster-up.sh) and the fault suite's (hack/faults.sh),
# installs the CRDs, runs the benchmark binary, which prints its tables, and stops the
# control plane on exit.
#
#   hack/bench.sh fanout            # one part: footprint, fanout, fleet or schedules;
#   hack/bench.sh fanout,fleet      # several, on one control plane
#                                   # (upgrade: not in the default set)
#   BENCH_RUNS=5 make bench         # runs of every measurement (default 3)
#   BENCH_NODES=5000 BENCH_OBJECTS=10000 hack/bench.sh footprint   # issue 19's footprint
#   NODEOPS_BENCH_OPERATOR=target/release/nodeops hack/bench.sh fanout   # another binary
#   NODEOPS_BENCH_WRAPPER=heaptrack hack/bench.sh fanout  # under a profiler (its figures)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bench_start=$(date +%s)

export CLUSTER_DIR="${BENCH_CLUSTER_DIR:-$ROOT/target/bench-cluster}"
export ETCD_PORT="${BENCH_ETCD_PORT:-25790}"
export ETCD_PEER_PORT="${BENCH_ETCD_PEER_PORT:-25800}"
export APISERVER_PORT="${BENCH_APISERVER_PORT:-18443}"
export KCM_PORT="${BENCH_KCM_PORT:-12357}"
export SCHEDULER_PORT="${BENCH_SCHEDULER_PORT:-12359}"
export KWOK_PORT="${BENCH_KWOK_PORT:-12347}"
export NODES="${BENCH_NODES:-1000}"
# Simulated nodes only: the benchmark measures the operator and the control plane.
export REAL_NODES=0
case "$CLUSTER_DIR" in
"$ROOT/.local-cluster" | "$ROOT/.fault-cluster")
	echo "refusing to run the benchmark on $CLUSTER_DIR: it belongs to the tests" >&2
	exit 1
	;;
esac
# One benchmark at a time on this control plane: a second one would stop the first one's
# (its leftovers clean-up below) and share its ports. The lock is this shell's alone: the
# commands below run with its descriptor closed.
mkdir -p "$(dirname "$CLUSTER_DIR")"
exec 9>"$CLUSTER_DIR.lock"
if ! flock -n 9; then
	echo "another hack/bench.sh is running on $CLUSTER_DIR ($CLUSTER_DIR.lock is held): wait for it to finish" >&2
	exit 1
fi

step() { printf '\n==> %s\n' "$*"; }

# What was built: the commit, and whether the working tree differed from it (read only:
# no index refresh).
if rev=$(git rev-parse --short HEAD 2>/dev/null); then
	changed=$(GIT_OPTIONAL_LOCKS=0 git status --porcelain -- src Cargo.toml Cargo.lock | wc -l)
	NODEOPS_BENCH_SOURCE="commit $rev"
	[ "$changed" -eq 0 ] || NODEOPS_BENCH_SOURCE+=" with $changed uncommitted changed files in src/, Cargo.toml, Cargo.lock"
	export NODEOPS_BENCH_SOURCE
fi

step "building the operator as the image ships it, and the benchmark"
start=$(date +%s)
if [ -z "${NODEOPS_BENCH_OPERATOR:-}" ]; then
	ARCH=$(uname -m)
	MUSL_TARGET="$ARCH-unknown-linux-musl"
	MUSL_TARGET_DIR="${NODEOPS_BENCH_MUSL_TARGET_DIR:-$ROOT/target/bench-musl}"
	hack/need-pkgs.sh musl-tools
	rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET" || rustup target add "$MUSL_TARGET"
	# The Dockerfile's build step (and hack/images.sh's), in a target directory of its own.
	build=(env "CC_${ARCH}_unknown_linux_musl=musl-gcc" CARGO_PROFILE_RELEASE_STRIP=symbols
		cargo build --release --locked --target "$MUSL_TARGET" --bin nodeops)
	CARGO_TARGET_DIR="$MUSL_TARGET_DIR" "${build[@]}" 9>&-
	export NODEOPS_BENCH_OPERATOR="$MUSL_TARGET_DIR/$MUSL_TARGET/release/nodeops"
	export NODEOPS_BENCH_OPERATOR_TARGET="$MUSL_TARGET"
	export NODEOPS_BENCH_OPERATOR_BUILD="${build[*]:1} (the Dockerfile's build step)"
fi
cargo bench --bench nodeops --no-run 9>&-
build_took=$(($(date +%s) - start))

# Leftovers of an interrupted run would only confuse this one.
hack/cluster-down.sh >/dev/null 2>&1 9>&- || true
on_exit() {
	rc=$?
	step "stopping the bench control plane"
	hack/cluster-down.sh 9>&-
	echo "hack/bench.sh took $(($(date +%s) - bench_start))s (build ${build_took}s)"
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "starting the bench control plane ($CLUSTER_DIR, $NODES simulated nodes, API on :$APISERVER_PORT, etcd on :$ETCD_PORT)"
start=$(date +%s)
hack/cluster-up.sh 9>&-
echo "control plane ready in $(($(date +%s) - start))s"
KUBECTL="$(hack/k8s-binaries.sh dir)/kubectl --kubeconfig $CLUSTER_DIR/kubeconfig"
$KUBECTL apply --server-side --field-manager nodeops-crds -f crds/ >/dev/null
$KUBECTL wait --for=condition=Established crd -l app.kubernetes.io/part-of=nodeops --timeout=60s >/dev/null

step "benchmark"
start=$(date +%s)
# The operator's pid goes where hack/cluster-down.sh looks for one, so it is ended on exit
# even if the benchmark is killed before it could stop it.
NODEOPS_TEST_KUBECONFIG="$CLUSTER_DIR/kubeconfig" NODEOPS_BENCH_PID_FILE="$CLUSTER_DIR/run/nodeops.pid" \
	NODEOPS_BENCH_RUNS="${BENCH_RUNS:-3}" NODEOPS_BENCH_OBJECTS="${BENCH_OBJECTS:-1000}" cargo bench --bench nodeops -- "$@" 9>&-
echo "benchmark took $(($(date +%s) - start))s"
