#!/usr/bin/env bash
# `make soak` (issue #23): logcatch on a simulated Kubernetes node for SOAK_S (default
# 1800 s; QUICK=1: 240 s), with the declaration in a real etcd with auth, shipping to a
# real broker (tansu, memory storage, lz4):
#   - bench/soak_kubelet.py: PODS (300; QUICK 60) pods alive, one created and one stopped
#     every second, its pod directory and /var/log/containers symlinks removed 5–10 s
#     after its last line; CRI lines with P/F fragments; kubelet rotation by size
#     (ROTATE_BYTES 10 MiB; QUICK 1 MiB), older rotated files gzipped, 5 files kept; a
#     chatty container rotating several times a second
#   - the broker frozen (SIGSTOP … SIGCONT) for FREEZE_S (300; QUICK 45) from a third in
#   - the etcd user's password changed (etcdctl user passwd + password_file rewritten) at
#     70 %; a declaration change put before it, one after it, and one after an etcd
#     restart that follows (so the agent must authenticate again with the new password):
#     whether each reaches the agent is recorded, not assumed
#   - bench/soak_sample.py every 2 s: RSS, CPU, fds, checkpoints.json size and write
#     count, bytes held by deleted files, lag, in flight → CSV; bench/soak.gp plots it
#   - after the writing stops, the agent drains (lag 0), then bench/soak_account.py reads
#     the topic back with librdkafka and accounts for every line, and checks flatness;
#     bench/soak_reconcile.py sets each container's losses against the agent's log
# Results: bench/results/soak[-quick].{csv,png,txt} (SOAK_OUT changes the directory).
# Environment: QUICK, SOAK_S, PODS, FREEZE_S, ROTATE_BYTES, CHATTY_RATE,
# CHATTY_ROTATE_BYTES, CHECKPOINT_EXPIRY (5m; QUICK 30s so that expiry happens within the
# run), DELETED_MAX_BYTES (tail.deleted_files_max_bytes: the agent's default 512MiB;
# smaller makes a QUICK run release deleted files at the bound), DRAIN_LIMIT_S (300),
# BENCH_DIR (/tmp/logcatch-bench), KEEP=1 keeps the node's logs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n ${QUICK:-} ]]; then
  SOAK_S=${SOAK_S:-240} PODS=${PODS:-60} FREEZE_S=${FREEZE_S:-45} ROTATE_BYTES=${ROTATE_BYTES:-1048576}
  CHECKPOINT_EXPIRY=${CHECKPOINT_EXPIRY:-30s} name=soak-quick
else
  SOAK_S=${SOAK_S:-1800} PODS=${PODS:-300} FREEZE_S=${FREEZE_S:-300} ROTATE_BYTES=${ROTATE_BYTES:-10485760}
  CHECKPOINT_EXPIRY=${CHECKPOINT_EXPIRY:-5m} name=soak
fi
export PODS ROTATE_BYTES
OUT=${SOAK_OUT:-bench/results}
DRAIN_LIMIT=${DRAIN_LIMIT_S:-300}
mkdir -p "$OUT" "${BENCH_DIR:-/tmp/logcatch-bench}"
scripts/bench-deps.sh >/dev/null
cargo build --release --quiet --bin logcatch
# The commit built: the report is written half an hour later, when HEAD may have moved.
built=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock vendor || echo "+changes")
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/logcatch
tansu=$(scripts/deps.sh --print-tansu)
. bench/lib.sh
ROOT=$(mktemp -d "${BENCH_DIR:-/tmp/logcatch-bench}/soak.XXXX")
events=$ROOT/events.log
pids=()
cleanup() {
  kill -CONT "$broker" 2>/dev/null || true
  for p in "${pids[@]}" ${broker:-}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${KEEP:-} ]] || rm -rf "$ROOT/var" "$ROOT/broker."*
}
trap cleanup EXIT
event() { echo "$(printf '%.1f' "$(echo "$(now) - $t0" | bc -l)") $*" | tee -a "$events" >&2; }
# CHECKPOINT_EXPIRY in seconds (30s, 5m, 1h).
expiry_s() {
  local n=${CHECKPOINT_EXPIRY%[smh]}
  case $CHECKPOINT_EXPIRY in *h) echo $((n * 3600)) ;; *m) echo $((n * 60)) ;; *) echo "$n" ;; esac
}
at() { local d; d=$(echo "$t0 + $1 - $(now)" | bc -l); (($(echo "$d > 0" | bc -l))) && sleep "$d"; return 0; }

