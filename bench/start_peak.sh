#!/usr/bin/env bash
# start_peak.sh BIN N [SAMPLES]: the agent's memory over its start on N files, each
# written a line a second (bench/node_writer.py), into a fresh tansu broker (memory
# storage, a topic of 4 partitions, lz4, as bench/node.sh ships). From launch, every
# 50 ms for SAMPLES samples (default 60, about 4 s): seconds since launch, VmRSS and
# VmHWM (MiB), anonymous and file-backed RSS (MiB) and threads; then the time from
# "connected to kafka" to the topic's limit being known ("kept within", the sink's first
# DescribeConfigs), which decided the start's peak before 579e4b5 (BENCHMARKS.md
# "10,000 files: the start's peak was every file's batch waiting for the topic's limit").
set -euo pipefail
BIN=$(realpath "$1") N=$2 SAMPLES=${3:-60}
REPO=$(cd "$(dirname "$0")/.." && pwd)
tansu=$(cd "$REPO" && scripts/deps.sh --print-tansu)
. "$REPO/bench/lib.sh"
DIR=$(mktemp -d "${BENCH_DIR:-/tmp}/peak.XXXX")
writer="" agent=""
trap 'kill $writer $agent 2>/dev/null || true; wait $writer $agent 2>/dev/null || true; stop_broker; rm -rf "$DIR"' EXIT
start_broker "$DIR"
"$tansu" topic create scale --broker "tcp://127.0.0.1:$kport" --partitions 4 >/dev/null
mkdir -p "$DIR/logs"
python3 "$REPO/bench/node_writer.py" "$DIR/logs" "$N" 1 --writes-per-s 1 --ready "$DIR/ready" >"$DIR/writer.log" 2>&1 &
writer=$!
until [[ -e $DIR/ready ]]; do sleep 0.05; done
printf 'node: bench\nstate_dir: %s/state\nlogs: [{path: "%s/logs/*.log", topic: scale}]\nsink:\n  kind: kafka\n  kafka: {brokers: ["127.0.0.1:%s"], compression: lz4}\nhttp: {listen: "127.0.0.1:%s"}\ntail: {max_open_files: %s}\n' \
  "$DIR" "$DIR" "$kport" "$(port)" "$((N + 100))" >"$DIR/c.yaml"
t0=$(now)
"$BIN" run --config "$DIR/c.yaml" >"$DIR/agent.log" 2>&1 &
agent=$!
for _ in $(seq "$SAMPLES"); do
  awk -v t="$(echo "$(now) - $t0" | bc)" '
    /^VmRSS/ {r = $2} /^VmHWM/ {h = $2} /^RssAnon/ {a = $2} /^RssFile/ {f = $2} /^Threads/ {n = $2}
    END {printf "%.2f s rss=%d hwm=%d anon=%d file=%d threads=%d\n", t, r / 1024, h / 1024, a / 1024, f / 1024, n}' \
    "/proc/$agent/status"
  sleep 0.05
done
awk '/connected to kafka/ {c = $1} /kept within/ && !k {k = $1}
  END {
    split(c, a, ":"); split(k, b, ":")
    if (c && k) printf "topic limit known %.2f s after connecting\n", b[3] - a[3]
  }' "$DIR/agent.log"
