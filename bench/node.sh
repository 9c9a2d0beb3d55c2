#!/usr/bin/env bash
# node.sh — the loads a Kubernetes node has (issue #26 §2): many files, a few lines a
# second each, shipped to Kafka (tansu, lz4); logcatch and Fluent Bit side by side in one
# run, alternating which goes first.
#
# usage: bench/node.sh            (make bench-node; needs make deps and make bench-deps)
#
# Loads (LOADS, "FILES:LINES_PER_S[:cri]" each): 100 × 100, 1,000 × 10, 10,000 × 1 lines/s,
# and 300 files × 10 lines/s in CRI format with P/F fragments. Per load and round, each
# agent gets a fresh broker (tansu, memory storage), a fresh topic of PARTITIONS
# partitions and fresh files, written by bench/node_writer.py (one write per line up to
# 10 a second per file; each line starts with its write time, file and sequence number)
# from a second before the agent starts (every file has a line); bench/node_consume.py
# reads the topic throughout.
# Reported per agent:
#   start   launch → the first line of every file consumed from Kafka (files exist with
#           lines in them at launch; both agents read new files from their beginning)
#   CPU     user + system CPU of the agent's process (/proc/PID/stat) over WINDOW_S
#           seconds starting WARM_S after `start`, divided by the records consumed from
#           the topic in that window: µs per line; and % of one core
#   RSS     VmRSS at the end of the window (peak: VmHWM)
#   latency consume time − write time of the lines written in the window (p50/p99/max);
#           the consumer polls with fetch.wait.max.ms=10, the same for both agents
#   lines   every line written must be consumed once (written / delivered / duplicates)
# Configs (what an operator runs): logcatch with its defaults (lz4, linger 5ms,
# partitioning: file) and tail.max_open_files above FILES; Fluent Bit's tail with an
# offsets DB, Read_from_Head On, the Helm chart's Mem_Buf_Limit 5MB / Skip_Long_Lines /
# Refresh_Interval 10 and `multiline.parser cri` for CRI files, Flush FLB_FLUSH (default
# 1, Fluent Bit's default), kafka output Format raw / Raw_Log_Key log, lz4, linger.ms 5.
#
# Environment: LOADS, ROUNDS (default 2; the order alternates per round and load),
# WINDOW_S (30), WARM_S (5), PARTITIONS (4), FLB_FLUSH (1), AGENTS ("logcatch fluent-bit"),
# WRITER_TICK_MS (100: the files written together on a 100 ms tick; 10 spreads them over
# ten instants of each 100 ms, node_writer.py --tick-ms),
# BENCH_DIR (/tmp/logcatch-bench), LOGCATCH_BIN (a built binary; default: cargo build
# --release), LOGCATCH_TAIL (settings added to logcatch's `tail:`, e.g.
# "min_read_interval: 0s"), PERF=1: `perf record -g -F PERF_F` (default 499 Hz) logcatch
# during the window of the load PERF_LOAD (default 1000:10; perf.data + a report of the
# top symbols in $BENCH_DIR/node-perf.*).
# BULK (default 1; 0: off): after each round of 1,000 × 10 logcatch's bulk figure in the
# same run, as `make bench` measures it (2,000,000 lines of 100 B, file → Kafka, lz4, on a
# fresh broker; CPU per line), and the table's last line is 1,000 × 10 ÷ it (issue #26 §2:
# "within 10 × the bulk figure").
# Prints one `load=… agent=… …` line per run, then a Markdown table of the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
LOADS=${LOADS:-100:100 1000:10 10000:1 300:10:cri}
ROUNDS=${ROUNDS:-2} WINDOW_S=${WINDOW_S:-30} WARM_S=${WARM_S:-5} PARTITIONS=${PARTITIONS:-4}
FLB_FLUSH=${FLB_FLUSH:-1} AGENTS=${AGENTS:-logcatch fluent-bit} WRITER_TICK_MS=${WRITER_TICK_MS:-100}
DIR=${BENCH_DIR:-/tmp/logcatch-bench}
mkdir -p "$DIR"
if [[ -n ${LOGCATCH_BIN:-} ]]; then
  bin=$(realpath "$LOGCATCH_BIN")
else
  cargo build --release --quiet --bin logcatch
  bin=${CARGO_TARGET_DIR:-$PWD/target}/release/logcatch
