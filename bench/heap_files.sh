#!/usr/bin/env bash
# heap_files.sh BIN N OUT [SETTLE_S]: heaptrack of BIN (built with the system allocator: the
# #[global_allocator] line of src/main.rs commented out, for measuring only) following N
# files x 1 line/s, null sink, SIGKILLed SETTLE_S (default 10) after every tailer runs, so
# that what heaptrack reports "leaked" is the live heap then (OUT.zst). Per source line: bench/heap_by_line.py OUT.txt, where
# OUT.txt = heaptrack_print -n 100000 -s 100000 --print-leaks 1 --print-peaks 0
# --print-allocators 0 --print-temporary 0 --print-histogram 0 -f OUT.zst
# SINK=kafka: into a topic of 4 partitions on a fresh tansu broker (lz4, as bench/node.sh
# ships) instead of the null sink; the peak heap (--print-peaks 1) is then the start's.
set -euo pipefail
BIN=$1 N=$2 OUT=$3 SETTLE=${4:-10}
REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=$(mktemp -d "${BENCH_DIR:-/tmp}/heap.XXXX")
trap 'kill $writer 2>/dev/null || true; [[ -z ${broker:-} ]] || stop_broker; rm -rf "$DIR"' EXIT
sink='  kind: "null"'
if [[ ${SINK:-null} == kafka ]]; then
  tansu=$(cd "$REPO" && scripts/deps.sh --print-tansu)
  . "$REPO/bench/lib.sh"
  start_broker "$DIR"
  "$tansu" topic create scale --broker "tcp://127.0.0.1:$kport" --partitions 4 >/dev/null
  sink="  kind: kafka
  kafka: {brokers: [\"127.0.0.1:$kport\"], compression: lz4}"
fi
mkdir -p "$DIR/logs"
python3 $REPO/bench/node_writer.py "$DIR/logs" "$N" 1 --writes-per-s 1 --ready "$DIR/ready" >"$DIR/writer.log" 2>&1 &
writer=$!
until [[ -e $DIR/ready ]]; do sleep 0.05; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'node: bench\nstate_dir: %s/state\nlogs: [{path: "%s/logs/*.log", topic: scale}]\nsink:\n%s\nhttp: {listen: "127.0.0.1:%s"}\ntail: {max_open_files: %s}\n' \
  "$DIR" "$DIR" "$sink" "$port" "$((N + 100))" >"$DIR/c.yaml"
heaptrack -o "$OUT" "$BIN" run --config "$DIR/c.yaml" >"$DIR/ht.log" 2>"$DIR/agent.log" &
ht=$!
running() { curl -sf "127.0.0.1:$port/status" 2>/dev/null | python3 -c '
import json, sys
rows = json.load(sys.stdin)
rows = rows.get("tailers", rows) if isinstance(rows, dict) else rows
print(sum(1 for r in rows if r["state"] == "running"))' 2>/dev/null || echo 0; }
until [[ $(running) -ge $N ]]; do sleep 0.5; done
sleep "$SETTLE"
pid=$(pgrep -P $ht -f "$BIN run")
grep -E '^VmRSS' /proc/$pid/status
kill -9 $pid
wait $ht || true
cat "$DIR/ht.log" | tail -3
