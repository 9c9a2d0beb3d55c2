#!/usr/bin/env bash
# outage.sh BIN TANSU OUT_CSV: the broker stops answering for OUTAGE_S (default 60) while
# RATE_MB (default 20) MB/s of 100-byte lines are appended to the tailed file.
# "Down" = the broker process is frozen with SIGSTOP and resumed with SIGCONT: requests
# hang as with a dead host and no data is lost (tansu's memory storage would forget the
# topic on a restart). Writes OUT_CSV (t_s,rss_mb,in_flight_mb,lag_mb,phase) every 0.5 s
# and prints: rss_before_mb rss_max_outage_mb max_in_flight_mb catchup_s written_mb.
# Catch-up = from SIGCONT until the acknowledged offset is within 1 MB of the file's end
# (the writer keeps writing meanwhile). PRE_S (default 10) of normal running come first.
set -euo pipefail
BIN=$1 TANSU=$2 CSV=$3
OUTAGE=${OUTAGE_S:-60} RATE=${RATE_MB:-20} PRE=${PRE_S:-10} LIMIT=${CATCHUP_LIMIT_S:-300}
DIR=$(mktemp -d "${BENCH_DIR:-/tmp/logcatch-bench}/outage.XXXX")
trap 'kill -CONT $broker 2>/dev/null; kill $writer $agent $broker 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
. "$(dirname "$0")/lib.sh"
tansu=$TANSU start_broker "$DIR" # sets kport, broker
http=$(port)
: >"$DIR/app.log"
cat >"$DIR/c.yaml" <<YAML
node: bench
state_dir: $DIR/state
logs: [{path: $DIR/app.log, topic: outage}]
sink:
  kind: kafka
  kafka: {brokers: ["127.0.0.1:$kport"], create_topics: true, request_timeout: 10s, max_in_flight_bytes: ${MAX_IN_FLIGHT_MB:-64}MiB}
http: {listen: "127.0.0.1:$http"}
YAML
"$BIN" run --config "$DIR/c.yaml" 2>"$DIR/agent.log" &
agent=$!
python3 - "$DIR/app.log" "$RATE" <<'PY' &
import os, sys, time
path, rate = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
line = b"2026-11-25T10:00:00.000Z INFO app: request took 12ms path=/api/v1/items " + b"x" * 26 + b"\n"
per_tick = int(rate * 1e6 / len(line) / 100)  # 10 ms ticks
chunk = line * per_tick
start, tick = time.time(), 0
while True:
    os.write(fd, chunk)
    tick += 1
    time.sleep(max(0.0, start + tick * 0.01 - time.time()))
PY
writer=$!
sample() { # phase -> prints lag_mb, appends a CSV row
  local rss status
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$agent/status")
  status=$(curl -sf --max-time 2 "127.0.0.1:$http/status" || echo '{}')
  python3 -c '
import json, sys, time
s = json.loads(sys.argv[1] or "{}")
t = (s.get("tailers") or [{}])[0]
lag = (t.get("file_size", 0) - t.get("offset", 0)) / 1e6
inflight = s.get("sink", {}).get("in_flight_bytes", 0) / 2**20
print(f"{lag:.1f}")
with open(sys.argv[2], "a") as f:
    f.write(f"{time.time() - float(sys.argv[3]):.1f},{int(sys.argv[4]) / 1024:.1f},{inflight:.1f},{lag:.1f},{sys.argv[5]}\n")
' "$status" "$CSV" "$t0" "$rss" "$1"
}
echo "t_s,rss_mb,in_flight_mb,lag_mb,phase" >"$CSV"
t0=$(date +%s.%N)
end=$(echo "$t0 + $PRE" | bc -l)
while (($(echo "$(date +%s.%N) < $end" | bc -l))); do sample before >/dev/null; sleep 0.5; done
rss_before=$(awk '/^VmRSS/{print $2/1024}' "/proc/$agent/status")
kill -STOP "$broker"
end=$(echo "$t0 + $PRE + $OUTAGE" | bc -l) rss_max=0
while (($(echo "$(date +%s.%N) < $end" | bc -l))); do
  sample outage >/dev/null
  rss=$(awk '/^VmRSS/{print $2/1024}' "/proc/$agent/status")
  rss_max=$(echo "if ($rss > $rss_max) $rss else $rss_max" | bc -l)
  sleep 0.5
done
kill -CONT "$broker"
resumed=$(date +%s.%N) catchup=""
while (($(echo "$(date +%s.%N) < $resumed + $LIMIT" | bc -l))); do
  lag=$(sample catch-up)
  if (($(echo "$lag < 1" | bc -l))); then catchup=$(echo "$(date +%s.%N) - $resumed" | bc -l); break; fi
  sleep 0.5
done
for _ in 1 2 3 4 5 6; do sample after >/dev/null; sleep 0.5; done
written=$(stat -c %s "$DIR/app.log")
printf 'rss_before_mb=%.1f rss_max_outage_mb=%.1f max_in_flight_mb=%s catchup_s=%s written_mb=%.0f\n' \
  "$rss_before" "$rss_max" "${MAX_IN_FLIGHT_MB:-64}" "${catchup:-none within ${LIMIT}s}" "$(echo "$written / 1000000" | bc -l)"
