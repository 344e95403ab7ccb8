# syntax=docker/dockerfile:1
# The operator image: the static `nodeops` binary on distroless/static (CA certificates,
# tzdata, /etc/passwd with the nonroot user 65532; no shell, no package manager).
#
#   docker build -t nodeops.local/nodeops:v0.1.0 .
#
# The builder runs on the target platform (buildx --platform linux/arm64 builds natively
# under emulation), so the musl target is the builder's own architecture.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
# musl-gcc: ring (kube's and russh's TLS and crypto) compiles C and assembly.
RUN apt-get update \
	&& apt-get install -y --no-install-recommends musl-tools \
	&& rm -rf /var/lib/apt/lists/*
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
# Cargo.toml declares the bench target, so benches/ must be there for cargo to load it.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
	--mount=type=cache,target=/src/target \
	target="$(uname -m)-unknown-linux-musl" \
	&& env "CC_$(uname -m)_unknown_linux_musl=musl-gcc" CARGO_PROFILE_RELEASE_STRIP=symbols \
		cargo build --release --locked --target "$target" --bin nodeops \
	&& install -D -m 0755 "target/$target/release/nodeops" /out/nodeops

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /out/nodeops /nodeops
USER 65532:65532
ENTRYPOINT ["/nodeops"]
