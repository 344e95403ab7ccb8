#!/usr/bin/env bash
# Installs the Debian packages named that are not installed yet (as root, or through sudo).
#   hack/need-pkgs.sh containerd runc ...
set -euo pipefail
missing=()
for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
printf '[need-pkgs] installing %s from Debian\n' "${missing[*]}" >&2
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${missing[*]}" >&2
