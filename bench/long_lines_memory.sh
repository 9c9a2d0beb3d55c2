#!/usr/bin/env bash
# long_lines_memory.sh BIN [N] [ROUNDS]: the memory a long line leaves behind. N (400) CRI
# files, each 20 short lines then (LONG=1) one 40,000-byte line written as 16 KiB P
# fragments and its F, then a last short line; BIN follows them with the null sink, and
# once every line is read and 4 s have passed (jemalloc gives freed pages back within
# 1 s) its VmRSS and RssAnon are printed, for LONG=0 and LONG=1, ROUNDS (2) times.
set -euo pipefail
BIN=$1 N=${2:-400} ROUNDS=${3:-2}
one() { # LONG
  local dir port pid want got=0 long=$1
  dir=$(mktemp -d "${BENCH_DIR:-/tmp}/longmem.XXXX")
  mkdir -p "$dir/logs"
  python3 - "$dir/logs" "$long" "$N" <<'PY'
import sys
d, long, n = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
ts = "2026-12-06T18:00:00.000000000Z"
body = "x" * 40000
for i in range(n):
    with open(f"{d}/{i}.log", "w") as f:
        for j in range(20):
            f.write(f"{ts} stdout F short line {j} of file {i}\n")
        if long:
            for k in range(0, len(body), 16384):
                tag = "P" if k + 16384 < len(body) else "F"
                f.write(f"{ts} stdout {tag} {body[k:k + 16384]}\n")
        f.write(f"{ts} stdout F last\n")
PY
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'node: longmem\nstate_dir: %s/state\nlogs: [{path: "%s/logs/*.log", topic: t, format: cri}]\nsink:\n  kind: "null"\nhttp: {listen: "127.0.0.1:%s"}\n' \
    "$dir" "$dir" "$port" >"$dir/c.yaml"
  "$BIN" run -c "$dir/c.yaml" >"$dir/agent.log" 2>&1 &
  pid=$!
  want=$((N * (long ? 22 : 21)))
  for _ in $(seq 600); do
    got=$(curl -s "127.0.0.1:$port/metrics" | awk '/^logcatch_records_sent_total/ {s += $2} END {print s + 0}')
    ((${got%.*} >= want)) && break
    sleep 0.1
  done
  sleep 4
  echo "long=$long files=$N records=$got/$want rss_kib=$(awk '/VmRSS/ {print $2}' /proc/$pid/status) anon_kib=$(awk '/RssAnon/ {print $2}' /proc/$pid/status)"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
for _ in $(seq "$ROUNDS"); do
  one 0
  one 1
done