# etcd with auth: root writes, user `logcatch` reads /logcatch/ with a password_file.
start_etcd() {
  etcd --name soak --data-dir "$ROOT/etcd" --listen-client-urls "http://127.0.0.1:$eport" \
    --advertise-client-urls "http://127.0.0.1:$eport" --listen-peer-urls "http://127.0.0.1:$epeer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$epeer" \
    --initial-cluster "soak=http://127.0.0.1:$epeer" >>"$ROOT/etcd.log" 2>&1 &
  etcd_pid=$!
  pids+=("$etcd_pid")
  for _ in $(seq 100); do curl -sf "127.0.0.1:$eport/health" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "etcd did not start: $(tail -3 "$ROOT/etcd.log")" >&2
  return 1
}
eport=$(port) epeer=$(port) hport=$(port)
start_etcd
ctl() { etcdctl --endpoints "127.0.0.1:$eport" "$@"; }
ctl user add root:soak-root >/dev/null
ctl user grant-role root root >/dev/null
ctl role add reader >/dev/null
ctl role grant-permission reader --prefix=true read /logcatch/ >/dev/null
# The agent writes its status back (etcd.status) under its own node's prefix.
ctl role grant-permission reader --prefix=true readwrite /logcatch/status/ >/dev/null
ctl user add logcatch:first-password >/dev/null
ctl user grant-role logcatch reader >/dev/null
ctl auth enable >/dev/null
ctl() { etcdctl --endpoints "127.0.0.1:$eport" --user root:soak-root "$@"; }
printf 'first-password\n' >"$ROOT/etcd-password"
mkdir -p "$ROOT/var/log/containers" "$ROOT/var/log/pods" "$ROOT/var/log/canary"
: >"$ROOT/var/log/canary/a.log"
: >"$ROOT/var/log/canary/b.log"
: >"$ROOT/var/log/canary/c.log"
pods_entry="{\"path\": \"$ROOT/var/log/containers/*.log\", \"topic\": \"soak\", \"format\": \"cri\"}"
canary_entry() { echo "{\"path\": \"$ROOT/var/log/canary/$1.log\", \"topic\": \"soak-canary-$1\"}"; }
declared="$pods_entry"
declare_logs() { ctl put /logcatch/nodes/soak "[$declared]" >/dev/null; }
declare_logs

start_broker "$ROOT" # sets kport, broker (tansu, memory storage)
cat >"$ROOT/logcatch.yaml" <<YAML
node: soak
state_dir: $ROOT/state
etcd:
  endpoints: ["http://127.0.0.1:$eport"]
  keys: [/logcatch/nodes/soak]
  allowed_paths: ["$ROOT/var/log/**"]
  username: logcatch
  password_file: $ROOT/etcd-password
sink:
  kind: kafka
  kafka: {brokers: ["127.0.0.1:$kport"], compression: lz4, create_topics: true, request_timeout: 10s}
