# syntax=docker/dockerfile:1
# sealcast: one static-ish binary on a slim Debian base, run as an unprivileged user.
# The build step is the same command CI runs (.ci/run: cargo build --release --locked).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The workspace's member manifests and sources must be present for cargo to load the
# workspace, although `--bin sealcast` compiles none of them.
COPY clients/rust/Cargo.toml ./clients/rust/
COPY clients/rust/src ./clients/rust/src
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin sealcast

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sealcast
COPY --from=build /src/target/release/sealcast /usr/local/bin/sealcast
COPY deploy/sealcast.example.toml /etc/sealcast/sealcast.toml
USER 10001:10001
# Inside a container the relay must listen on all interfaces to be reachable.
ENV SEALCAST_LISTEN=0.0.0.0:8080 SEALCAST_ADMIN_LISTEN=0.0.0.0:9090
# 8080: WebSockets and the publish API. 9090: /metrics, /healthz, /readyz (keep it private).
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sealcast"]
CMD ["serve", "--config", "/etc/sealcast/sealcast.toml"]
