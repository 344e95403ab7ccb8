# nodeops: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
NODES ?= 10
export NODES
BIN = $(shell hack/k8s-binaries.sh dir)
KUBECONFIG_LOCAL := $(CURDIR)/.local-cluster/kubeconfig
KUBECTL = $(BIN)/kubectl --kubeconfig $(KUBECONFIG_LOCAL)

.PHONY: demo test faults bench lint k8s-binaries cluster-up cluster-down install-crds run crds build chart-lint plugin krew

## demo: local control plane with simulated nodes, CRDs, the operator, the samples.
demo:
	hack/demo.sh

## test: formatting, lints, unit tests and end-to-end tests against the local control plane.
test:
	hack/test.sh

## faults: the fault suite (operator kills, apiserver/etcd restarts, 410 Gone, conflicting
## writers, secrets) on a control plane of its own; see docs/reliability.md.
faults:
	hack/faults.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

## k8s-binaries: build (once, cached in ~/.cache/nodeops) etcd, kube-*, kubectl, kwok.
k8s-binaries:
	hack/k8s-binaries.sh

cluster-up:
	hack/cluster-up.sh

cluster-down:
	hack/cluster-down.sh

install-crds: cluster-up
	$(KUBECTL) apply --server-side --field-manager nodeops-crds -f crds/
	$(KUBECTL) wait --for=condition=Established crd -l app.kubernetes.io/part-of=nodeops --timeout=60s

## run: the operator in the foreground against the local control plane.
run: install-crds build
	KUBECONFIG=$(KUBECONFIG_LOCAL) target/debug/nodeops

build:
	cargo build --bins

## plugin: install `kubectl nodeops` (get, logs, with completion) into PLUGIN_DIR
## (default ~/.local/bin, which must be on PATH).
PLUGIN_DIR ?= $(HOME)/.local/bin
plugin:
	cargo build --release --bin nodeops
	hack/install-plugin.sh $(PLUGIN_DIR) target/release/nodeops

## krew: the plugin's krew archive for this machine's platform and plugins/krew/nodeops.yaml
## rendered for it, in target/krew/ (PLUGIN_VERSION: default v<Cargo.toml's version>);
## `kubectl krew install --manifest=... --archive=...` installs it (docs/install.md).
PLUGIN_VERSION ?= v$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
krew:
	cargo build --release --bin nodeops
	hack/krew-package.sh $(PLUGIN_VERSION) target/krew target/release/nodeops

## crds: regenerate crds/ from the Rust types, and its copies in the Helm chart and kustomize.
crds:
	cargo run -q --bin crdgen -- crds
	for d in charts/nodeops/crds config/crd/bases; do rm -f $$d/*.yaml && cp crds/*.yaml $$d/ || exit 1; done

## chart-lint: helm lint and helm template of charts/nodeops (helm built once by hack/helm.sh).
chart-lint:
	HELM=$$(hack/helm.sh) && $$HELM lint --strict charts/nodeops && $$HELM template nodeops charts/nodeops --namespace nodeops-system >/dev/null

## bench: fan-out and schedule lag beside Kubernetes' own controllers, 3 runs of each, with the
## operator built as the image ships it (static musl), on a control plane of its own
## (BENCH_NODES simulated nodes, default 1000; shifted ports), stopped on exit.
bench:
	hack/bench.sh
