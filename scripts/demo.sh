#!/usr/bin/env bash
# `make demo`: the whole product in one command. Starts a local etcd and a tansu Kafka
# broker on loopback, declares a log in etcd with `logcatch etcd put`, runs the agent with
# the Kafka sink, appends lines, and prints the records read back from Kafka, the
# agent's `logcatch status` and the status it wrote back to etcd (`logcatch etcd status`). Everything lives in data/demo and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh >/dev/null
cargo build --quiet
bin=target/debug/logcatch
tansu=$(scripts/deps.sh --print-tansu)
demo=$PWD/data/demo
rm -rf "$demo" && mkdir -p "$demo/broker" "$demo/logs"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_port=$(port) peer_port=$(port) kafka_port=$(port) http_port=$(port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== starting etcd on 127.0.0.1:$etcd_port and tansu on 127.0.0.1:$kafka_port"
etcd --data-dir "$demo/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "default=http://127.0.0.1:$peer_port" >"$demo/etcd.log" 2>&1 &
pids+=($!)
(cd "$demo/broker" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
  --advertised-listener-url "tcp://127.0.0.1:$kafka_port" --storage-engine memory://tansu/) >"$demo/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do etcdctl --endpoints "127.0.0.1:$etcd_port" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done

cat >"$demo/logcatch.yaml" <<YAML
node: demo-node
state_dir: $demo/state
sink:
  kind: kafka
  kafka: { brokers: ["127.0.0.1:$kafka_port"], create_topics: true, compression: lz4 }
etcd:
  endpoints: ["http://127.0.0.1:$etcd_port"]
  keys: ["/logcatch/nodes/\${NODE_NAME:-demo-node}"]
  allowed_paths: ["$demo/logs/**"]
http: { listen: "127.0.0.1:$http_port" }
YAML

echo "== declaring $demo/logs/app.log on topic demo in etcd"
echo "[{\"path\": \"$demo/logs/app.log\", \"topic\": \"demo\"}]" |
  "$bin" etcd put /logcatch/nodes/demo-node --endpoints "http://127.0.0.1:$etcd_port"

echo "== running the agent"
"$bin" run --config "$demo/logcatch.yaml" 2>"$demo/agent.log" &
pids+=($!)
for i in $(seq 1 20); do echo "$(date -u +%H:%M:%S) demo line $i" >>"$demo/logs/app.log"; sleep 0.1; done

echo "== records in Kafka (topic demo), read back with librdkafka"
python3 tests/tools/consume.py "127.0.0.1:$kafka_port" demo 20 30
echo "== logcatch status"
for _ in $(seq 50); do "$bin" status --addr "http://127.0.0.1:$http_port" >/dev/null 2>&1 && break; sleep 0.2; done
"$bin" status --addr "http://127.0.0.1:$http_port"
echo "== what the node wrote back to etcd, gathered across nodes (logcatch etcd status)"
status() { "$bin" etcd status /logcatch/nodes/demo-node --endpoints "http://127.0.0.1:$etcd_port" "$@"; }
# Written at most once per etcd.status.interval (5 s): wait for the running tailer.
for _ in $(seq 75); do status 2>/dev/null | grep -qE 'synced +1/1' && break; sleep 0.2; done
status
