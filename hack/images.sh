#!/usr/bin/env bash
# Builds the images the real node runs, without a registry or a Docker engine, as OCI
# image layouts written by umoci (Debian's package: it builds an image from a root
# filesystem on disk, needs no daemon and writes the OCI format containerd imports):
#
#   nodeops.local/nodeops-exec:<sha>  the runner: the static musl `nodeops-exec`, built by the
#                                     same cargo command as Dockerfile.exec's build step
#   nodeops.local/nodeops:<sha>       the operator: the static musl `nodeops` (Dockerfile's
#                                     build step) with /etc/passwd, user 65532
#   nodeops.local/toolbox:<sha>       Container mode's default image: Debian's static busybox
#                                     with its applets, /etc/passwd and /tmp
#   nodeops.local/pause:<k8s version> the pod sandbox: Kubernetes' own pause.c from the
#                                     k8s.io/kubernetes module, compiled statically
#   nodeops.local/sample-agent:<ver>  the sample node agent (images/sample-agent/agent) on the
#                                     toolbox, one per line of images/sample-agent/versions:
#                                     1.0.0 1.1.0 2.0.0, 9.0.0 (fails to start) and 9.1.0
#                                     (crashes after 3 s)
#   nodeops.local/sample-agent-installer:<sha>
#                                     its HostInstaller image: nothing but /payload (the
#                                     agent, install.sh and the versions list), staged on the
#                                     host by the runner (docs/installers.md)
#
# Tags are content hashes (the agent's are its versions), so a rebuilt binary is a new image. Layouts are cached in
# $NODEOPS_CACHE/images. Prints `NAME=REF` lines and `NAME_ARCHIVE=PATH` (an OCI archive).
# The musl builds share one cargo target directory in the cache ($NODEOPS_CACHE/target-musl,
# or NODEOPS_MUSL_TARGET_DIR), so a fresh clone (CI) reuses them.
#   hack/images.sh            build what is missing, print the refs
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE="${NODEOPS_CACHE:-$HOME/.cache/nodeops}"
K8S_VERSION="${K8S_VERSION:-v1.35.4}"
OUT="$CACHE/images"
ARCH=$(uname -m)
MUSL_TARGET="$ARCH-unknown-linux-musl"
MUSL_TARGET_DIR="${NODEOPS_MUSL_TARGET_DIR:-$CACHE/target-musl}"
mkdir -p "$OUT"

log() { printf '[images] %s\n' "$*" >&2; }

"$ROOT/hack/need-pkgs.sh" umoci busybox-static musl-tools gcc libc6-dev

# image NAME TAG ROOTFS ENTRYPOINT...: an OCI archive of ROOTFS (one layer) with the
# entrypoint, the variables in IMAGE_ENV and the user IMAGE_USER (default: root), at
# $OUT/NAME-TAG[-IMAGE_KEY].tar; nothing is done when it exists.
IMAGE_ENV=()
IMAGE_KEY=
IMAGE_USER=
image() {
	local name=$1 tag=$2 rootfs=$3
	shift 3
	local archive="$OUT/$name-$tag${IMAGE_KEY:+-$IMAGE_KEY}.tar"
	if [ ! -f "$archive" ]; then
		local work
		work=$(mktemp -d "$OUT/.build-XXXXXX")
		umoci init --layout "$work/layout"
		umoci new --image "$work/layout:$tag"
		umoci unpack --image "$work/layout:$tag" "$work/bundle" >/dev/null
		cp -a "$rootfs/." "$work/bundle/rootfs/"
		umoci repack --image "$work/layout:$tag" "$work/bundle" >/dev/null
		local ep=() e
		for e in "$@"; do ep+=(--config.entrypoint "$e"); done
		for e in "${IMAGE_ENV[@]}"; do ep+=(--config.env "$e"); done
		[ -z "$IMAGE_USER" ] || ep+=(--config.user "$IMAGE_USER")
		umoci config --image "$work/layout:$tag" "${ep[@]}" \
			--config.workingdir / --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			--author nodeops --architecture "$(dpkg --print-architecture)" --os linux
		umoci gc --layout "$work/layout"
		tar -C "$work/layout" -cf "$archive.tmp" .
		mv "$archive.tmp" "$archive"
		rm -rf "$work"
		log "built $name:$tag"
	fi
	echo "$archive"
}

# musl_build ARGS...: a static release binary of this crate, as the Dockerfiles build it
# (musl, symbols stripped), into $MUSL_TARGET_DIR/$MUSL_TARGET/release/.
musl_build() {
	(cd "$ROOT" && env "CC_${ARCH}_unknown_linux_musl=musl-gcc" CARGO_PROFILE_RELEASE_STRIP=symbols \
		CARGO_TARGET_DIR="$MUSL_TARGET_DIR" cargo build -q --release --locked --target "$MUSL_TARGET" "$@" >&2)
}

# --- the runner: as Dockerfile.exec builds it (musl, release, symbols stripped).
rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET" || rustup target add "$MUSL_TARGET" >&2
musl_build --no-default-features --bin nodeops-exec
runner_bin="$MUSL_TARGET_DIR/$MUSL_TARGET/release/nodeops-exec"
runner_tag="sha-$(sha256sum "$runner_bin" | cut -c1-12)"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/runner"
install -m 0755 "$runner_bin" "$stage/runner/nodeops-exec"
runner_archive=$(image nodeops-exec "$runner_tag" "$stage/runner" /nodeops-exec)

