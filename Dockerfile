# Tern's container image: every Tern program in one small image, run as a non-root user.
#
#   docker build -t tern:dev .
#   docker run --rm tern:dev tern-planner --help
#
# The command picks the program: tern-planner, tern-failover, tern-reprotect, tern-cleanup,
# tern (the CLI, also `tern bus ensure` for the bootstrap step) or tern-asr-sim. There is no
# entrypoint script and nothing needs a shell. Settings come from TERN_* variables and files
# mounted read-only (docs/deploy.md); the image itself holds no configuration and no secret.
#
# BuildKit (Docker's default builder since 23.0) is required for the cache mounts: the crates.io
# registry and the target directory survive between builds, so a rebuild after a code change
# compiles only the crates that changed. No `# syntax=` line on purpose: the builder's own
# Dockerfile frontend is used, so a build needs no image beyond the two below.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Only what the build reads: the workspace manifests, the crates, the protobuf contracts that
# tern-proto compiles, and tests/faults (a workspace member cargo must be able to load).
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY crates crates
COPY tests/faults tests/faults
# The target dir is a cache mount, gone when this step ends: the binaries are copied out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
        -p tern-planner -p tern-failover -p tern-reprotect -p tern-cleanup -p tern-cli -p tern-asr-sim \
    && mkdir -p /out \
    && for bin in tern-planner tern-failover tern-reprotect tern-cleanup tern tern-asr-sim; do \
           install -m 0755 "target/release/$bin" /out/; \
       done

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tern" \
      org.opencontainers.image.description="Tern: failback orchestration for Azure VMs protected by Azure Site Recovery" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tern-dr/tern"
# ca-certificates: ARM, Entra ID and NATS over TLS. libssl3: azure_identity reads PKCS#12 client
# certificates through OpenSSL, so the binaries link it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log \
    && groupadd --system --gid 65532 tern \
    && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
           --shell /usr/sbin/nologin tern
COPY --from=build /out/ /usr/local/bin/
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
CMD ["tern", "--help"]
