#!/usr/bin/env bash
# A/B of one build under several log-entry settings: wall time from start until the last
# byte of FILE is acknowledged, and the agent's CPU, for each variant in turn, 3 rounds
# (ROUNDS="1 2 3 4 5" for more). A variant is YAML added to the log entry ("" = none);
# one starting "@PATH " tails PATH instead of FILE (JSON lines for merge_json, say:
# bench/json_lines.py writes them); one starting "!BIN " (before any "@PATH ") runs BIN instead
# of the given one (two builds under the same settings).
# SINK=null (default): beside `wc -l` on the same page-cached file. SINK=kafka: into a
# fresh tansu broker per round (lz4, headers, as kafka_ab.sh); COMP=none for no compression;
# KAFKA_EXTRA="headers: false" adds to the sink's kafka settings (every variant).
# Usage: [SINK=null|kafka] bench/config_ab.sh FILE BIN VARIANT...
# e.g.   bench/config_ab.sh lines.log target/release/logcatch "" \
#          ", exclude_lines: ['kube-probe/', '^GET /healthz', 'ELB-HealthChecker/']"
#        SINK=kafka bench/config_ab.sh lines.log target/release/logcatch "" ", encoding: json" \
#          "@json.log " "@json.log , encoding: json" "@json.log , encoding: json, merge_json: log"
set -u
file=$(realpath "$1") bin=$(realpath "$2"); shift 2
cd "$(dirname "$0")/.."
sink=${SINK:-null}
tansu=$(scripts/deps.sh --print-tansu)
cargo build --release --quiet --example await_acked
cat "$file" >/dev/null
for v in "$@"; do [[ $v == @* ]] && { f=${v%% *}; cat "${f#@}" >/dev/null; }; done
. bench/lib.sh
run() {
  local t c yaml='  kind: "null"' tail=$file extra=$1 b=$bin
  if [[ $extra == !* ]]; then
    b=${extra%% *}; [[ $extra == *" "* ]] && extra=${extra#* } || extra=""
    b=$(realpath "${b#!}")
  fi
  if [[ $extra == @* ]]; then
    tail=${extra%% *}; [[ $extra == *" "* ]] && extra=${extra#* } || extra=""
    tail=$(realpath "${tail#@}")
  fi
  [ "$sink" = kafka ] && yaml="  kind: kafka
  kafka: {brokers: [\"127.0.0.1:$kport\"], compression: ${COMP:-lz4}, create_topics: true${KAFKA_EXTRA:+, $KAFKA_EXTRA}}"
  read -r t c _ < <(LOG_EXTRA=$extra TOPIC=$2 run_agent "$b" "$tail" "$yaml") && printf '%.3f/%.2f' "$t" "$c"
}
for r in ${ROUNDS:-1 2 3}; do
  if [ "$sink" = kafka ]; then start_broker; else
    s=$(now); wc -l "$file" >/dev/null; e=$(now); printf 'wc %.3f  ' "$(echo "$e - $s" | bc -l)"
  fi
  for v in $(seq 1 $#); do printf 'v%s %s  ' "$v" "$(run "${!v}" "v$v-$r")"; done; echo
  [ "$sink" = kafka ] && stop_broker
done
