#!/usr/bin/env bash
# Packs `kubectl nodeops` for krew: the release archive of one platform and the manifest
# plugins/krew/nodeops.yaml rendered for it.
#
#   hack/krew-package.sh VERSION OUTDIR [BINARY]     (BINARY: default target/release/nodeops)
#
# OUTDIR/nodeops_<VERSION>_<os>_<arch>.tar.gz holds what hack/install-plugin.sh installs
# (kubectl-nodeops, kubectl_complete-nodeops; it writes them, so there is one copy of the
# completion script) and LICENSE when the repository has one. The platform is this
# machine's, or PLATFORM=<os>_<arch> for a BINARY built for another one.
#
# OUTDIR/nodeops.yaml is the template rendered as krew-release-bot renders it on a release
# tag VERSION: the tag for each .TagName action, and for each addURIAndSha line the archive's
# release URL and the sha256 of the archive of that name in OUTDIR. The URLs stay the
# release's (krew refuses file:// URIs): install from the local archive with
#
#   kubectl krew install --manifest=OUTDIR/nodeops.yaml --archive=OUTDIR/nodeops_..._.tar.gz
#
# which checks the archive against the manifest's sha256. A platform whose archive is not
# in OUTDIR gets the sha256 of nothing (of an empty file) and a warning: such a manifest installs
# only on the platforms packed here, and is for testing, never for the plugin index.
# Prints the archive's path, then the manifest's.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: hack/krew-package.sh VERSION OUTDIR [BINARY]"
version=${1:?$usage}
out=${2:?$usage}
bin=${3:-target/release/nodeops}
template="$ROOT/plugins/krew/nodeops.yaml"

log() { printf '[krew-package] %s\n' "$*" >&2; }

# krew wants a semantic version with its v; krew-release-bot's tags are such.
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$ ]] || {
	log "VERSION must be a release tag like v1.2.3, not '$version'"
	exit 1
}
if [ -z "${PLATFORM:-}" ]; then
	os=$(uname -s | tr '[:upper:]' '[:lower:]')
	case $(uname -m) in
	x86_64 | amd64) arch=amd64 ;;
	aarch64 | arm64) arch=arm64 ;;
	*) log "no krew platform for the machine $(uname -m): set PLATFORM=<os>_<arch>"; exit 1 ;;
	esac
	PLATFORM="${os}_$arch"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
archive="$out/nodeops_${version}_$PLATFORM.tar.gz"

stage=$(mktemp -d)
trap 'rm -rf "$stage" "$out/nodeops.yaml.tmp"' EXIT
"$ROOT/hack/install-plugin.sh" "$stage" "$bin" >/dev/null
[ ! -f "$ROOT/LICENSE" ] || cp "$ROOT/LICENSE" "$stage/"
# The files at the archive's top (the manifest's `from:`), in a stable order, owner and time.
mapfile -t files < <(cd "$stage" && ls -A)
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - "${files[@]}" |
	gzip -n >"$archive"
log "packed ${files[*]} into $archive"

# The renderer: the two template functions the manifest uses, as krew-release-bot defines
# them; any other action is refused rather than left in the output.
tag() {
	local s=$1
	while [[ $s =~ ^(.*)\{\{\ *\.TagName\ *\}\}(.*)$ ]]; do
		s="${BASH_REMATCH[1]}$version${BASH_REMATCH[2]}"
	done
	printf '%s' "$s"
}
call='^(.*)\{\{ *addURIAndSha +"([^"]*)" +\.TagName *\}\}(.*)$'
render() {
	local line n=0 url file sha
	while IFS= read -r line || [ -n "$line" ]; do
		n=$((n + 1))
		if [[ $line =~ $call ]]; then
			local before=${BASH_REMATCH[1]} after=${BASH_REMATCH[3]}
			url=$(tag "${BASH_REMATCH[2]}")
			file="$out/${url##*/}"
			if [ -f "$file" ]; then
				sha=$(sha256sum "$file" | cut -d' ' -f1)
			else
				log "warning: no $file for $url: its sha256 is that of nothing"
				sha=$(sha256sum </dev/null | cut -d' ' -f1)
			fi
			# The bot's own output: `sha256:` on a line of its own, after 4 spaces.
			line="${before}uri: $url"$'\n'"    sha256: $sha$after"
		fi
		line=$(tag "$line")
		if [[ $line == *'{{'* ]]; then
			log "$template:$n: a template action the renderer does not know: $line"
			return 1
		fi
		printf '%s\n' "$line"
	done <"$template"
}
render >"$out/nodeops.yaml.tmp"
mv "$out/nodeops.yaml.tmp" "$out/nodeops.yaml"
log "rendered $out/nodeops.yaml; install it with:"
log "  kubectl krew install --manifest=$out/nodeops.yaml --archive=$archive"
echo "$archive"
echo "$out/nodeops.yaml"
