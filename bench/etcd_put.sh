#!/usr/bin/env bash
# etcd_put.sh BIN N: a real etcd, a running agent watching one key, N files of one line;
# times `logcatch etcd put KEY --file VALUE` of a value declaring all N files (one entry
# each) until /status shows N tailers running and every line acknowledged (null sink).
# Prints: entries=N put_to_running_s=<s> put_s=<the put command alone>
set -euo pipefail
BIN=$1 N=$2
DIR=$(mktemp -d "${BENCH_DIR:-/tmp/logcatch-bench}/etcd.XXXX")
trap 'kill $agent $etcd 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
. "$(dirname "$0")/lib.sh"
cport=$(port) pport=$(port) http=$(port)
etcd --data-dir "$DIR/etcd" --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
  --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
  --initial-cluster "default=http://127.0.0.1:$pport" >"$DIR/etcd.log" 2>&1 &
etcd=$!
until etcdctl --endpoints "127.0.0.1:$cport" endpoint health >/dev/null 2>&1; do sleep 0.1; done
mkdir -p "$DIR/logs"
python3 - "$DIR/logs" "$N" "$DIR/value.json" <<'PY'
import json, os, sys
d, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
entries = []
for i in range(n):
    p = os.path.join(d, f"f{i:05d}.log")
    with open(p, "w") as f:
        f.write(f"line of file {i}\n")
    entries.append({"path": p, "topic": f"t{i % 10}"})
json.dump(entries, open(out, "w"))
PY
cat >"$DIR/c.yaml" <<YAML
node: bench
state_dir: $DIR/state
sink: {kind: "null"}
http: {listen: "127.0.0.1:$http"}
tail: {max_open_files: $((N + 100))}
etcd:
  endpoints: ["http://127.0.0.1:$cport"]
  keys: [/logcatch/bench]
  allowed_paths: ["$DIR/logs/**"]
YAML
"$BIN" run --config "$DIR/c.yaml" 2>"$DIR/agent.log" &
agent=$!
until curl -sf "127.0.0.1:$http/status" >/dev/null 2>&1; do sleep 0.05; done
sleep 1
done_count() { curl -sf "127.0.0.1:$http/status" | python3 -c '
import json, sys
rows = json.load(sys.stdin)["tailers"]
print(sum(1 for r in rows if r["state"] == "running" and r["offset"] > 0 and r["lag_bytes"] == 0))' 2>/dev/null || echo 0; }
t0=$(date +%s.%N)
"$BIN" etcd put /logcatch/bench --file "$DIR/value.json" --config "$DIR/c.yaml" >/dev/null
t1=$(date +%s.%N)
until [[ $(done_count) -ge $N ]]; do
  kill -0 "$agent" 2>/dev/null || { echo "agent died: $(tail -3 "$DIR/agent.log")" >&2; exit 1; }
  sleep 0.05
done
t2=$(date +%s.%N)
awk -v n="$N" -v a="$(echo "$t2 - $t0" | bc -l)" -v p="$(echo "$t1 - $t0" | bc -l)" \
  'BEGIN{printf "entries=%d put_to_running_s=%.2f put_s=%.2f\n", n, a, p}'
