#!/usr/bin/env bash
# A/B of file → null throughput: wall time from start until the last byte of FILE is
# acknowledged (null sink), for each BIN in turn, beside `wc -l` on the same page-cached
# file, 3 rounds (ROUNDS="1 2 3 4 5" for more); each agent figure is wall/CPU seconds.
# Usage: bench/null_ab.sh FILE BIN...
set -u
file=$1; shift
size=$(stat -c %s "$file")
cat "$file" >/dev/null
. "$(dirname "$0")/lib.sh"
run() { local bin=$1 work http; work=$(mktemp -d) http=$(port)
  printf 'node: bench\nstate_dir: %s/state\nlogs: [{path: %s, topic: bench}]\nsink:\n  kind: "null"\nhttp: {listen: "127.0.0.1:%s"}\ntail: {poll_interval: 20ms}\n' "$work" "$file" "$http" >"$work/c.yaml"
  local s; s=$(now); "$bin" run --config "$work/c.yaml" 2>"$work/log" & local pid=$!
  until curl -sf "127.0.0.1:$http/status" 2>/dev/null | grep -q "\"offset\":$size,"; do sleep 0.005; done
  local e c; e=$(now) c=$(cpu_s $pid); kill -TERM $pid; wait $pid; rm -rf "$work"; printf '%.3f/%.2f' "$(echo "$e - $s" | bc -l)" "$c"; }
for r in ${ROUNDS:-1 2 3}; do
  s=$(now); wc -l "$file" >/dev/null; e=$(now); printf 'wc %.3f  ' "$(echo "$e - $s" | bc -l)"
  for b in "$@"; do printf '%s %s  ' "$(basename $b)" "$(run $b)"; done; echo
done
