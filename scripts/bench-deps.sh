#!/usr/bin/env bash
# Installs what `make bench` needs beyond `make deps` (idempotent; not needed by `make test`):
# the peers of the Kafka benchmark (kcat, rsyslog with omkafka), the librdkafka they run
# with (the one inside PyPI's confluent-kafka wheel: Debian's 2.0.2 cannot talk to tansu),
# perf for profiling and gnuplot for the plots.
# `scripts/bench-deps.sh --print-rdkafka-libdir` prints the directory to put in
# LD_LIBRARY_PATH (RDKAFKA_LIBDIR of ../shared/bench/peers.sh, copied to bench/peers.sh).
set -euo pipefail
source "$(dirname "$0")/install-lib.sh"

cache=${LOGCATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/logcatch}
libdir="$cache/rdkafka-from-confluent-kafka"

if [[ ${1:-} == --print-rdkafka-libdir ]]; then
  echo "$libdir"
  exit 0
fi

apt_packages=()
command -v kcat >/dev/null || apt_packages+=(kcat)
command -v rsyslogd >/dev/null || apt_packages+=(rsyslog)
[[ -e /usr/lib/x86_64-linux-gnu/rsyslog/omkafka.so || -n $(find /usr/lib -name omkafka.so 2>/dev/null | head -1) ]] || apt_packages+=(rsyslog-kafka)
command -v gnuplot >/dev/null || apt_packages+=(gnuplot-nox)
command -v perf >/dev/null || apt_packages+=(linux-perf)
command -v /usr/bin/time >/dev/null || apt_packages+=(time)
command -v bc >/dev/null || apt_packages+=(bc)
apt_install bench-deps "${apt_packages[@]}"

pip_install_confluent_kafka bench-deps
lib=$(python3 - <<'PY'
import glob, os, confluent_kafka
d = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), "confluent_kafka.libs")
print(sorted(glob.glob(os.path.join(d, "librdkafka-*.so.1")))[-1])
PY
)
mkdir -p "$libdir"
ln -sfn "$lib" "$libdir/librdkafka.so.1"
echo "bench-deps: kcat, rsyslogd (omkafka), gnuplot, perf; librdkafka $(python3 -c 'import confluent_kafka; print(confluent_kafka.libversion()[0])') in $libdir"
