#!/usr/bin/env bash
# `make run`: runs the agent on config/local.yaml with a small writer appending a line
# to data/live/app.log every second. Ctrl-C stops both (the agent checkpoints first).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${LOGCATCH_BIN:-target/debug/logcatch}
mkdir -p data/live
(
  n=0
  while sleep 1; do
    n=$((n + 1))
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) INFO  demo: line $n from the local writer" >>data/live/app.log
  done
) &
writer=$!
trap 'kill $writer 2>/dev/null || true' EXIT
"$bin" run --config config/local.yaml &
agent=$!
trap 'kill $writer 2>/dev/null || true; kill -TERM $agent 2>/dev/null || true; wait $agent' EXIT INT TERM
wait $agent
