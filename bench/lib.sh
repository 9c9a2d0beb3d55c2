# Helpers shared by the benchmark scripts (sourced, not run).
# port: a free loopback port. now: seconds with nanoseconds. cpu_s PID: user + system
# seconds of a process. start_broker DIR: a tansu broker ($tansu) on memory storage in a
# fresh directory under DIR; sets kport, bdir, broker. stop_broker: stops it.
# run_agent BIN FILE SINK_YAML: BIN tails FILE (topic $TOPIC, default bench; $LOG_EXTRA
# adds keys to the log entry, e.g. ", exclude_lines: [x]") into the sink SINK_YAML until
# /status shows every byte acknowledged; prints "seconds cpu_seconds peak_rss_mb" (peak
# RSS: the agent's VmHWM; needs `cargo build --release --example await_acked`). run_fluent_bit_null: below.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
await_acked=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/await_acked
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
start_broker() {
  kport=$(port) bdir=$(mktemp -d "${1:-/tmp}/broker.XXXX")
  (cd "$bdir" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" --storage-engine memory://tansu/) >"$bdir/log" 2>&1 &
  broker=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$kport") 2>/dev/null; do sleep 0.05; done
}
stop_broker() { kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; rm -rf "$bdir"; }
run_agent() {
  local bin=$1 file=$2 sink=$3 work http size start end cpu hwm pid
  work=$(mktemp -d "${BENCH_DIR:-/tmp}/run.XXXX") http=$(port) size=$(stat -c %s "$file")
  printf 'node: bench\nstate_dir: %s/state\nlogs: [{path: %s, topic: %s%s}]\nsink:\n%s\nhttp: {listen: "127.0.0.1:%s"}\ntail: {poll_interval: 20ms}\n' \
    "$work" "$file" "${TOPIC:-bench}" "${LOG_EXTRA:-}" "$sink" "$http" >"$work/c.yaml"
  start=$(now)
  "$bin" run --config "$work/c.yaml" 2>"$work/agent.log" &
  pid=$!
  # Done when the acknowledged offset reaches the file size (examples/await_acked.rs
  # polls from one process; a shell loop of curl and grep took CPU from the agent).
  end=$("$await_acked" "$http" "$size" "$pid") ||
    { echo "agent failed: $(tail -3 "$work/agent.log")" >&2; return 1; }
  cpu=$(cpu_s "$pid") hwm=$(awk '/^VmHWM/{print $2 / 1024}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$work"
  echo "$(echo "$end - $start" | bc -l) $cpu $hwm"
}
# run_fluent_bit_null FLUENT_BIT FILE: Fluent Bit's tail → null on FILE (offsets DB on,
# the buffer sizes of bench/peers.sh, `Exit_On_Eof`); prints "seconds cpu_seconds
# rss_mb": seconds from launch to its log line saying the file ended (its read loop has
# turned every line into a record; the shutdown after it is not counted), CPU and peak
# RSS of the whole process.
run_fluent_bit_null() {
  local flb=$1 file=$2 work start ended
  work=$(mktemp -d "${BENCH_DIR:-/tmp}/flb-null.XXXX")
  cat >"$work/fluent-bit.conf" <<CONF
[SERVICE]
    Flush        1
    Grace        0
    Log_Level    info
[INPUT]
    Name              tail
    Path              $file
    Read_from_Head    On
    Exit_On_Eof       On
    DB                $work/offsets.db
    Buffer_Chunk_Size 512k
    Buffer_Max_Size   1M
    Mem_Buf_Limit     64MB
[OUTPUT]
    Name  null
    Match *
CONF
  start=$(now)
  /usr/bin/time -f '%U %S %M' -o "$work/usage" "$flb" -c "$work/fluent-bit.conf" >"$work/log" 2>&1 ||
    { echo "fluent-bit failed: $(tail -3 "$work/log")" >&2; rm -rf "$work"; return 1; }
  # "[2026/12/04 15:14:12.850] [ info] [input:tail:tail.0] inode=… file=… ended, stop"
  ended=$(sed -n 's/^\[\([0-9/]* [0-9:.]*\)\].* ended, stop$/\1/p' "$work/log" | head -1)
  [[ -n $ended ]] || { echo "fluent-bit: no 'ended, stop' line in its log: $(tail -3 "$work/log")" >&2; rm -rf "$work"; return 1; }
  awk -v s="$start" -v e="$(date -d "$ended" +%s.%N)" '{printf "%.3f %.2f %.1f\n", e - s, $1 + $2, $3 / 1024}' "$work/usage"
  rm -rf "$work"
}
# make_file NAME LINE_BYTES LINES: $DIR/NAME of realistic varied lines (so compression is
# not trivially perfect), made once.
make_file() {
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
