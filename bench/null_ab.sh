#!/usr/bin/env bash
# A/B of file → null throughput: wall time from start until the last byte of FILE is
# acknowledged (null sink), for each BIN in turn, beside `wc -l` on the same page-cached
# file, 3 rounds (ROUNDS="1 2 3 4 5" for more); each agent figure is wall/CPU seconds.
# A BIN named fluent-bit runs Fluent Bit's tail → null instead (run_fluent_bit_null in
# bench/lib.sh: wall = launch → its log says the file ended), e.g.
#   bench/null_ab.sh lines.log target/release/logcatch "$(scripts/bench-deps.sh --print-fluent-bit)"
# Usage: bench/null_ab.sh FILE BIN...
set -u
file=$(realpath "$1"); shift
cd "$(dirname "$0")/.."
cargo build --release --quiet --example await_acked
cat "$file" >/dev/null
. bench/lib.sh
run() {
  local t c
  if [[ $(basename "$1") == fluent-bit ]]; then
    read -r t c _ < <(run_fluent_bit_null "$1" "$file") && printf '%.3f/%.2f' "$t" "$c"
  else
    read -r t c _ < <(run_agent "$1" "$file" '  kind: "null"') && printf '%.3f/%.2f' "$t" "$c"
  fi
}
for r in ${ROUNDS:-1 2 3}; do
  s=$(now); wc -l "$file" >/dev/null; e=$(now); printf 'wc %.3f  ' "$(echo "$e - $s" | bc -l)"
  for b in "$@"; do printf '%s %s  ' "$(basename $b)" "$(run $b)"; done; echo
done