http: {listen: "127.0.0.1:$hport"}
tail: {checkpoint_expiry: $CHECKPOINT_EXPIRY${DELETED_MAX_BYTES:+, deleted_files_max_bytes: $DELETED_MAX_BYTES}}
YAML
"$bin" run --config "$ROOT/logcatch.yaml" 2>"$ROOT/agent.log" &
agent=$!
pids+=("$agent")
status_json() { curl -sf --max-time 5 "127.0.0.1:$hport/status" || echo '{}'; }
has_topic() { # TOPIC: 0 when /status lists a tailer on TOPIC
  status_json | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if any(t.get("topic") == sys.argv[1] for t in s.get("tailers", [])) else 1)' "$1"
}
# A declaration change reaches the agent? Puts it, then waits up to 60 s; the answer
# goes into the extra facts of the report.
probe() { # NAME
  declared="$declared, $(canary_entry "$1")"
  declare_logs
  local put=$(now) seen=""
  for _ in $(seq 120); do
    if has_topic "soak-canary-$1"; then seen=$(printf '%.1f' "$(echo "$(now) - $put" | bc -l)"); break; fi
    sleep 0.5
  done
  if [[ -n $seen ]]; then seen="seen after $seen s"; else seen="not seen within 60 s"; fi
  event "probe-$1 $seen"
  echo "\"etcd_change_$1\": \"$seen\"," >>"$ROOT/extra.partial"
}
for _ in $(seq 100); do curl -sf "127.0.0.1:$hport/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
# The first pod comes once the agent has its declarations (/readyz): a file created,
# rotated and deleted before the agent knew it was wanted cannot be read (nor counted).
for _ in $(seq 300); do curl -sf "127.0.0.1:$hport/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

echo "soak: root $ROOT, ${SOAK_S}s, $PODS pods, broker frozen ${FREEZE_S}s, agent pid $agent" >&2
t0=$(now)
: >"$ROOT/extra.partial"
event start
python3 bench/soak_kubelet.py "$ROOT" "$SOAK_S" "$ROOT/manifest.json" >"$ROOT/kubelet.log" 2>&1 &
writer=$!
pids+=("$writer")
python3 bench/soak_sample.py "$agent" "$hport" "$ROOT/state" "$OUT/$name.csv" 2 "$ROOT/stop-sampling" "$events" &
sampler=$!
pids+=("$sampler")

freeze_at=$((SOAK_S / 3)) rotate_at=$((SOAK_S * 7 / 10))
at $((SOAK_S / 5))
probe a # before anything: the control
at "$freeze_at"
kill -STOP "$broker"
event frozen
at $((freeze_at + FREEZE_S))
kill -CONT "$broker"
event resumed
at "$rotate_at"
printf 'second-password\n' | ctl user passwd logcatch --interactive=false >/dev/null
printf 'second-password\n' >"$ROOT/etcd-password.new" && mv "$ROOT/etcd-password.new" "$ROOT/etcd-password"
event rotated
sleep 5
probe b # on the watch that was open before the rotation
kill "$etcd_pid" && wait "$etcd_pid" 2>/dev/null || true
start_etcd
event etcd-restarted
probe c # the agent must connect and authenticate again: with the new password
wait "$writer" || { echo "the simulated kubelet failed: $(tail -3 "$ROOT/kubelet.log")" >&2; exit 1; }
event writer-done
cat "$ROOT/kubelet.log" >&2

