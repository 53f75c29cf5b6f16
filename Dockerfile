# syntax=docker/dockerfile:1
# sealcast: one static-ish binary on a slim Debian base, run as an unprivileged user.
# The build step is the same command CI runs (.ci/run: cargo build --release --locked).

FROM rust:1.95-bookworm AS build
# The commit shown by sealcast_build_info{commit}: docker build --build-arg SEALCAST_COMMIT=$(git rev-parse --short=12 HEAD)
ARG SEALCAST_COMMIT=unknown
ENV SEALCAST_COMMIT=${SEALCAST_COMMIT}
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The workspace's member manifests and sources must be present for cargo to load the
# workspace, although `--bin sealcast` compiles none of them.
COPY clients/rust/Cargo.toml ./clients/rust/
COPY clients/rust/src ./clients/rust/src
COPY tools/load/Cargo.toml ./tools/load/
COPY tools/load/src ./tools/load/src
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin sealcast

FROM debian:bookworm-slim
# Pass the repository's address (and the version and commit) at build time; the image
# does not guess where it was built from.
ARG SEALCAST_SOURCE=unset
ARG SEALCAST_VERSION=0.1.0
ARG SEALCAST_COMMIT=unknown
LABEL org.opencontainers.image.title="sealcast" \
      org.opencontainers.image.description="Realtime relay for end-to-end encrypted app events" \
      org.opencontainers.image.source="${SEALCAST_SOURCE}" \
      org.opencontainers.image.version="${SEALCAST_VERSION}" \
      org.opencontainers.image.revision="${SEALCAST_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sealcast
COPY --from=build /src/target/release/sealcast /usr/local/bin/sealcast
COPY deploy/sealcast.example.toml /etc/sealcast/sealcast.toml
USER 10001:10001
# Inside a container the relay must listen on all interfaces to be reachable.
ENV SEALCAST_LISTEN=0.0.0.0:8080 SEALCAST_ADMIN_LISTEN=0.0.0.0:9090
# 8080: WebSockets and the publish API. 9090: /metrics, /healthz, /readyz (keep it private).
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
# Exec form: the image has no shell and no curl; the binary probes its own admin port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/sealcast", "health", "--url", "http://127.0.0.1:9090/readyz"]
# File descriptors: one per connection plus ~64. The relay raises its soft limit to the
# hard one at start; give the container a hard limit above your target connections
# (docker run --ulimit nofile=1048576:1048576, or the runtime's default in Kubernetes).
# Memory: ~2.2 KB per idle connection plus history ([history] max_bytes, 256 MiB by
# default); see docs/operations.md for sizing the container's memory limit.
ENTRYPOINT ["/usr/local/bin/sealcast"]
CMD ["serve", "--config", "/etc/sealcast/sealcast.toml"]
