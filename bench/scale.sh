#!/usr/bin/env bash
# scale.sh BIN N WINDOW_S SINK_YAML [RATE]: N files under one glob, each appended RATE
# (default 10) lines/s (100 B each, one write per file per second, the files staggered
# over the second; bench/node_writer.py; LINE_WRITES=1: one write a line, as applications
# log). bench/node.sh runs the same loads against Fluent Bit with the Kafka sink.
# Prints: files=N start_s=<launch → every tailer running> cpu_pct=<% of one core over
# WINDOW_S after that> rss_mb=<RSS at the end> hwm_mb=<peak RSS> lag_bytes=<sum at the end>
# `tail.max_open_files` is set above N so that "running" means each file is open.
set -euo pipefail
BIN=$1 N=$2 WINDOW=$3 SINK=$4 RATE=${5:-10}
DIR=$(mktemp -d "${BENCH_DIR:-/tmp/logcatch-bench}/scale.XXXX")
trap 'kill $writer $agent 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
mkdir -p "$DIR/logs"
# The writer: RATE lines per file per second, in one write, or one write each
# (LINE_WRITES=1) (bench/node_writer.py).
writes=1; [[ ${LINE_WRITES:-0} == 1 ]] && writes=$RATE
python3 "$(dirname "$0")/node_writer.py" "$DIR/logs" "$N" "$RATE" --writes-per-s "$writes" --ready "$DIR/ready" >"$DIR/writer.log" 2>&1 &
writer=$!
until [[ -e $DIR/ready ]]; do
  kill -0 "$writer" 2>/dev/null || { echo "writer died: $(tail -3 "$DIR/writer.log")" >&2; exit 1; }
  sleep 0.05
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'node: bench\nstate_dir: %s/state\nlogs: [{path: "%s/logs/*.log", topic: scale}]\nsink:\n%s\nhttp: {listen: "127.0.0.1:%s"}\ntail: {max_open_files: %s}\n' \
  "$DIR" "$DIR" "$SINK" "$port" "$((N + 100))" >"$DIR/c.yaml"
t0=$(date +%s.%N)
"$BIN" run --config "$DIR/c.yaml" 2>"$DIR/agent.log" &
agent=$!
running() { curl -sf "127.0.0.1:$port/status" 2>/dev/null | python3 -c '
import json, sys
rows = json.load(sys.stdin)
rows = rows.get("tailers", rows) if isinstance(rows, dict) else rows
print(sum(1 for r in rows if r["state"] == "running"))' 2>/dev/null || echo 0; }
until [[ $(running) -ge $N ]]; do
  kill -0 "$agent" 2>/dev/null || { echo "agent died: $(tail -3 "$DIR/agent.log")" >&2; exit 1; }
  sleep 0.2
done
t1=$(date +%s.%N)
ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
c0=$(ticks); sleep "$WINDOW"; c1=$(ticks)
lag=$(curl -sf "127.0.0.1:$port/status" | python3 -c '
import json, sys
rows = json.load(sys.stdin)
rows = rows.get("tailers", rows) if isinstance(rows, dict) else rows
print(sum(r["lag_bytes"] for r in rows))')
awk -v n="$N" -v s="$(echo "$t1 - $t0" | bc -l)" -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v w="$WINDOW" \
  -v rss="$(awk '/^VmRSS/{print $2}' "/proc/$agent/status")" -v hwm="$(awk '/^VmHWM/{print $2}' "/proc/$agent/status")" -v lag="$lag" \
  'BEGIN{printf "files=%d start_s=%.2f cpu_pct=%.1f rss_mb=%.1f hwm_mb=%.1f lag_bytes=%d\n", n, s, 100*c/hz/w, rss/1024, hwm/1024, lag}'
