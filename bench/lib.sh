# Helpers shared by the benchmark scripts (sourced, not run).
# port: a free loopback port. now: seconds with nanoseconds. cpu_s PID: user + system
# seconds of a process. start_broker DIR: a tansu broker ($tansu) on memory storage in a
# fresh directory under DIR; sets kport, bdir, broker. stop_broker: stops it.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
start_broker() {
  kport=$(port) bdir=$(mktemp -d "${1:-/tmp}/broker.XXXX")
  (cd "$bdir" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" --storage-engine memory://tansu/) >"$bdir/log" 2>&1 &
  broker=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$kport") 2>/dev/null; do sleep 0.05; done
}
stop_broker() { kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; rm -rf "$bdir"; }
