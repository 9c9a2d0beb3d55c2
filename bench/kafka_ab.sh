#!/usr/bin/env bash
# A/B of file → Kafka throughput (default config: lz4, headers) against one fresh tansu
# broker per round: the raw rskafka ceiling (examples/raw_produce.rs) and each BIN in turn,
# wall time from start until the last byte of FILE is acknowledged, and the agent's CPU.
# RAW_ARGS are added to raw_produce's ("--headers bench --encoded": the same records as
# the agent's, pre-encoded). A BIN named fluent-bit runs Fluent Bit's tail → kafka on the
# same broker instead (bench/peers.sh: offsets DB on, timed by polling the topic; its CPU
# and peak RSS), e.g.
#   bench/kafka_ab.sh lines.log target/release/logcatch "$(scripts/bench-deps.sh --print-fluent-bit)"
# Usage: [COMP=lz4|none] [ROUNDS=3] [HEADERS=true|false] [RAW_ARGS=...] bench/kafka_ab.sh FILE BIN...
set -u
cd "$(dirname "$0")/.."
file=$1; shift
comp=${COMP:-lz4}
tansu=$(scripts/deps.sh --print-tansu) raw=${CARGO_TARGET_DIR:-target}/release/examples/raw_produce
cargo build --release --quiet --example raw_produce --example await_acked
cat "$file" >/dev/null
. bench/lib.sh
run() {
  local t c
  if [[ $(basename "$1") == fluent-bit ]]; then
    FLUENT_BIT=$1 PEERS=fluent-bit RDKAFKA_LIBDIR=$(scripts/bench-deps.sh --print-rdkafka-libdir) TANSU=$tansu \
      bench/peers.sh "$file" "127.0.0.1:$kport" "$comp" | awk '{for (i = 2; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
        printf "%.3f (cpu %.2f, rss %.0f MB)", v["seconds"], v["cpu_s"], v["rss_mb"]}'
    return
  fi
  read -r t c _ < <(TOPIC=$2 run_agent "$1" "$file" "  kind: kafka
  kafka: {brokers: [\"127.0.0.1:$kport\"], compression: $comp, create_topics: true, headers: ${HEADERS:-true}}") &&
  printf '%.3f (cpu %.2f)' "$t" "$c"
}
for r in $(seq "${ROUNDS:-3}"); do
  start_broker
  # shellcheck disable=SC2086 # RAW_ARGS is a list of arguments
  printf 'raw %s  ' "$("$raw" "127.0.0.1:$kport" "raw-$r" "$file" "$comp" ${RAW_ARGS:-})"
  i=0; for b in "$@"; do i=$((i + 1)); printf '%s %s  ' "$(basename "$b")" "$(run "$b" "ab$i-$r")"; done; echo
  stop_broker
done
