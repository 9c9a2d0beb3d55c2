#!/usr/bin/env bash
# `make bench`: logcatch against baselines and peers measured in the same run, on the
# same files and the same broker (shared, noisy machines: compare the ratios). Prints
# the tables and rewrites the generated part of BENCHMARKS.md and bench/results/.
#
#   throughput : file → null vs `wc -l` on the same page-cached 1 GiB file (100 B and
#                1 KiB lines), beside Fluent Bit's tail → null (built by `make
#                bench-deps`); file → kafka (lz4, none) against the broker's limit for
#                logcatch's own records (examples/raw_produce.rs --headers --encoded: the
#                same records, headers included, encoded and compressed before the clock
#                starts, one request in flight), every row as a ratio of it: logcatch
#                (also `headers: false`, and a topic of 64 partitions), raw rskafka's
#                `produce` without headers (the former "ceiling"), kcat -P, rsyslog
#                imfile → omkafka (bench/peers.sh, librdkafka 2.16), Fluent Bit 5.1.1
#                tail → kafka (offsets DB on). Each on a fresh broker, the order reversed
#                every other round, the load average recorded before each round
#   memory     : peak RSS (VmHWM) at full throughput (1 and 64 partitions), during the
#                outage and its catch-up, and with 10,000 files (null and Kafka sinks),
#                beside the aim max_in_flight_bytes + 32 MiB (issue #26 §4); a table of
#                its own, gathered from the other sections
#   latency    : append → consumable in Kafka at 1,000 and 50,000 lines/s
#                (examples/latency.rs), with the defaults and with min_read_interval 0s,
#                beside the same lines produced directly
#   scale      : 1,000 and 10,000 files at 10 lines/s each (bench/scale.sh, null sink), and
#                10,000 at 1 line/s each into Kafka; `plan` for
#                10,000 desired entries (benches/plan.rs, criterion); `logcatch etcd put`
#                of 1,000 entries → all tailers running (bench/etcd_put.sh, real etcd)
#   outage     : broker frozen 60 s while 20 MB/s are written: RSS, catch-up (bench/outage.sh)
#   plots      : bench/results/throughput.svg, bench/results/outage.svg (gnuplot)
#
# Environment: RUNS (default 3), SECTIONS (default "throughput latency scale outage"),
# QUICK=1 (short durations, small files, 1 run: for trying the script, not for the
# record), BENCH_DIR (default /tmp/logcatch-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
SECTIONS=${SECTIONS:-throughput latency scale outage}
if [[ -n ${QUICK:-} ]]; then
  RUNS=${RUNS:-1} GIB_LINES_SCALE=20 LAT_S=${LAT_S:-5} SCALE_WINDOW=${SCALE_WINDOW:-5}
  export OUTAGE_S=${OUTAGE_S:-10} PRE_S=${PRE_S:-5}
else
  RUNS=${RUNS:-3} GIB_LINES_SCALE=1 LAT_S=${LAT_S:-20} SCALE_WINDOW=${SCALE_WINDOW:-30}
fi
DIR=${BENCH_DIR:-/tmp/logcatch-bench}
export BENCH_DIR=$DIR
RESULTS=bench/results
mkdir -p "$DIR" "$RESULTS"
scripts/bench-deps.sh >/dev/null
cargo build --release --quiet --bin logcatch --example raw_produce --example latency --example await_acked
release=${CARGO_TARGET_DIR:-$PWD/target}/release
bin=$release/logcatch raw=$release/examples/raw_produce lat=$release/examples/latency
flb=$(scripts/bench-deps.sh --print-fluent-bit)
export FLUENT_BIT=$flb
tansu=$(scripts/deps.sh --print-tansu)
export RDKAFKA_LIBDIR=$(scripts/bench-deps.sh --print-rdkafka-libdir) TANSU=$tansu
. bench/lib.sh
# "median min max" of the numbers on stdin.
median() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%s %s %s\n", m, a[1], a[NR]}'; }
calc() { echo "$*" | bc -l; }
tables=() throughput_loads=() memory_rows=()
# RSS aim (issue #26 §4): at most `max_in_flight_bytes` (the default, 64 MiB) + 32 MiB.
BUDGET_MIB=64
started_load=$(cut -d' ' -f1-3 /proc/loadavg)

