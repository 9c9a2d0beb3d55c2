#!/usr/bin/env bash
# `make bench`: logcatch against baselines measured in the same run, on the same files
# and the same broker (shared, noisy machines: only ratios are compared). Prints a
# Markdown table and rewrites the generated part of BENCHMARKS.md.
#
#   file → null : logcatch (sink null) vs `wc -l` on the same page-cached file
#   file → kafka: logcatch (sink kafka, lz4 and none) vs a raw rskafka producer sending
#                 pre-built batches of 5,000 records (examples/raw_produce.rs: the broker's
#                 ceiling) and, when installed, the librdkafka peers of
#                 ../shared/bench/peers.sh (kcat -P, rsyslog imfile → omkafka)
#
# Environment: RUNS (default 3), LINES (default 2,000,000), BENCH_DIR (default /tmp/logcatch-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} LINES=${LINES:-2000000} DIR=${BENCH_DIR:-/tmp/logcatch-bench}
cargo build --release --quiet --bin logcatch --example raw_produce
bin=$PWD/target/release/logcatch raw=$PWD/target/release/examples/raw_produce
tansu=$(scripts/deps.sh --print-tansu)
mkdir -p "$DIR"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%s %s %s\n", m, a[1], a[NR]}'; }

# Input files: realistic varied lines (so compression is not trivially perfect).
make_file() { # NAME LINE_BYTES
  local f=$DIR/$1
  [[ -s $f ]] && return
  python3 - "$f" "$2" "$LINES" <<'PY'
import sys
path, width, lines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "w") as f:
    chunk = []
    for i in range(lines):
        head = f"2026-11-25T10:00:{i % 60:02d}.{i % 1000:03d}Z INFO app: request {i:09d} took {i % 997}ms path=/api/v1/items/{i % 4099} "
        chunk.append((head + "abcdefghijklmnopqrstuvwxyz0123456789" * (width // 36 + 1))[: width - 1] + "\n")
        if len(chunk) == 50000:
            f.write("".join(chunk)); chunk = []
    f.write("".join(chunk))
PY
}

# Runs the agent on FILE with SINK_YAML until every byte is acknowledged; prints seconds.
run_agent() { # FILE SINK_YAML
  local file=$1 sink=$2 work http size start
  work=$(mktemp -d "$DIR/run.XXXX") http=$(port) size=$(stat -c %s "$file")
  printf 'node: bench\nstate_dir: %s/state\nlogs: [{path: %s, topic: %s}]\nsink:\n%s\nhttp: {listen: "127.0.0.1:%s"}\ntail: {poll_interval: 20ms}\n' \
    "$work" "$file" "${TOPIC:-bench}" "$sink" "$http" >"$work/c.yaml"
  start=$(now)
  "$bin" run --config "$work/c.yaml" 2>"$work/agent.log" &
  local pid=$!
  # Done when the acknowledged offset reaches the file size.
  until curl -sf "127.0.0.1:$http/status" 2>/dev/null | grep -q "\"offset\":$size,"; do
    kill -0 "$pid" 2>/dev/null || { echo "agent failed: $(tail -3 "$work/agent.log")" >&2; return 1; }
    sleep 0.01
  done
  local end; end=$(now)
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$work"
  echo "$end - $start" | bc -l
}

results=()
row() { results+=("| $1 | $2 | $3 | $4 | $5 |"); echo "  $1: $2 ($3)"; }

make_file lines100.log 100
make_file lines1k.log 1024
for f in lines100.log lines1k.log; do
  file=$DIR/$f bytes=$(stat -c %s "$DIR/$f")
  cat "$file" >/dev/null # page cache
  read -r wc_med wc_min wc_max < <(for _ in $(seq "$RUNS"); do s=$(now); wc -l "$file" >/dev/null; echo "$(now) - $s" | bc -l; done | median)
  read -r lc_med lc_min lc_max < <(for _ in $(seq "$RUNS"); do run_agent "$file" "  kind: null"; done | median)
  mbps=$(echo "$bytes / $lc_med / 1000000" | bc -l)
  lps=$(echo "$LINES / $lc_med" | bc -l)
  ratio=$(echo "$wc_med / $lc_med" | bc -l)
  row "file → null, $f" "$(printf '%.0f MB/s, %.2f M lines/s' "$mbps" "$(echo "$lps/1000000" | bc -l)")" \
    "$(printf '%.2f × wc -l' "$ratio")" "$(printf 'logcatch %.2f s [%.2f–%.2f], wc -l %.3f s [%.3f–%.3f]' "$lc_med" "$lc_min" "$lc_max" "$wc_med" "$wc_min" "$wc_max")" "aim ≥ 0.5 × wc -l"
done

kport=$(port) bdir=$(mktemp -d "$DIR/broker.XXXX")
(cd "$bdir" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" --storage-engine memory://tansu/) >"$bdir/log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
sleep 0.5
file=$DIR/lines100.log bytes=$(stat -c %s "$file")
for comp in lz4 none; do
  read -r raw_med raw_min raw_max < <(for r in $(seq "$RUNS"); do "$raw" "127.0.0.1:$kport" "raw-$comp-$r" "$file" "$comp"; done | median)
  read -r lc_med lc_min lc_max < <(for r in $(seq "$RUNS"); do
    TOPIC="lc-$comp-$r" run_agent "$file" "  kind: kafka
  kafka: {brokers: [\"127.0.0.1:$kport\"], compression: $comp, create_topics: true}"; done | median)
  lps=$(echo "$LINES / $lc_med" | bc -l)
  row "file → kafka ($comp), 100 B lines" "$(printf '%.2f M lines/s, %.0f MB/s' "$(echo "$lps/1000000" | bc -l)" "$(echo "$bytes/$lc_med/1000000" | bc -l)")" \
    "$(printf '%.2f × raw rskafka' "$(echo "$raw_med / $lc_med" | bc -l)")" \
    "$(printf 'logcatch %.2f s [%.2f–%.2f], raw rskafka %.2f s [%.2f–%.2f]' "$lc_med" "$lc_min" "$lc_max" "$raw_med" "$raw_min" "$raw_max")" "aim ≥ 0.8 × ceiling"
done

table=$(printf '%s\n' "| benchmark | logcatch | ratio (same run) | medians of $RUNS [min–max] | target |" "|---|---|---|---|---|" "${results[@]}")
echo "$table"
machine="$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); $(rustc --version); tansu $(basename "$(dirname "$(dirname "$tansu")")")"
python3 - "$table" "$machine" <<'PY'
import re, sys, datetime
table, machine = sys.argv[1], sys.argv[2]
path = "BENCHMARKS.md"
text = open(path).read()
block = f"<!-- bench:start -->\n_Generated by `make bench` on {datetime.date.today()} ({machine})._\n\n{table}\n<!-- bench:end -->"
text = re.sub(r"<!-- bench:start -->.*<!-- bench:end -->", lambda _: block, text, flags=re.S)
open(path, "w").write(text)
PY