# Drain: lag and in-flight at 0 on three checks in a row, within DRAIN_LIMIT.
metric_sum() { curl -sf --max-time 5 "127.0.0.1:$hport/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {printf "%.0f", s}'; }
drained="" zeros=0 drain_start=$(now)
while (($(echo "$(now) - $drain_start < $DRAIN_LIMIT" | bc -l))); do
  if [[ $(metric_sum logcatch_lag_bytes) == 0 && $(metric_sum logcatch_inflight_bytes) == 0 ]]; then
    zeros=$((zeros + 1))
    ((zeros >= 3)) && { drained=$(printf '%.0f' "$(echo "$(now) - $drain_start" | bc -l)"); break; }
  else
    zeros=0
  fi
  sleep 1
done
event "drained ${drained:-no (limit ${DRAIN_LIMIT}s)}"
sleep 10 # a few samples of the idle agent after the drain
curl -sf --max-time 5 "127.0.0.1:$hport/metrics" >"$ROOT/metrics.txt" || : >"$ROOT/metrics.txt"
status_json >"$ROOT/status.json"
touch "$ROOT/stop-sampling"
wait "$sampler" || true
etcd_connected=$(awk '$1 == "logcatch_etcd_connected" {print $2}' "$ROOT/metrics.txt")
etcd_error=$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
def errors(v):  # every non-empty "error" under /status sources, whatever the nesting
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "error" and x:
                yield str(x)
            else:
                yield from errors(x)
    elif isinstance(v, list):
        for x in v:
            yield from errors(x)
print("; ".join(errors(s.get("sources"))) or "none")' "$ROOT/status.json" 2>/dev/null || echo "?")
seen_b=$(grep -c '^[0-9.]* probe-b seen' "$events" || true)
seen_c=$(grep -c '^[0-9.]* probe-c seen' "$events" || true)
{
  echo "{"
  cat "$ROOT/extra.partial"
  echo "\"etcd_connected_at_end\": \"${etcd_connected:-?}\","
  echo "\"etcd_error_in_status_at_end\": $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$etcd_error"),"
  echo "\"drained_after_writer_s\": \"${drained:-not within ${DRAIN_LIMIT}}\","
  echo "\"etcd_change_after_rotation_seen\": $([[ $seen_b == 1 && $seen_c == 1 ]] && echo true || echo false),"
  # The 2 s samples can miss the peak: the kernel's high-water mark of the agent's RSS.
  echo "\"peak_rss_vmhwm_mib\": $(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$agent/status" 2>/dev/null || echo null)"
  echo "}"
} >"$ROOT/extra.json"
kill -TERM "$agent" && wait "$agent" 2>/dev/null || true

{
  echo "soak ${name}: $(date -u +%Y-%m-%dT%H:%MZ), commit $built, load before $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "SOAK_S=$SOAK_S PODS=$PODS FREEZE_S=$FREEZE_S ROTATE_BYTES=$ROTATE_BYTES CHECKPOINT_EXPIRY=$CHECKPOINT_EXPIRY${DELETED_MAX_BYTES:+ DELETED_MAX_BYTES=$DELETED_MAX_BYTES}${CHATTY_RATE:+ CHATTY_RATE=$CHATTY_RATE}"
  echo "events (s since start): $(tr '\n' ';' <"$events")"
  echo
  # Checkpoints of the files read in the catch-up are found gone within expiry/2 and
  # dropped expiry later: flatness is judged once they are.
  settled=$((freeze_at + FREEZE_S + 2 * $(expiry_s) + 10))
  SETTLED_AFTER_S=$settled LOST_JSON=$ROOT/lost.json python3 bench/soak_account.py "$ROOT/manifest.json" "127.0.0.1:$kport" soak "$ROOT/metrics.txt" "$OUT/$name.csv" "$SOAK_S" "$ROOT/extra.json"
  # The totals above can hide a file lost uncounted in one container behind one counted
  # twice in another: per container, against the agent's log.
  python3 bench/soak_reconcile.py "$ROOT/lost.json" "$ROOT/agent.log"
  echo
  echo "agent log, WARN and ERROR lines by message (count, first 100 characters, tailer paths cut):"
  grep -E '^[^ ]+ +(WARN|ERROR) ' "$ROOT/agent.log" | sed -E 's/^[^ ]+ +//; s/ tailer=[^ ]+//' | cut -c1-100 | sort | uniq -c | sort -rn | head -8
} | tee "$OUT/$name.txt"
stop_broker
freeze_end=$((freeze_at + FREEZE_S))
gnuplot -e "csv='$OUT/$name.csv'; out='$OUT/$name.png'; down=$freeze_at; up=$freeze_end; rotated=$rotate_at; written=$SOAK_S" bench/soak.gp
echo "soak: $OUT/$name.txt, $OUT/$name.csv, $OUT/$name.png; agent log and metrics in $ROOT" >&2
