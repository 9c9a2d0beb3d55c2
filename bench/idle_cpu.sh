#!/usr/bin/env bash
# Idle CPU of logcatch following N idle files, against baselines measured in the same
# run: the agent with 1 file, and `tail -F` (inotify) on the same N files.
# Usage: [WARMUP=30] bench/idle_cpu.sh [binary] [seconds]  (default target/release/logcatch, 20 s)
set -euo pipefail
BIN=${1:-target/release/logcatch}
SECS=${2:-20}
WARMUP=${WARMUP:-30} # startup: every file read once (10,000 files share 1,024 slots)
TICKS=$(getconf CLK_TCK)
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -n 65536 2>/dev/null || true

# CPU ticks (user + system) a process used so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Percent of one core $1 uses over $SECS seconds, after a warm-up.
measure() {
  sleep "$WARMUP"
  local a b
  a=$(ticks "$1"); sleep "$SECS"; b=$(ticks "$1")
  awk -v d=$((b - a)) -v t="$TICKS" -v s="$SECS" 'BEGIN { printf "%.3f", 100 * d / t / s }'
}

make_files() { # dir count
  mkdir -p "$1"
  for ((i = 0; i < $2; i++)); do echo "line $i" >"$1/f$i.log"; done
}

agent() { # count → % of a core
  local dir="$WORK/n$1" port=$((20000 + RANDOM % 20000))
  make_files "$dir" "$1"
  cat >"$WORK/cfg$1.yaml" <<YAML
node: bench
state_dir: $WORK/state$1
logs: [{ path: "$dir/*.log", topic: bench }]
sink: { kind: "null" }
http: { listen: "127.0.0.1:$port" }
YAML
  "$BIN" run --config "$WORK/cfg$1.yaml" 2>"$WORK/agent$1.log" &
  local pid=$!
  measure "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

tail_f() { # count → % of a core
  local dir="$WORK/n$1"
  tail -q -F "$dir"/*.log >/dev/null 2>&1 &
  local pid=$!
  measure "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "cores: $(nproc), load before: $(cut -d' ' -f1-3 /proc/loadavg), window: ${SECS}s"
printf '%-34s %s\n' "process" "% of one core"
printf '%-34s %s\n' "logcatch, 1 idle file" "$(agent 1)"
for n in 1000 10000; do
  printf '%-34s %s\n' "logcatch, $n idle files" "$(agent $n)"
  printf '%-34s %s\n' "tail -F, $n idle files" "$(tail_f $n)"
done