# Input files: make_file (bench/lib.sh).

trap 'stop_broker 2>/dev/null || true' EXIT

# A field of a peer's line in $DIR/peers.out: peer_field PEER KEY.
peer_field() { awk -v p="peer=$1" -v k="$2=" '$1 == p {for (i = 2; i <= NF; i++) if (index($i, k) == 1) print substr($i, length(k) + 1)}' "$DIR/peers.out"; }

# One file → Kafka measurement on the broker at $kport: measure_kafka NAME COMP ROUND
# prints "seconds cpu_seconds peak_rss_mib" (the limit and raw: "seconds 0 0").
measure_kafka() {
  local name=$1 comp=$2 r=$3 kafka="  kind: kafka
  kafka: {brokers: [\"127.0.0.1:$kport\"], compression: $comp, create_topics: true"
  case $name in
    limit) echo "$("$raw" "127.0.0.1:$kport" "limit-$comp-$r" "$file" "$comp" --headers bench --encoded) 0 0" ;; # node: bench, as in run_agent
    raw) echo "$("$raw" "127.0.0.1:$kport" "raw-$comp-$r" "$file" "$comp") 0 0" ;;
    lc) TOPIC="lc-$comp-$r" run_agent "$bin" "$file" "$kafka}" ;;
    nh) TOPIC="nh-$comp-$r" run_agent "$bin" "$file" "$kafka, headers: false}" ;;
    lc64) TOPIC="lc64-$comp-$r" run_agent "$bin" "$file" "$kafka, topic_partitions: 64, partitioning: round_robin}" ;;
    *)
      PEERS=$name bench/peers.sh "$file" "127.0.0.1:$kport" "$comp" >"$DIR/peers.out"
      echo "$(peer_field "$name" seconds) $(peer_field "$name" cpu_s) $(peer_field "$name" rss_mb)"
      ;;
  esac
}

fmt_range() { printf '%.2f s [%.2f–%.2f]' "$1" "$2" "$3"; }