# --- the operator: as Dockerfile builds it (the full-feature `nodeops`, musl, stripped), on
# a root filesystem with what distroless/static's nonroot gives it and it uses: /etc/passwd
# and /etc/group with nonroot (65532) and its home, /tmp. No CA certificates (in-cluster,
# the client trusts only the ServiceAccount's CA) and no tzdata (jiff bundles the time-zone
# database).
musl_build --bin nodeops
operator_bin="$MUSL_TARGET_DIR/$MUSL_TARGET/release/nodeops"
operator_tag="sha-$(sha256sum "$operator_bin" | cut -c1-12)"
o="$stage/operator"
mkdir -p "$o/etc" "$o/tmp" "$o/home/nonroot"
chmod 1777 "$o/tmp"
chown 65532:65532 "$o/home/nonroot"
install -m 0755 "$operator_bin" "$o/nodeops"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$o/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$o/etc/group"
IMAGE_USER=65532:65532
# The tag names the binary; the key, the rest of the image (a changed passwd is a new archive).
IMAGE_KEY="$(cat "$o/etc/passwd" "$o/etc/group" - <<<"$IMAGE_USER" | sha256sum | cut -c1-12)"
operator_archive=$(image nodeops "$operator_tag" "$o" /nodeops)
IMAGE_USER=
IMAGE_KEY=

# --- the toolbox: busybox and its applets, a passwd with root and nobody.
bb=/bin/busybox
toolbox_tag="sha-$(sha256sum "$bb" | cut -c1-12)"
t="$stage/toolbox"
{
	mkdir -p "$t/bin" "$t/etc" "$t/root" "$t/tmp" "$t/usr/bin" "$t/usr/sbin" "$t/sbin"
	chmod 1777 "$t/tmp"
	install -m 0755 "$bb" "$t/bin/busybox"
	for applet in $("$bb" --list); do
		[ -e "$t/bin/$applet" ] || ln -s busybox "$t/bin/$applet"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$t/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$t/etc/group"
}
toolbox_archive=$(image toolbox "$toolbox_tag" "$stage/toolbox" /bin/sh)

# --- pause: Kubernetes' own sandbox process, from the module the binaries are built from.
pause_tag="$K8S_VERSION"
if [ ! -f "$OUT/pause-$pause_tag.tar" ]; then
	dir=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	src="$dir/build/pause/linux/pause.c"
	[ -f "$src" ] || { log "no pause.c in k8s.io/kubernetes@$K8S_VERSION ($src)"; exit 1; }
	mkdir -p "$stage/pause"
	gcc -Os -static -Wall -Werror -DVERSION="$K8S_VERSION-nodeops" -o "$stage/pause/pause" "$src"
	strip "$stage/pause/pause"
fi
pause_archive=$(image pause "$pause_tag" "$stage/pause" /pause)

# --- the sample agent (images/sample-agent/agent) on the toolbox, one image per version;
# AGENT_BEHAVIOUR makes 9.0.0 fail to start and 9.1.0 crash, for failed rollouts.
agent_src="$ROOT/images/sample-agent/agent"
mkdir -p "$stage/agent"
cp -a "$t/." "$stage/agent/"
install -m 0755 "$agent_src" "$stage/agent/agent"
IMAGE_KEY="$(cat "$agent_src" "$bb" | sha256sum | cut -c1-12)"
agent_archives=()
while read -r v behaviour; do
	case $v in '' | '#'*) continue ;; esac
	IMAGE_ENV=(AGENT_NAME=sample-agent "AGENT_VERSION=$v" "AGENT_BEHAVIOUR=$behaviour")
	agent_archives+=("$(image sample-agent "$v" "$stage/agent" /agent)")
done <"$ROOT/images/sample-agent/versions"
IMAGE_ENV=()
IMAGE_KEY=

# --- the sample agent's installer image: only /payload, no shell, no runner (the installer
# Job copies the runner in and stages /payload on the host).
mkdir -p "$stage/installer/payload"
for f in agent install.sh versions; do
	install -m 0755 "$ROOT/images/sample-agent/$f" "$stage/installer/payload/$f"
done
chmod 0644 "$stage/installer/payload/versions"
installer_tag="sha-$(cat "$stage/installer/payload/"* | sha256sum | cut -c1-12)"
installer_archive=$(image sample-agent-installer "$installer_tag" "$stage/installer" /payload/install.sh)

echo "RUNNER_IMAGE=nodeops.local/nodeops-exec:$runner_tag"
echo "RUNNER_IMAGE_ARCHIVE=$runner_archive"
echo "OPERATOR_IMAGE=nodeops.local/nodeops:$operator_tag"
echo "OPERATOR_IMAGE_ARCHIVE=$operator_archive"
echo "TOOLBOX_IMAGE=nodeops.local/toolbox:$toolbox_tag"
echo "TOOLBOX_IMAGE_ARCHIVE=$toolbox_archive"
echo "PAUSE_IMAGE=nodeops.local/pause:$pause_tag"
echo "PAUSE_IMAGE_ARCHIVE=$pause_archive"
echo "SAMPLE_AGENT_IMAGE=nodeops.local/sample-agent"
# Colon-separated: the file is sourced by hack/real-node.sh.
(IFS=:; echo "SAMPLE_AGENT_ARCHIVES=${agent_archives[*]}")
echo "SAMPLE_AGENT_INSTALLER_IMAGE=nodeops.local/sample-agent-installer:$installer_tag"
echo "SAMPLE_AGENT_INSTALLER_IMAGE_ARCHIVE=$installer_archive"
