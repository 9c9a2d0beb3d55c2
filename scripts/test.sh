#!/usr/bin/env bash
# Every test of the project (`make test` runs this after the lints): logcatch's unit and
# integration tests against real etcd and tansu servers, then the vendored rskafka's own
# unit tests (upstream's and the patch's). Runs every test binary even when one fails
# (--no-fail-fast) and ends with one line counting every test it ran.
set -uo pipefail
cd "$(dirname "$0")/.."

tansu=$(scripts/deps.sh --print-tansu)
[[ -x $tansu ]] || { echo "tansu not installed at $tansu: run \`make deps\`" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT

TANSU_BIN=$tansu ${CARGO:-cargo} test --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
${CARGO:-cargo} test -p rskafka --lib --no-fail-fast 2>&1 | tee -a "$log"
vendored=${PIPESTATUS[0]}
((status != 0)) || status=$vendored

# cargo prints one `test result: ok. 5 passed; 0 failed; 1 ignored; ...` per test binary.
read -r passed failed ignored < <(awk '/^test result:/ { p += $4; f += $6; i += $8 }
  END { print p + 0, f + 0, i + 0 }' "$log")
if ((status != 0 && failed == 0)); then
  echo "cargo test exited with $status without a failing test to count (a build error, or a test binary that crashed)" >&2
fi
echo "tests: $passed passed, $failed failed, $ignored skipped"
exit "$status"
