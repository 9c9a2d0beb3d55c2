#!/usr/bin/env bash
# RSS before and after a catch-up (issue #23's soak step, #26 §4): N files, idle and
# followed, then each appended a backlog of LINES lines of 100 B (2,600: 256 KiB, as after
# a Kafka outage); RSS when every line is sent (and the peak) and 5–30 s after, through
# tansu with lz4 (SINK=kafka, default; BUDGET sets max_in_flight_bytes, 64MiB) or the
# null sink (SINK=null). FREEZE_S > 0 stops the broker (SIGSTOP) while the backlog is
# written and for FREEZE_S seconds after.
# Usage: [SINK=kafka|null] [FREEZE_S=0] [LINES=2600] [BUDGET=64MiB] bench/catch_up_rss.sh BIN [N=200]
set -euo pipefail
bin=$(realpath "$1") n=${2:-200} sink_kind=${SINK:-kafka} freeze=${FREEZE_S:-0}
lines=${LINES:-2600} budget=${BUDGET:-64MiB}
cd "$(dirname "$0")/.."
tansu=$(scripts/deps.sh --print-tansu)
. bench/lib.sh
mkdir -p "${BENCH_DIR:-/tmp/logcatch-bench}"
w=$(mktemp -d "${BENCH_DIR:-/tmp/logcatch-bench}/catch-up.XXXX")
mkdir "$w/logs"
for i in $(seq "$n"); do : >"$w/logs/f$i.log"; done
http=$(port)
if [[ $sink_kind == kafka ]]; then
  start_broker "$w"
  sink="  kind: kafka\n  kafka: {brokers: [\"127.0.0.1:$kport\"], compression: lz4, create_topics: true, request_timeout: 10s, max_in_flight_bytes: $budget}"
else
  sink='  kind: "null"'
fi
printf "node: bench\nstate_dir: $w/state\nlogs: [{path: \"$w/logs/*.log\", topic: catch-up}]\nsink:\n$sink\nhttp: {listen: \"127.0.0.1:$http\"}\n" >"$w/c.yaml"
"$bin" run --config "$w/c.yaml" 2>"$w/agent.log" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  [[ -n ${broker:-} ]] && { kill -CONT "$broker" 2>/dev/null || true; stop_broker; }
  rm -rf "$w"
}
trap cleanup EXIT
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status"; }
metric() { curl -sf "127.0.0.1:$http/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {printf "%.0f", s}'; }
until [[ $(metric logcatch_tailers 2>/dev/null) == "$n" ]]; do sleep 0.5; done
for i in $(seq "$n"); do printf 'warm %s\n' {1..20} >>"$w/logs/f$i.log"; done
sleep 5
echo "idle, $n files followed: RSS $(rss) MiB"
((freeze > 0)) && kill -STOP "$broker"
python3 - "$w/logs" "$n" "$lines" <<'PY'
import sys
d, n, lines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line = b"y" * 99 + b"\n"
for i in range(1, n + 1):
    with open(f"{d}/f{i}.log", "ab") as f:
        f.write(line * lines)
PY
if ((freeze > 0)); then sleep "$freeze"; echo "frozen ${freeze}s: RSS $(rss) MiB"; kill -CONT "$broker"; fi
want=$((n * (lines + 20)))
until (($(metric logcatch_records_sent_total) >= want)); do sleep 0.5; done
echo "every line sent: RSS $(rss) MiB (peak $(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status") MiB)"
prev=0
for s in 5 10 20 30; do sleep $((s - prev)); prev=$s; echo "$s s later: RSS $(rss) MiB"; done