section_throughput() {
  local rows=() f width lines file bytes
  # 1 GiB each (QUICK: 1/20 of it).
  local n100=null100-$((10737418 / GIB_LINES_SCALE)).log n1k=null1k-$((1048576 / GIB_LINES_SCALE)).log
  make_file "$n100" 100 $((10737418 / GIB_LINES_SCALE))
  make_file "$n1k" 1024 $((1048576 / GIB_LINES_SCALE))
  for f in "$n100" "$n1k"; do
    file=$DIR/$f bytes=$(stat -c %s "$file") lines=$(wc -l <"$file")
    local wc_runs=() lc_runs=() lc_cpu=() wc_cpu=() fb_runs=() fb_cpu=() fb_rss=()
    local round one
    for round in $(seq "$RUNS"); do
      # The order reversed every other round.
      local order=(wc lc fb); ((round % 2 == 0)) && order=(fb lc wc)
      for one in "${order[@]}"; do
        local s t c r
        # Back into the page cache before each run: Fluent Bit's tail drops the file
        # from it (`File_Cache_Advise`, on by default: POSIX_FADV_DONTNEED before each
        # read), and whoever came after it read 1 GiB from the disk (2.4 s of system
        # time; the 2–3 s logcatch rounds of earlier runs).
        cat "$file" >/dev/null
        case $one in
          wc)
            s=$(now); /usr/bin/time -f '%U %S' -o "$DIR/wc.time" wc -l "$file" >/dev/null; t=$(calc "$(now) - $s")
            wc_runs+=("$t") wc_cpu+=("$(awk '{print $1 + $2}' "$DIR/wc.time")")
            ;;
          lc)
            read -r t c _ < <(run_agent "$bin" "$file" "  kind: null")
            lc_runs+=("$t") lc_cpu+=("$c")
            ;;
          fb)
            read -r t c r < <(run_fluent_bit_null "$flb" "$file")
            fb_runs+=("$t") fb_cpu+=("$c") fb_rss+=("$r")
            ;;
        esac
      done
    done
    read -r wm wmin wmax < <(printf '%s\n' "${wc_runs[@]}" | median)
    read -r lm lmin lmax < <(printf '%s\n' "${lc_runs[@]}" | median)
    read -r wcm _ _ < <(printf '%s\n' "${wc_cpu[@]}" | median)
    read -r lcm _ _ < <(printf '%s\n' "${lc_cpu[@]}" | median)
    read -r fm fmin fmax < <(printf '%s\n' "${fb_runs[@]}" | median)
    read -r fcm _ _ < <(printf '%s\n' "${fb_cpu[@]}" | median)
    read -r frm _ _ < <(printf '%s\n' "${fb_rss[@]}" | median)
    rows+=("| file → null, $(numfmt --to=iec "$bytes")B of $(stat -c %s "$file" | awk -v l="$lines" '{printf "%.0f", $1/l}') B lines | $(printf '%.0f MB/s, %.2f M lines/s' "$(calc "$bytes/$lm/1000000")" "$(calc "$lines/$lm/1000000")") | $(printf '%.2f × wc -l (wall), %.2f × (CPU)' "$(calc "$wm/$lm")" "$(calc "$wcm/$lcm")") | logcatch $(fmt_range "$lm" "$lmin" "$lmax"), CPU $(printf '%.2f' "$lcm") s; wc -l $(printf '%.3f s [%.3f–%.3f], CPU %.2f s' "$wm" "$wmin" "$wmax" "$wcm") | ≥ 0.5 × wc -l |")
    echo "${rows[-1]}"
    rows+=("| … Fluent Bit tail → null, the same file | $(printf '%.0f MB/s, %.2f M lines/s' "$(calc "$bytes/$fm/1000000")" "$(calc "$lines/$fm/1000000")") | $(printf 'logcatch %.1f × Fluent Bit (wall), %.1f × (CPU)' "$(calc "$fm/$lm")" "$(calc "$fcm/$lcm")") | $(fmt_range "$fm" "$fmin" "$fmax") to its \"ended\" log line, CPU $(printf '%.2f' "$fcm") s, RSS $(printf '%.0f' "$frm") MB | |")
    echo "${rows[-1]}"
  done
  rm -f "$DIR/$n100" "$DIR/$n1k" # 2 GiB of /tmp; regenerated in ~2 min

  # file → Kafka: 2,000,000 lines of 100 B. Every measurement on a fresh broker (memory
  # storage keeps every record: logcatch (lz4) ran 1.3 × slower with a run of other
  # records just before it on the same broker), in an order reversed every other round,
  # so that no one always goes first or last; the load average is taken before each.
  make_file "lines100-$((2000000 / GIB_LINES_SCALE)).log" 100 $((2000000 / GIB_LINES_SCALE))
  file=$DIR/lines100-$((2000000 / GIB_LINES_SCALE)).log bytes=$(stat -c %s "$file") lines=$(wc -l <"$file")
  : >"$RESULTS/throughput.tsv"
  local comp names=(limit lc nh lc64 raw kcat rsyslog fluent-bit)
  for comp in lz4 none; do
    local -A secs=() cpus=() rsss=()
    local r name order loads=()
    for r in $(seq "$RUNS"); do
      order=("${names[@]}")
      ((r % 2 == 0)) && for ((i = 0; i < ${#names[@]}; i++)); do order[i]=${names[-1 - i]}; done
      loads+=("$(cut -d' ' -f1 /proc/loadavg)")
      for name in "${order[@]}"; do
        cat "$file" >/dev/null # Fluent Bit's tail drops it from the page cache (above)
        start_broker "$DIR"
        read -r t c m < <(measure_kafka "$name" "$comp" "$r")
        stop_broker
        secs[$name]+="$t " cpus[$name]+="$c " rsss[$name]+="$m "
      done
      echo "$comp round $r (load average ${loads[-1]}): ${order[*]}" >&2
    done
    local -A med=() lo=() hi=() cpu=() rss=() rssmax=()
    for name in "${names[@]}"; do
      read -r med[$name] lo[$name] hi[$name] < <(printf '%s\n' ${secs[$name]} | median)
      read -r cpu[$name] _ _ < <(printf '%s\n' ${cpus[$name]} | median)
      read -r rss[$name] _ rssmax[$name] < <(printf '%s\n' ${rsss[$name]} | median)
    done
    read -r _ loadmin loadmax < <(printf '%s\n' "${loads[@]}" | median)
    local base=${med[limit]}
    rate() { printf '%.0f MB/s, %.2f M lines/s' "$(calc "$bytes/${med[$1]}/1000000")" "$(calc "$lines/${med[$1]}/1000000")"; }
    vs() { printf '%.2f × limit' "$(calc "$base/${med[$1]}")"; }
    took() { printf '%s, CPU %.1f s, peak RSS %.0f MiB' "$(fmt_range "${med[$1]}" "${lo[$1]}" "${hi[$1]}")" "${cpu[$1]}" "${rss[$1]}"; }
    rows+=("| file → kafka ($comp): **the broker's limit for logcatch's records** (raw rskafka, the same records as logcatch's, default headers, encoded and compressed before the clock starts) | $(rate limit) | 1 | $(fmt_range "$base" "${lo[limit]}" "${hi[limit]}") | (baseline) |")
    rows+=("| file → kafka ($comp): logcatch | $(rate lc) | **$(vs lc)**; $(printf '%.1f × rsyslog, %.2f × kcat, %.1f × Fluent Bit' "$(calc "${med[rsyslog]}/${med[lc]}")" "$(calc "${med[kcat]}/${med[lc]}")" "$(calc "${med[fluent-bit]}/${med[lc]}")") | $(took lc) | ≥ 0.8 × limit, ≥ 2 × rsyslog |")
    rows+=("| file → kafka ($comp): logcatch, \`headers: false\` (smaller records) | $(rate nh) | $(vs nh) | $(took nh) | |")
    rows+=("| file → kafka ($comp): logcatch, a topic of 64 partitions (\`round_robin\`) | $(rate lc64) | $(vs lc64) | $(took lc64) | |")
    rows+=("| file → kafka ($comp): raw rskafka \`produce\` of \`Record\`s without headers, encoded while the clock runs (the former \"ceiling\") | $(rate raw) | $(vs raw) | $(fmt_range "${med[raw]}" "${lo[raw]}" "${hi[raw]}") | |")
    rows+=("| file → kafka ($comp): kcat -P | $(rate kcat) | $(vs kcat) | $(took kcat) | |")
    rows+=("| file → kafka ($comp): rsyslog imfile → omkafka | $(rate rsyslog) | $(vs rsyslog) | $(took rsyslog) | |")
    rows+=("| file → kafka ($comp): Fluent Bit tail → kafka (offsets DB, Flush 1) | $(rate fluent-bit) | $(vs fluent-bit) | $(took fluent-bit) | |")
    printf '%s\n' "${rows[@]: -8}"
    throughput_loads+=("$comp: $loadmin–$loadmax")
    memory_rows+=("| full throughput, file → kafka ($comp), 1 partition | $(printf '%.0f MiB [max %.0f]' "${rss[lc]}" "${rssmax[lc]}") | $((BUDGET_MIB + 32)) MiB | $(awk -v m="${rssmax[lc]}" -v b=$((BUDGET_MIB + 32)) 'BEGIN {print (m <= b) ? "yes" : "no"}') |")
    memory_rows+=("| full throughput, file → kafka ($comp), 64 partitions (\`round_robin\`) | $(printf '%.0f MiB [max %.0f]' "${rss[lc64]}" "${rssmax[lc64]}") | $((BUDGET_MIB + 32)) MiB | $(awk -v m="${rssmax[lc64]}" -v b=$((BUDGET_MIB + 32)) 'BEGIN {print (m <= b) ? "yes" : "no"}') |")
    if [[ $comp == lz4 ]]; then
      printf '%s\t%s\n' "logcatch" "$(calc "$bytes/${med[lc]}/1000000")" "logcatch (no headers)" "$(calc "$bytes/${med[nh]}/1000000")" \
        "limit (pre-encoded)" "$(calc "$bytes/$base/1000000")" "kcat -P" "$(calc "$bytes/${med[kcat]}/1000000")" \
        "rsyslog omkafka" "$(calc "$bytes/${med[rsyslog]}/1000000")" "Fluent Bit" "$(calc "$bytes/${med[fluent-bit]}/1000000")" >"$RESULTS/throughput.tsv"
    fi
  done
  tables+=("### Throughput

$lines lines of 100 B for Kafka; CPU = user + system seconds of the agent (or peer), peak
RSS its VmHWM. Every Kafka row is against **the broker's limit for logcatch's own
records**: the same records (headers included) sent by a raw rskafka producer that
encoded and compressed them before its clock started, one request in flight, as
logcatch sends per partition. Each measurement on a fresh broker, the order reversed
every other round; 1-minute load average before the rounds: $(printf '%s; ' "${throughput_loads[@]}" | sed 's/; $//').

| benchmark | rate | ratio (same run) | medians of $RUNS [min–max] | aim |
|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")")
}

section_latency() {
  local rows=() rate
  start_broker "$DIR"
  # logcatch with its defaults, and reading at every write (`min_read_interval: 0s`).
  lat_logcatch() {  # rate name tail-settings
    local work http agent
    work=$(mktemp -d "$DIR/lat.XXXX") http=$(port)
    : >"$work/app.log"
    printf 'node: bench\nstate_dir: %s/state\nlogs: [{path: %s/app.log, topic: lat-lc-%s-%s}]\nsink:\n  kind: kafka\n  kafka: {brokers: ["127.0.0.1:%s"], create_topics: true}\nhttp: {listen: "127.0.0.1:%s"}\ntail: {%s}\n' \
      "$work" "$work" "$1" "$2" "$kport" "$http" "$3" >"$work/c.yaml"
    "$bin" run --config "$work/c.yaml" 2>"$work/agent.log" &
    agent=$!
    until curl -sf "127.0.0.1:$http/status" >/dev/null 2>&1; do sleep 0.05; done
    "$lat" file "127.0.0.1:$kport" "lat-lc-$1-$2" "$1" "$LAT_S" "$work/app.log"
    kill -TERM "$agent"; wait "$agent" || true
    rm -rf "$work"
  }
  for rate in 1000 50000; do
    local out at_once direct
    direct=$("$lat" direct "127.0.0.1:$kport" "lat-direct-$rate" "$rate" "$LAT_S")
    out=$(lat_logcatch "$rate" default "")
    at_once=$(lat_logcatch "$rate" at-once "min_read_interval: 0s")
    echo "rate $rate: logcatch $out; min_read_interval 0s $at_once; direct $direct"
    val() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }
    ms() { echo "$(val "$1" p50_ms) / $(val "$1" p99_ms) / $(val "$1" max_ms)"; }
    rows+=("| $(printf "%'d" "$rate") lines/s | $(ms "$out") | $(ms "$at_once") | $(ms "$direct") | $(val "$out" lines), $(val "$at_once" lines) |")
  done
  stop_broker
  tables+=("### Latency: append → consumable in Kafka

Each line carries the wall-clock time of its \`write\`; a consumer in the same process
reads the topic from the start and records (time read − time written). Default config
(\`linger: 5ms\`, lz4, \`poll_interval: 250ms\` with inotify wake-ups,
\`min_read_interval: 750ms\`: a file written more often is read every 750 ms), and the
same with \`min_read_interval: 0s\` (read at every write). Baseline: the same lines, paced
the same, produced directly with rskafka (lz4, 5 ms linger, one request in flight).
$LAT_S s per rate, every line checked to arrive exactly once.

| rate | logcatch p50 / p99 / max (ms) | logcatch, \`min_read_interval: 0s\` | direct rskafka p50 / p99 / max (ms) | lines |
|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")")
}

section_scale() {
  local rows=() n out
  for n in 1000 10000; do
    out=$(bench/scale.sh "$bin" "$n" "$SCALE_WINDOW" "  kind: null")
    echo "scale $n: $out"
    val() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }
    rows+=("| $(printf "%'d" "$n") files × 10 lines/s | $(val "$out" start_s) s | $(val "$out" cpu_pct) % | $(val "$out" rss_mb) MB (peak $(val "$out" hwm_mb)) | $(val "$out" lag_bytes) |")
    ((n == 10000)) && memory_rows+=("| 10,000 files × 10 lines/s, null sink (the Scale table) | $(val "$out" hwm_mb | awk '{printf "%.0f", $1}') MiB | $((BUDGET_MIB + 32)) MiB | $(val "$out" hwm_mb | awk -v b=$((BUDGET_MIB + 32)) '{print ($1 <= b) ? "yes" : "no"}') |")
  done
  # The same 10,000 files at a node's rate into Kafka (lz4, the default budget): the
  # memory aim of issue #26 §4.
  start_broker "$DIR"
  out=$(bench/scale.sh "$bin" 10000 "$SCALE_WINDOW" "  kind: kafka
  kafka: {brokers: [\"127.0.0.1:$kport\"], create_topics: true}" 1)
  stop_broker
  echo "scale 10000 × 1 line/s into kafka: $out"
  rows+=("| 10,000 files × 1 line/s, **Kafka sink** (lz4) | $(val "$out" start_s) s | $(val "$out" cpu_pct) % | $(val "$out" rss_mb) MB (peak $(val "$out" hwm_mb)) | $(val "$out" lag_bytes) |")
  memory_rows+=("| 10,000 files × 1 line/s, file → kafka (lz4) | $(val "$out" hwm_mb | awk '{printf "%.0f", $1}') MiB | $((BUDGET_MIB + 32)) MiB | $(val "$out" hwm_mb | awk -v b=$((BUDGET_MIB + 32)) '{print ($1 <= b) ? "yes" : "no"}') |")
  local etcd_out
  etcd_out=$(bench/etcd_put.sh "$bin" 1000)
  echo "etcd: $etcd_out"
  cargo bench --quiet --bench plan -- --noplot >"$DIR/plan.out" 2>&1 || { cat "$DIR/plan.out"; return 1; }
  local plan_rows
  plan_rows=$(awk '/^plan 10,000 desired\//{name=$0; sub("plan 10,000 desired/","",name)} /time:/{gsub(/.*time: *\[/,""); gsub(/\]/,""); print "| `plan`, 10,000 desired: " name " | " $3 " " $4 " (" $1 " " $2 " – " $5 " " $6 ") |"}' "$DIR/plan.out")
  tables+=("### Scale

Null sink (the agent's own cost) unless marked, one glob over N files, each appended 10
lines of 100 B once a second (files staggered over the second), \`tail.max_open_files\`
above N. RSS in MiB.
Start = launch → /status shows every tailer running; CPU over the next $SCALE_WINDOW s.

| load | start → all tailers running | CPU (% of one core) | RSS | lag at the end (bytes) |
|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")

| reconcile | time |
|---|---|
$plan_rows
| \`logcatch etcd put\` of a 1,000-entry value → 1,000 tailers running, every line acknowledged (real etcd, null sink) | $(echo "$etcd_out" | sed 's/.*put_to_running_s=\([0-9.]*\).*/\1/') s |")
}

section_outage() {
  local out
  out=$(bench/outage.sh "$bin" "$tansu" "$RESULTS/outage.csv")
  echo "outage: $out"
  val() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }
  local peak
  peak=$(awk -F, 'NR > 1 && $2 > m {m = $2} END {print m}' "$RESULTS/outage.csv")
  memory_rows+=("| broker frozen ${OUTAGE_S:-60} s at 20 MB/s, then the catch-up (bench/outage.sh) | $(printf '%.0f' "$peak") MiB (before the outage $(val "$out" rss_before_mb)) | $((BUDGET_MIB + 32)) MiB | $(awk -v m="$peak" -v b=$((BUDGET_MIB + 32)) 'BEGIN {print (m <= b) ? "yes" : "no"}') |")
  tables+=("### Broker outage

The broker is frozen (SIGSTOP) for ${OUTAGE_S:-60} s while 20 MB/s of 100 B lines are
appended, then resumed (SIGCONT); the writer keeps writing throughout. Plot:
[outage.svg](bench/results/outage.svg) (RSS, bytes in flight, lag over time).

| RSS before | RSS max during the outage | RSS max overall (catch-up) | \`max_in_flight_bytes\` | catch-up after the broker returns | written |
|---|---|---|---|---|---|
| $(val "$out" rss_before_mb) MiB | $(val "$out" rss_max_outage_mb) MiB | $(awk -F, 'NR > 1 && $2 > m {m = $2} END {print m}' "$RESULTS/outage.csv") MiB | $(val "$out" max_in_flight_mb) MiB | $(val "$out" catchup_s | awk '$1 + 0 > 0 {printf "%.1f s", $1; next} {print "not within the limit"}') | $(val "$out" written_mb) MB |")
}

for s in $SECTIONS; do "section_$s"; done
if ((${#memory_rows[@]})); then
  tables+=("### Memory: peak RSS against \`max_in_flight_bytes\` + 32 MiB

The default \`max_in_flight_bytes\` (64 MiB) everywhere; peak RSS = the agent's VmHWM (the
outage: the largest of its 0.5 s samples), median of the runs and [the largest].

| load | peak RSS | aim | met? |
|---|---|---|---|
$(printf '%s\n' "${memory_rows[@]}")")
fi

if command -v gnuplot >/dev/null && [[ -s $RESULTS/throughput.tsv && -s $RESULTS/outage.csv ]]; then
  gnuplot -e "peers='$RESULTS/throughput.tsv'; outage='$RESULTS/outage.csv'; outdir='$RESULTS'; limit=64; down=${PRE_S:-10}; up=$((${PRE_S:-10} + ${OUTAGE_S:-60}))" bench/plot.gp
fi

machine="$(nproc) cores shared with other work (load average at start: $started_load, at end: $(cut -d' ' -f1-3 /proc/loadavg)), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); $(rustc --version); tansu $(basename "$(dirname "$(dirname "$tansu")")"); rsyslog $(rsyslogd -v | head -1 | awk '{print $2}'); Fluent Bit $("$flb" --version | head -1 | awk '{print $3}') (its own librdkafka 2.15.0); kcat $(dpkg-query -W -f='${Version}' kcat 2>/dev/null) with librdkafka $(python3 -c 'import confluent_kafka; print(confluent_kafka.libversion()[0])')"
body=$(printf '%s\n\n' "${tables[@]}")
echo "$body"
[[ -n ${QUICK:-} ]] && { echo "(QUICK run: BENCHMARKS.md left alone)"; exit 0; }
python3 - "$body" "$machine" "$SECTIONS" <<'PY'
import re, sys, datetime
body, machine, sections = sys.argv[1], sys.argv[2], sys.argv[3]
path = "BENCHMARKS.md"
text = open(path).read()
block = (f"<!-- bench:start -->\n_Generated by `make bench` on {datetime.date.today()} "
         f"(sections: {sections}; {machine})._\n\n{body.strip()}\n<!-- bench:end -->")
text = re.sub(r"<!-- bench:start -->.*<!-- bench:end -->", lambda _: block, text, flags=re.S)
open(path, "w").write(text)
PY
