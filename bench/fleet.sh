#!/usr/bin/env bash
# `make bench-fleet` (issue #24 §4): the declaration control plane at fleet scale. For each
# row AGENTS:KEYS of ROWS, a fresh single-member etcd (the Debian `etcd`, default flags)
# and examples/fleet.rs: AGENTS simulated agents in one process, each with its own node
# name and etcd client, the real etcd source and status writer, all watching the same KEYS
# keys; one of them is changed CHANGES times. Prints and appends to
# bench/results/fleet.txt one line per row (see examples/fleet.rs for the fields).
# Environment: ROWS (default "100:1 1000:1 2000:1 100:100 1000:100"), CHANGES (5),
# STEADY_S (30), BENCH_DIR (/tmp/logcatch-bench), FLEET_OUT (bench/results/fleet.txt),
# AGENT_STATE (/dev/shm: the agents' state dirs; each writes its etcd snapshot cache with
# an fsync at every change, which on a real fleet is one disk per node, but here would
# put thousands of fsyncs in a row on this machine's one disk and time that, not etcd).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-"100:1 1000:1 2000:1 100:100 1000:100"}
OUT=${FLEET_OUT:-bench/results/fleet.txt}
mkdir -p "$(dirname "$OUT")" "${BENCH_DIR:-/tmp/logcatch-bench}"
cargo build --release --quiet --example fleet
fleet=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/fleet
. bench/lib.sh
command -v etcd >/dev/null || { echo "etcd not found: run scripts/deps.sh (Debian etcd-server)" >&2; exit 1; }
# Every agent holds one connection (and the driver's watch a few fds per agent).
ulimit -n "$(ulimit -Hn)"
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) etcd $(etcd --version | awk '/etcd Version/{print $3}') nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
for row in $ROWS; do
  agents=${row%:*} keys=${row#*:}
  dir=$(mktemp -d "${BENCH_DIR:-/tmp/logcatch-bench}/fleet.XXXX")
  cport=$(port) pport=$(port)
  etcd --name fleet --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "fleet=http://127.0.0.1:$pport" >"$dir/etcd.log" 2>&1 &
  etcd_pid=$!
  trap 'kill $etcd_pid 2>/dev/null || true; rm -rf "$dir"' EXIT
  until etcdctl --endpoints "127.0.0.1:$cport" endpoint health >/dev/null 2>&1; do sleep 0.1; done
  agent_state=$(mktemp -d "${AGENT_STATE:-/dev/shm}/logcatch-fleet.XXXX")
  line=$("$fleet" "127.0.0.1:$cport" "$agents" "$keys" "${CHANGES:-5}" "${STEADY_S:-30}" "$agent_state" 2>"$dir/fleet.log") ||
    { echo "fleet $row failed: $(tail -5 "$dir/fleet.log")" >&2; rm -rf "$agent_state"; exit 1; }
  rm -rf "$agent_state"
  echo "$line load=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT"
  kill "$etcd_pid"; wait "$etcd_pid" 2>/dev/null || true
  rm -rf "$dir"
done