fi
tansu=$(scripts/deps.sh --print-tansu)
flb=$(scripts/bench-deps.sh --print-fluent-bit)
[[ -x $tansu ]] || { echo "node.sh: no tansu at $tansu (make deps)" >&2; exit 1; }
BULK=${BULK:-1}
[[ " $AGENTS " == *" logcatch "* && " $LOADS " == *" 1000:10 "* ]] || BULK=0
if [[ " $AGENTS " == *" fluent-bit "* && ! -x $flb ]]; then
  echo "node.sh: no Fluent Bit at $flb (make bench-deps)" >&2; exit 1
fi
. bench/lib.sh
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
val() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }
started_load=$(cut -d' ' -f1-3 /proc/loadavg)
echo "node.sh: logcatch $bin ($(git rev-parse --short HEAD)), Fluent Bit $flb; writer tick ${WRITER_TICK_MS} ms; load average $started_load" >&2

run_dir="" writer="" consumer="" agent=""
cleanup_run() {
  local p
  for p in $agent $writer $consumer; do kill "$p" 2>/dev/null || true; done
  for p in $agent $writer $consumer; do wait "$p" 2>/dev/null || true; done
  agent="" writer="" consumer=""
  stop_broker 2>/dev/null || true
  [[ -z $run_dir ]] || rm -rf "$run_dir"
  run_dir=""
}
trap cleanup_run EXIT

config_logcatch() {  # files format
  local fmt=""
  [[ $2 == cri ]] && fmt=", format: cri"
  printf 'node: bench\nstate_dir: %s/state\nlogs: [{path: "%s/logs/*.log", topic: node%s}]\nsink:\n  kind: kafka\n  kafka: {brokers: ["127.0.0.1:%s"], compression: lz4}\nhttp: {listen: "127.0.0.1:%s"}\ntail: {max_open_files: %s%s}\n' \
    "$run_dir" "$run_dir" "$fmt" "$kport" "$(port)" "$(($1 + 100))" "${LOGCATCH_TAIL:+, $LOGCATCH_TAIL}" >"$run_dir/logcatch.yaml"
}

