#!/usr/bin/env bash
# A/B of file → Kafka throughput (default config: lz4, headers) against one fresh tansu
# broker per round: the raw rskafka ceiling (examples/raw_produce.rs) and each BIN in turn,
# wall time from start until the last byte of FILE is acknowledged, and the agent's CPU.
# Usage: [COMP=lz4|none] [ROUNDS=3] [HEADERS=true|false] bench/kafka_ab.sh FILE BIN...
set -u
cd "$(dirname "$0")/.."
file=$1; shift
size=$(stat -c %s "$file") comp=${COMP:-lz4}
tansu=$(scripts/deps.sh --print-tansu) raw=target/release/examples/raw_produce
cargo build --release --quiet --example raw_produce
cat "$file" >/dev/null
. bench/lib.sh
run() { local bin=$1 topic=$2 work http; work=$(mktemp -d) http=$(port)
  printf 'node: bench\nstate_dir: %s/state\nlogs: [{path: %s, topic: %s}]\nsink:\n  kind: kafka\n  kafka: {brokers: ["127.0.0.1:%s"], compression: %s, create_topics: true, headers: %s}\nhttp: {listen: "127.0.0.1:%s"}\ntail: {poll_interval: 20ms}\n' \
    "$work" "$file" "$topic" "$kport" "$comp" "${HEADERS:-true}" "$http" >"$work/c.yaml"
  local s; s=$(now); "$bin" run --config "$work/c.yaml" 2>"$work/log" & local pid=$!
  until curl -sf "127.0.0.1:$http/status" 2>/dev/null | grep -q "\"offset\":$size,"; do sleep ${POLL:-0.005}; done
  local e c; e=$(now) c=$(cpu_s $pid); kill -TERM $pid; wait $pid; rm -rf "$work"
  printf '%.3f (cpu %.2f)' "$(echo "$e - $s" | bc -l)" "$c"; }
for r in $(seq "${ROUNDS:-3}"); do
  start_broker
  printf 'raw %s  ' "$("$raw" "127.0.0.1:$kport" "raw-$r" "$file" "$comp")"
  i=0; for b in "$@"; do i=$((i + 1)); printf '%s %s  ' "$(basename "$b")" "$(run "$b" "ab$i-$r")"; done; echo
  stop_broker
done
