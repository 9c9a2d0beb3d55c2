# syntax=docker/dockerfile:1
# logcatch container image: build with cargo, run on a minimal Debian.
#
#   podman build -t logcatch:dev .        (or: docker build -t logcatch:dev .)
#
# The dependency layer is built from Cargo.toml, Cargo.lock and vendor/ alone, so editing
# src/ rebuilds only the logcatch crate.

FROM docker.io/library/rust:1-bookworm AS build
# etcd-client's build script runs protoc and imports google/protobuf/*.proto.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# rskafka is a [patch.crates-io] path dependency.
COPY vendor ./vendor
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/.fingerprint/logcatch-* target/release/deps/logcatch-* target/release/deps/liblogcatch-*
COPY src ./src
RUN cargo build --release --locked --bin logcatch \
 && install -D -m 0755 target/release/logcatch /out/logcatch

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Non-root by default. Host logs that only root can read (e.g. /var/log/syslog) need the
# DaemonSet's securityContext (runAsUser: 0 with only CAP_DAC_READ_SEARCH): see deploy/.
RUN groupadd --system --gid 10001 logcatch \
 && useradd --system --uid 10001 --gid logcatch --home-dir /var/lib/logcatch --shell /usr/sbin/nologin logcatch \
 && install -d -o logcatch -g logcatch -m 0750 /var/lib/logcatch
COPY --from=build /out/logcatch /usr/local/bin/logcatch
COPY config/container.yaml /etc/logcatch/logcatch.yaml
USER 10001:10001
WORKDIR /var/lib/logcatch
EXPOSE 9733
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/logcatch", "run", "--config", "/etc/logcatch/logcatch.yaml"]
