#!/usr/bin/env bash
# CPU of each of logcatch's threads (by name: the runtime's workers summed, the inotify
# event thread, kafka-network, ...) at a node load, for A/B comparisons of builds: for
# each BIN in turn, bench/node.sh runs it alone on LOADS (default 1000:10) and this
# samples /proc/PID/task/*/schedstat over WINDOW_S (default 15) seconds starting
# SKIP_S (default 12) seconds after the agent started. Prints ms of CPU a second, then
# the times a second the threads of each name were run (schedstat's timeslices: how
# often they woke).
# Usage: [LOADS=1000:10] bench/threads.sh BIN...   (alternate the order across BINs)
# Needs what bench/node.sh needs (TANSU_BIN; `make bench-deps`).
set -euo pipefail
cd "$(dirname "$0")/.."
LOADS=${LOADS:-1000:10}
SKIP_S=${SKIP_S:-12}
WINDOW_S=${WINDOW_S:-15}
[[ $# -gt 0 ]] || { echo "usage: bench/threads.sh BIN..." >&2; exit 2; }
[[ $LOADS != *" "* ]] || { echo "threads.sh: one load at a time (LOADS=$LOADS)" >&2; exit 2; }

# thread name → ns of CPU and timeslices so far, summed over threads of that name
snap() {
  for t in /proc/"$1"/task/*; do
    echo "$(tr ' ' _ <"$t/comm") $(cut -d' ' -f1,3 "$t/schedstat")"
  done | awk '{a[$1] += $2; r[$1] += $3} END {for (k in a) print k, a[k], r[k]}' | sort
}

for bin in "$@"; do
  bin=$(realpath "$bin")
  out=$(mktemp -d)
  AGENTS=logcatch BULK=0 LOADS=$LOADS WINDOW_S=$((SKIP_S + WINDOW_S + 3)) WARM_S=3 ROUNDS=1 \
    LOGCATCH_BIN=$bin BENCH_DIR="$out" bench/node.sh >"$out/node.log" 2>&1 &
  bench=$!
  pid=""
  for _ in $(seq 120); do
    pid=$(pgrep -f "^$bin run" | head -1 || true)
    [[ -z $pid ]] || break
    sleep 0.5
  done
  [[ -n $pid ]] || { echo "threads.sh: $bin did not start: $(tail -3 "$out/node.log")" >&2; exit 1; }
  sleep "$SKIP_S"
  snap "$pid" >"$out/a"
  sleep "$WINDOW_S"
  snap "$pid" >"$out/b"
  echo "$bin load=$LOADS $(join "$out/a" "$out/b" | awk -v s="$WINDOW_S" \
    '{d = ($4 - $2) / s / 1e6; t += d; printf "%s=%.2f ", $1, d; runs = runs sprintf(" %s=%.0f", $1, ($5 - $3) / s)}
     END {printf "total=%.2f ms/s; runs a second:%s", t, runs}')"
  wait "$bench" || { echo "threads.sh: bench/node.sh failed: $(tail -3 "$out/node.log")" >&2; exit 1; }
  rm -rf "$out"
done
