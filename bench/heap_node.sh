#!/usr/bin/env bash
# heap_node.sh BIN OUT [DURATION_S]: what the agent's memory holds in the soak's steady
# state. heaptrack of BIN (built with the system allocator: the #[global_allocator] line
# of src/main.rs commented out, for measuring only) following the soak's simulated node
# (bench/soak_kubelet.py: PODS pods, default 300, and the chatty container;
# /var/log/containers/*.log in CRI format) into a fresh tansu broker (lz4, as the soak
# ships) for DURATION_S (default 180), then SIGKILLed, so that what heaptrack reports
# "leaked" is the live heap then (OUT.zst). Per source line: bench/heap_by_line.py OUT.txt,
# where OUT.txt = heaptrack_print -n 100000 -s 100000 --print-leaks 1 --print-peaks 0
# --print-allocators 0 --print-temporary 0 -f OUT.zst
set -euo pipefail
BIN=$1 OUT=$2 DURATION=${3:-180}
REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=$(mktemp -d "${BENCH_DIR:-/tmp}/heapnode.XXXX")
tansu=$(cd "$REPO" && scripts/deps.sh --print-tansu)
. "$REPO/bench/lib.sh"
trap 'kill $kubelet 2>/dev/null || true; stop_broker; rm -rf "$DIR"' EXIT
start_broker "$DIR"
python3 "$REPO/bench/soak_kubelet.py" "$DIR" "$((DURATION + 30))" "$DIR/manifest.json" >"$DIR/kubelet.log" 2>&1 &
kubelet=$!
http=$(port)
printf 'node: heap\nstate_dir: %s/state\nlogs: [{path: "%s/var/log/containers/*.log", topic: soak, format: cri}]\nsink:\n  kind: kafka\n  kafka: {brokers: ["127.0.0.1:%s"], compression: lz4, create_topics: true}\nhttp: {listen: "127.0.0.1:%s"}\n' \
  "$DIR" "$DIR" "$kport" "$http" >"$DIR/c.yaml"
heaptrack -o "$OUT" "$BIN" run --config "$DIR/c.yaml" >"$DIR/ht.log" 2>"$DIR/agent.log" &
ht=$!
sleep "$DURATION"
pid=$(pgrep -P $ht -f "$BIN run")
grep -E '^(VmRSS|RssAnon)' /proc/$pid/status
curl -s "127.0.0.1:$http/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("tailers", len(s.get("tailers", [])))'
kill -9 "$pid"
wait $ht || true
tail -3 "$DIR/ht.log"
