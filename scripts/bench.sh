#!/usr/bin/env bash
# `make bench`: logcatch against baselines and peers measured in the same run, on the
# same files and the same broker (shared, noisy machines: compare the ratios). Prints
# the tables and rewrites the generated part of BENCHMARKS.md and bench/results/.
#
#   throughput : file → null vs `wc -l` on the same page-cached 1 GiB file (100 B and
#                1 KiB lines); file → kafka (lz4, none) vs a raw rskafka producer sending
#                pre-built batches (examples/raw_produce.rs: the broker's ceiling; again
#                with logcatch's default headers, encoded and compressed before the
#                clock starts: the broker's ceiling for logcatch's own records),
#                kcat -P, rsyslog imfile → omkafka (bench/peers.sh, librdkafka 2.16) and
#                Fluent Bit 5.1.1 tail → kafka (offsets DB on); file → null also beside
#                Fluent Bit's tail → null (built by `make bench-deps`)
#   latency    : append → consumable in Kafka at 1,000 and 50,000 lines/s
#                (examples/latency.rs), beside the same lines produced directly
#   scale      : 1,000 and 10,000 files at 10 lines/s each (bench/scale.sh); `plan` for
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
tables=()
started_load=$(cut -d' ' -f1-3 /proc/loadavg)

# Input files: realistic varied lines (so compression is not trivially perfect).
make_file() { # NAME LINE_BYTES LINES
  local f=$DIR/$1
  [[ -s $f ]] && return
  python3 - "$f" "$2" "$3" <<'PY'
import sys
path, width, lines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path + ".partial", "w") as f:
    chunk = []
    for i in range(lines):
        head = f"2026-11-25T10:00:{i % 60:02d}.{i % 1000:03d}Z INFO app: request {i:09d} took {i % 997}ms path=/api/v1/items/{i % 4099} "
        chunk.append((head + "abcdefghijklmnopqrstuvwxyz0123456789" * (width // 36 + 1))[: width - 1] + "\n")
        if len(chunk) == 50000:
            f.write("".join(chunk)); chunk = []
    f.write("".join(chunk))
import os; os.rename(path + ".partial", path)
PY
}

trap 'stop_broker 2>/dev/null || true' EXIT

# A field of a peer's line in $DIR/peers.out: peer_field PEER KEY.
peer_field() { awk -v p="peer=$1" -v k="$2=" '$1 == p {for (i = 2; i <= NF; i++) if (index($i, k) == 1) print substr($i, length(k) + 1)}' "$DIR/peers.out"; }

fmt_range() { printf '%.2f s [%.2f–%.2f]' "$1" "$2" "$3"; }

section_throughput() {
  local rows=() f width lines file bytes
  # 1 GiB each (QUICK: 1/20 of it).
  local n100=null100-$((10737418 / GIB_LINES_SCALE)).log n1k=null1k-$((1048576 / GIB_LINES_SCALE)).log
  make_file "$n100" 100 $((10737418 / GIB_LINES_SCALE))
  make_file "$n1k" 1024 $((1048576 / GIB_LINES_SCALE))
  for f in "$n100" "$n1k"; do
    file=$DIR/$f bytes=$(stat -c %s "$file") lines=$(wc -l <"$file")
    cat "$file" >/dev/null # page cache
    local wc_runs=() lc_runs=() lc_cpu=() wc_cpu=() fb_runs=() fb_cpu=() fb_rss=()
    for _ in $(seq "$RUNS"); do
      local s t c r; s=$(now); /usr/bin/time -f '%U %S' -o "$DIR/wc.time" wc -l "$file" >/dev/null; t=$(calc "$(now) - $s")
      wc_runs+=("$t") wc_cpu+=("$(awk '{print $1 + $2}' "$DIR/wc.time")")
      read -r t c < <(run_agent "$bin" "$file" "  kind: null")
      lc_runs+=("$t") lc_cpu+=("$c")
      read -r t c r < <(run_fluent_bit_null "$flb" "$file")
      fb_runs+=("$t") fb_cpu+=("$c") fb_rss+=("$r")
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

  # file → Kafka: 2,000,000 lines of 100 B; every peer against the same broker.
  make_file "lines100-$((2000000 / GIB_LINES_SCALE)).log" 100 $((2000000 / GIB_LINES_SCALE))
  file=$DIR/lines100-$((2000000 / GIB_LINES_SCALE)).log bytes=$(stat -c %s "$file") lines=$(wc -l <"$file")
  cat "$file" >/dev/null
  : >"$RESULTS/throughput.tsv"
  local comp
  for comp in lz4 none; do
    local raw_runs=() rawh_runs=() lc_runs=() nh_runs=() kcat_runs=() rs_runs=() lc_cpus=() rs_cpus=() fb_runs=() fb_cpus=() fb_rsss=() r
    for r in $(seq "$RUNS"); do
      start_broker "$DIR" # fresh per round: memory storage keeps every record
      raw_runs+=("$("$raw" "127.0.0.1:$kport" "raw-$comp-$r" "$file" "$comp")")
      read -r t c < <(TOPIC="lc-$comp-$r" run_agent "$bin" "$file" "  kind: kafka
  kafka: {brokers: [\"127.0.0.1:$kport\"], compression: $comp, create_topics: true}")
      lc_runs+=("$t") lc_cpus+=("$c")
      read -r t c < <(TOPIC="nh-$comp-$r" run_agent "$bin" "$file" "  kind: kafka
  kafka: {brokers: [\"127.0.0.1:$kport\"], compression: $comp, create_topics: true, headers: false}")
      nh_runs+=("$t")
      PEERS="kcat rsyslog fluent-bit" bench/peers.sh "$file" "127.0.0.1:$kport" "$comp" >"$DIR/peers.out"
      kcat_runs+=("$(awk '/^peer=kcat/{for(i=1;i<=NF;i++) if($i~/^seconds=/){sub("seconds=","",$i); print $i}}' "$DIR/peers.out")")
      rs_runs+=("$(awk '/^peer=rsyslog/{for(i=1;i<=NF;i++) if($i~/^seconds=/){sub("seconds=","",$i); print $i}}' "$DIR/peers.out")")
      rs_cpus+=("$(awk '/^peer=rsyslog/{for(i=1;i<=NF;i++) if($i~/^cpu_s=/){sub("cpu_s=","",$i); print $i}}' "$DIR/peers.out")")
      fb_runs+=("$(peer_field fluent-bit seconds)") fb_cpus+=("$(peer_field fluent-bit cpu_s)") fb_rsss+=("$(peer_field fluent-bit rss_mb)")
      stop_broker
      # The same records as logcatch's, pre-encoded, on a broker of its own: memory
      # storage keeps every record, and logcatch (lz4) ran 1.3 × slower with a run of
      # these records just before it on the same broker.
      start_broker "$DIR"
      rawh_runs+=("$("$raw" "127.0.0.1:$kport" "rawh-$comp-$r" "$file" "$comp" --headers bench --encoded)") # node: bench, as in run_agent
      stop_broker
    done
    read -r rawm rawmin rawmax < <(printf '%s\n' "${raw_runs[@]}" | median)
    read -r rawhm rawhmin rawhmax < <(printf '%s\n' "${rawh_runs[@]}" | median)
    read -r lm lmin lmax < <(printf '%s\n' "${lc_runs[@]}" | median)
    read -r nhm nhmin nhmax < <(printf '%s\n' "${nh_runs[@]}" | median)
    read -r km kmin kmax < <(printf '%s\n' "${kcat_runs[@]}" | median)
    read -r rsm rsmin rsmax < <(printf '%s\n' "${rs_runs[@]}" | median)
    read -r lcm _ _ < <(printf '%s\n' "${lc_cpus[@]}" | median)
    read -r rscm _ _ < <(printf '%s\n' "${rs_cpus[@]}" | median)
    read -r fbm fbmin fbmax < <(printf '%s\n' "${fb_runs[@]}" | median)
    read -r fbcm _ _ < <(printf '%s\n' "${fb_cpus[@]}" | median)
    read -r fbrm _ _ < <(printf '%s\n' "${fb_rsss[@]}" | median)
    local mbps="%.0f MB/s, %.2f M lines/s"
    rows+=("| file → kafka ($comp): logcatch | $(printf "$mbps" "$(calc "$bytes/$lm/1000000")" "$(calc "$lines/$lm/1000000")") | $(printf "%.2f × ceiling (%.2f × the same records pre-encoded), %.1f × rsyslog, %.2f × kcat, %.1f × Fluent Bit" "$(calc "$rawm/$lm")" "$(calc "$rawhm/$lm")" "$(calc "$rsm/$lm")" "$(calc "$km/$lm")" "$(calc "$fbm/$lm")") | $(fmt_range "$lm" "$lmin" "$lmax"), CPU $(printf '%.1f' "$lcm") s | ≥ 0.8 × ceiling, ≥ 2 × rsyslog |")
    rows+=("| file → kafka ($comp): logcatch, \`headers: false\` | $(printf "$mbps" "$(calc "$bytes/$nhm/1000000")" "$(calc "$lines/$nhm/1000000")") | $(printf '%.2f × ceiling' "$(calc "$rawm/$nhm")") | $(fmt_range "$nhm" "$nhmin" "$nhmax") | |")
    rows+=("| file → kafka ($comp): raw rskafka (ceiling) | $(printf "$mbps" "$(calc "$bytes/$rawm/1000000")" "$(calc "$lines/$rawm/1000000")") | 1 | $(fmt_range "$rawm" "$rawmin" "$rawmax") | |")
    rows+=("| file → kafka ($comp): raw rskafka, the same records as logcatch's (default headers) encoded and compressed before the clock starts | $(printf "$mbps" "$(calc "$bytes/$rawhm/1000000")" "$(calc "$lines/$rawhm/1000000")") | $(printf '%.2f × ceiling' "$(calc "$rawm/$rawhm")") | $(fmt_range "$rawhm" "$rawhmin" "$rawhmax") | |")
    rows+=("| file → kafka ($comp): kcat -P | $(printf "$mbps" "$(calc "$bytes/$km/1000000")" "$(calc "$lines/$km/1000000")") | $(printf '%.2f × ceiling' "$(calc "$rawm/$km")") | $(fmt_range "$km" "$kmin" "$kmax") | |")
    rows+=("| file → kafka ($comp): rsyslog imfile → omkafka | $(printf "$mbps" "$(calc "$bytes/$rsm/1000000")" "$(calc "$lines/$rsm/1000000")") | $(printf '%.2f × ceiling' "$(calc "$rawm/$rsm")") | $(fmt_range "$rsm" "$rsmin" "$rsmax"), CPU $(printf '%.1f' "$rscm") s | |")
    rows+=("| file → kafka ($comp): Fluent Bit tail → kafka (offsets DB, Flush 1) | $(printf "$mbps" "$(calc "$bytes/$fbm/1000000")" "$(calc "$lines/$fbm/1000000")") | $(printf '%.2f × ceiling' "$(calc "$rawm/$fbm")") | $(fmt_range "$fbm" "$fbmin" "$fbmax"), CPU $(printf '%.1f' "$fbcm") s, RSS $(printf '%.0f' "$fbrm") MB | |")
    printf '%s\n' "${rows[@]: -7}"
    if [[ $comp == lz4 ]]; then
      printf 'logcatch\t%s\nlogcatch (no headers)\t%s\nraw rskafka (ceiling)\t%s\nkcat -P\t%s\nrsyslog omkafka\t%s\nFluent Bit\t%s\n' \
        "$(calc "$bytes/$lm/1000000")" "$(calc "$bytes/$nhm/1000000")" "$(calc "$bytes/$rawm/1000000")" "$(calc "$bytes/$km/1000000")" "$(calc "$bytes/$rsm/1000000")" "$(calc "$bytes/$fbm/1000000")" >"$RESULTS/throughput.tsv"
    fi
  done
  tables+=("### Throughput

$lines lines of 100 B for Kafka; CPU = user + system seconds of the agent (or peer).

| benchmark | rate | ratio (same run) | medians of $RUNS [min–max] | aim |
|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")")
}

section_latency() {
  local rows=() rate
  start_broker "$DIR"
  for rate in 1000 50000; do
    local out direct work http
    direct=$("$lat" direct "127.0.0.1:$kport" "lat-direct-$rate" "$rate" "$LAT_S")
    work=$(mktemp -d "$DIR/lat.XXXX") http=$(port)
    : >"$work/app.log"
    printf 'node: bench\nstate_dir: %s/state\nlogs: [{path: %s/app.log, topic: lat-lc-%s}]\nsink:\n  kind: kafka\n  kafka: {brokers: ["127.0.0.1:%s"], create_topics: true}\nhttp: {listen: "127.0.0.1:%s"}\n' \
      "$work" "$work" "$rate" "$kport" "$http" >"$work/c.yaml"
    "$bin" run --config "$work/c.yaml" 2>"$work/agent.log" &
    local agent=$!
    until curl -sf "127.0.0.1:$http/status" >/dev/null 2>&1; do sleep 0.05; done
    out=$("$lat" file "127.0.0.1:$kport" "lat-lc-$rate" "$rate" "$LAT_S" "$work/app.log")
    kill -TERM "$agent"; wait "$agent" || true
    rm -rf "$work"
    echo "rate $rate: logcatch $out; direct $direct"
    val() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }
    rows+=("| $(printf "%'d" "$rate") lines/s | $(val "$out" p50_ms) / $(val "$out" p99_ms) / $(val "$out" max_ms) | $(val "$direct" p50_ms) / $(val "$direct" p99_ms) / $(val "$direct" max_ms) | $(val "$out" lines) |")
  done
  stop_broker
  tables+=("### Latency: append → consumable in Kafka

Each line carries the wall-clock time of its \`write\`; a consumer in the same process
reads the topic from the start and records (time read − time written). Default config
(\`linger: 5ms\`, lz4, \`poll_interval: 250ms\` with inotify wake-ups). Baseline: the same
lines, paced the same, produced directly with rskafka (lz4, 5 ms linger, one request in
flight).
$LAT_S s per rate, every line checked to arrive exactly once.

| rate | logcatch p50 / p99 / max (ms) | direct rskafka p50 / p99 / max (ms) | lines |
|---|---|---|---|
$(printf '%s\n' "${rows[@]}")")
}

section_scale() {
  local rows=() n out
  for n in 1000 10000; do
    out=$(bench/scale.sh "$bin" "$n" "$SCALE_WINDOW" "  kind: null")
    echo "scale $n: $out"
    val() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }
    rows+=("| $(printf "%'d" "$n") files × 10 lines/s | $(val "$out" start_s) s | $(val "$out" cpu_pct) % | $(val "$out" rss_mb) MB (peak $(val "$out" hwm_mb)) | $(val "$out" lag_bytes) |")
  done
  local etcd_out
  etcd_out=$(bench/etcd_put.sh "$bin" 1000)
  echo "etcd: $etcd_out"
  cargo bench --quiet --bench plan -- --noplot >"$DIR/plan.out" 2>&1 || { cat "$DIR/plan.out"; return 1; }
  local plan_rows
  plan_rows=$(awk '/^plan 10,000 desired\//{name=$0; sub("plan 10,000 desired/","",name)} /time:/{gsub(/.*time: *\[/,""); gsub(/\]/,""); print "| `plan`, 10,000 desired: " name " | " $3 " " $4 " (" $1 " " $2 " – " $5 " " $6 ") |"}' "$DIR/plan.out")
  tables+=("### Scale

Null sink (the agent's own cost), one glob over N files, each appended 10 lines of 100 B
once a second (files staggered over the second), \`tail.max_open_files\` above N.
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
  tables+=("### Broker outage

The broker is frozen (SIGSTOP) for ${OUTAGE_S:-60} s while 20 MB/s of 100 B lines are
appended, then resumed (SIGCONT); the writer keeps writing throughout. Plot:
[outage.svg](bench/results/outage.svg) (RSS, bytes in flight, lag over time).

| RSS before | RSS max during the outage | RSS max overall (catch-up) | \`max_in_flight_bytes\` | catch-up after the broker returns | written |
|---|---|---|---|---|---|
| $(val "$out" rss_before_mb) MB | $(val "$out" rss_max_outage_mb) MB | $(awk -F, 'NR > 1 && $2 > m {m = $2} END {print m}' "$RESULTS/outage.csv") MB | $(val "$out" max_in_flight_mb) MiB | $(val "$out" catchup_s | awk '$1 + 0 > 0 {printf "%.1f s", $1; next} {print "not within the limit"}') | $(val "$out" written_mb) MB |")
}

for s in $SECTIONS; do "section_$s"; done

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
