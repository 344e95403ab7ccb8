#!/usr/bin/env bash
# Installs `kubectl nodeops`: the nodeops binary as kubectl-nodeops in DIR (kubectl runs
# any kubectl-* on PATH as a plugin), and kubectl_complete-nodeops, which kubectl 1.26+
# runs to complete `kubectl nodeops ...` (cobra's protocol: candidates, then :directive).
# hack/krew-package.sh packs what it installs into the krew archive.
#
#   hack/install-plugin.sh DIR [BINARY]     (BINARY: default target/release/nodeops)
set -euo pipefail
dir=${1:?usage: hack/install-plugin.sh DIR [BINARY]}
bin=${2:-target/release/nodeops}
[ -x "$bin" ] || { echo "install-plugin: $bin is not an executable (cargo build --release --bin nodeops)" >&2; exit 1; }
mkdir -p "$dir"
install -m 0755 "$bin" "$dir/kubectl-nodeops"
cat >"$dir/kubectl_complete-nodeops" <<'SCRIPT'
#!/bin/sh
# kubectl runs this to complete `kubectl nodeops ...`.
exec kubectl-nodeops __complete "$@"
SCRIPT
chmod 0755 "$dir/kubectl_complete-nodeops"
echo "installed kubectl-nodeops and kubectl_complete-nodeops in $dir"
case ":$PATH:" in *":$dir:"*) ;; *) echo "add $dir to PATH to use 'kubectl nodeops'" ;; esac