config_fluent_bit() {  # files format
  local ml=""
  [[ $2 == cri ]] && ml="    multiline.parser  cri"
  mkdir -p "$run_dir/state"
  cat >"$run_dir/fluent-bit.conf" <<EOF
[SERVICE]
    Flush        $FLB_FLUSH
    Log_Level    warn
[INPUT]
    Name              tail
    Path              $run_dir/logs/*.log
    Read_from_Head    On
    DB                $run_dir/state/offsets.db
    Mem_Buf_Limit     5MB
    Skip_Long_Lines   On
    Refresh_Interval  10
$ml
[OUTPUT]
    Name        kafka
    Match       *
    Brokers     127.0.0.1:$kport
    Topics      node
    Format      raw
    Raw_Log_Key log
    rdkafka.compression.codec lz4
    rdkafka.linger.ms 5
EOF
}

# One agent on one load: prints the result line (run in this shell, not a subshell, so
# that cleanup_run sees the processes it started).
run_one() {  # agent files rate format round
  local who=$1 n=$2 rate=$3 fmt=$4 round=$5 launch t_all w0 w1 c0 c1 rss hwm out
  run_dir=$(mktemp -d "$DIR/node.XXXX")
  start_broker "$DIR"
  "$tansu" topic create node --broker "tcp://127.0.0.1:$kport" --partitions "$PARTITIONS" >/dev/null
  python3 bench/node_consume.py "127.0.0.1:$kport" node "$n" "$run_dir/consume" >"$run_dir/consume.out" 2>"$run_dir/consume.err" &
  consumer=$!
  python3 bench/node_writer.py "$run_dir/logs" "$n" "$rate" --tick-ms "$WRITER_TICK_MS" --format "$fmt" --counts "$run_dir/counts.json" --ready "$run_dir/ready" >/dev/null 2>"$run_dir/writer.err" &
  writer=$!
  until [[ -e $run_dir/ready ]]; do
    kill -0 "$writer" 2>/dev/null || { echo "node.sh: writer died: $(tail -5 "$run_dir/writer.err")" >&2; return 1; }
    sleep 0.05
  done
  "config_${who//-/_}" "$n" "$fmt"
  launch=$(now)
  case $who in
    logcatch) "$bin" run --config "$run_dir/logcatch.yaml" >"$run_dir/agent.log" 2>&1 & agent=$! ;;
    fluent-bit) "$flb" -c "$run_dir/fluent-bit.conf" >"$run_dir/agent.log" 2>&1 & agent=$! ;;
  esac
  until [[ -s $run_dir/consume.allseen ]]; do
    kill -0 "$agent" 2>/dev/null || { echo "node.sh: $who died: $(tail -5 "$run_dir/agent.log")" >&2; return 1; }
    kill -0 "$consumer" 2>/dev/null || { echo "node.sh: consumer died: $(tail -5 "$run_dir/consume.err")" >&2; return 1; }
    (($(echo "$(now) - $launch > 180" | bc))) && { echo "node.sh: $who: not every file in Kafka 180 s after launch" >&2; return 1; }
    sleep 0.1
  done
  sleep "$WARM_S"
  w0=$(now) c0=$(ticks "$agent")
  local perf_pid=""
  if [[ -n ${PERF:-} && $who == logcatch && $n:$rate:$fmt == ${PERF_LOAD:-1000:10}:raw && $round == 1 ]]; then
    perf record -g -F ${PERF_F:-499} -p "$agent" -o "$DIR/node-perf.data" -- sleep "$WINDOW_S" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  sleep "$WINDOW_S"
  w1=$(now) c1=$(ticks "$agent")
  rss=$(kb "$agent" VmRSS) hwm=$(kb "$agent" VmHWM)
  [[ -z $perf_pid ]] || wait "$perf_pid" || true
  kill "$writer"; wait "$writer" || true; writer=""
  printf '{"launch": %s, "w0": %s, "w1": %s, "counts": "%s"}\n' "$launch" "$w0" "$w1" "$run_dir/counts.json" >"$run_dir/consume.params.partial"
  mv "$run_dir/consume.params.partial" "$run_dir/consume.params"
  wait "$consumer" || { echo "node.sh: consumer failed: $(tail -5 "$run_dir/consume.err")" >&2; return 1; }
  consumer=""
  kill -0 "$agent" 2>/dev/null || { echo "node.sh: $who died: $(tail -5 "$run_dir/agent.log")" >&2; return 1; }
  out=$(cat "$run_dir/consume.out")
  local load=$n:$rate
  [[ $fmt == raw ]] || load+=:$fmt
  awk -v who="$who" -v load="$load" -v r="$round" -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" \
    -v w="$(echo "$w1 - $w0" | bc -l)" -v lines="$(val "$out" window_lines)" -v rss="$rss" -v hwm="$hwm" -v rest="$out" \
    'BEGIN{printf "load=%s agent=%s round=%d cpu_us_per_line=%.2f cpu_pct=%.1f rss_mb=%.1f hwm_mb=%.1f %s\n",
           load, who, r, lines ? 1e6 * c / hz / lines : 0, 100 * c / hz / w, rss / 1024, hwm / 1024, rest}'
  if [[ $(val "$out" written) != "$(val "$out" delivered)" || $(val "$out" duplicates) != 0 ]]; then
    echo "node.sh: $who on $n:$rate:$fmt: written $(val "$out" written), delivered $(val "$out" delivered), duplicates $(val "$out" duplicates)" >&2
  fi
  kill -TERM "$agent"; wait "$agent" || true; agent=""
  cleanup_run
}

# logcatch's bulk figure in this run: bulk ROUND prints a `load=bulk …` line.
bulk() {
  local t c m
  start_broker "$DIR"
  read -r t c m < <(TOPIC="bulk-$1" run_agent "$bin" "$DIR/lines100-2000000.log" "  kind: kafka
  kafka: {brokers: [\"127.0.0.1:$kport\"], compression: lz4, create_topics: true}")
  stop_broker
  [[ -n $c ]] || return 1
  awk -v r="$1" -v t="$t" -v c="$c" -v m="$m" 'BEGIN{printf "load=bulk agent=logcatch round=%d cpu_us_per_line=%.4f seconds=%.3f cpu_s=%.2f hwm_mb=%.1f\n", r, 1e6 * c / 2000000, t, c, m}'
}
if ((BULK)); then
  cargo build --release --quiet --example await_acked
  make_file lines100-2000000.log 100 2000000
fi

results=$DIR/node-results.txt
: >"$results"
li=0
for load in $LOADS; do
  IFS=: read -r n rate fmt <<<"$load"
  fmt=${fmt:-raw}
  for round in $(seq "$ROUNDS"); do
    order=($AGENTS)
    if (((li + round) % 2 == 0)); then order=($(printf '%s\n' "${order[@]}" | tac)); fi
    for who in "${order[@]}"; do
      run_one "$who" "$n" "$rate" "$fmt" "$round" >"$DIR/node-line" || { cleanup_run; continue; }
      tee -a "$results" <"$DIR/node-line"
    done
    if ((BULK)) && [[ $n:$rate:$fmt == 1000:10:raw ]]; then
      bulk "$round" >"$DIR/node-line" && tee -a "$results" <"$DIR/node-line"
    fi
  done
  li=$((li + 1))
done
ended_load=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ -n ${PERF:-} && -s $DIR/node-perf.data ]]; then
  perf report -i "$DIR/node-perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 >"$DIR/node-perf.self.txt" || true
  perf report -i "$DIR/node-perf.data" --children --sort symbol --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 >"$DIR/node-perf.children.txt" || true
  echo "perf: $DIR/node-perf.data, top symbols in $DIR/node-perf.self.txt, inclusive in $DIR/node-perf.children.txt" >&2
fi

# The table: medians over the rounds.
python3 - "$results" "$started_load" "$ended_load" "$ROUNDS" <<'PY'
import statistics, sys
from collections import defaultdict
path, l0, l1, rounds = sys.argv[1:5]
rows = defaultdict(list)
for line in open(path):
    kv = dict(p.split("=", 1) for p in line.split())
    rows[(kv["load"], kv["agent"])].append(kv)
def med(rs, k):
    return statistics.median(float(r[k]) for r in rs)
def label(load):
    parts = load.split(":")
    n, r = int(parts[0]), int(parts[1])
    return f"{n:,} files × {r} line{'' if r == 1 else 's'}/s" + (" (CRI, P/F)" if len(parts) > 2 else "")
print(f"load average at start {l0}, at end {l1}; medians of {rounds} rounds\n")
print("| load | agent | CPU per line | CPU (% of a core) | RSS (peak) | latency p50 / p99 / max | start → every file in Kafka | lines written / delivered |")
print("|---|---|---|---|---|---|---|---|")
loads = [load for load in dict.fromkeys(k[0] for k in rows) if load != "bulk"]
for load in loads:
    for agent in ("logcatch", "fluent-bit"):
        rs = rows.get((load, agent))
        if not rs:
            continue
        ok = all(r["written"] == r["delivered"] and r["duplicates"] == "0" for r in rs)
        print(f"| {label(load)} | {agent} | {med(rs, 'cpu_us_per_line'):.1f} µs | {med(rs, 'cpu_pct'):.1f} % | "
              f"{med(rs, 'rss_mb'):.0f} MB ({med(rs, 'hwm_mb'):.0f}) | {med(rs, 'p50_ms'):.0f} / {med(rs, 'p99_ms'):.0f} / {med(rs, 'max_ms'):.0f} ms | "
              f"{med(rs, 'startup_s'):.2f} s | {'all, once' if ok else 'MISMATCH: ' + ', '.join(r['written'] + '/' + r['delivered'] for r in rs)} |")
    lc, fb = rows.get((load, "logcatch")), rows.get((load, "fluent-bit"))
    if lc and fb:
        print(f"| | logcatch ÷ Fluent Bit | {med(lc, 'cpu_us_per_line') / med(fb, 'cpu_us_per_line'):.2f} × | | "
              f"{med(lc, 'rss_mb') / med(fb, 'rss_mb'):.2f} × | p99 {med(lc, 'p99_ms') / med(fb, 'p99_ms'):.2f} × | "
              f"{med(lc, 'startup_s') / med(fb, 'startup_s'):.2f} × | |")
bulk, node = rows.get(("bulk", "logcatch")), rows.get(("1000:10", "logcatch"))
if bulk and node:
    per_round = {r["round"]: float(r["cpu_us_per_line"]) for r in bulk}
    ratios = [float(r["cpu_us_per_line"]) / per_round[r["round"]] for r in node if r["round"] in per_round]
    print(f"\nlogcatch's bulk figure in this run (2,000,000 lines of 100 B, file → Kafka, lz4, after each "
          f"round of 1,000 × 10): {med(bulk, 'cpu_us_per_line'):.3f} µs a line (rounds: "
          f"{', '.join('%.3f' % float(r['cpu_us_per_line']) for r in bulk)}); 1,000 files × 10 lines/s ÷ bulk: "
          f"{med(node, 'cpu_us_per_line') / med(bulk, 'cpu_us_per_line'):.1f} × (each round against its own: "
          f"{', '.join('%.1f' % x for x in ratios)}; aim ≤ 10 ×)")
PY
