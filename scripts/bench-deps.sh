#!/usr/bin/env bash
# Installs what `make bench` needs beyond `make deps` (idempotent; not needed by `make test`):
# the peers of the Kafka benchmark (kcat, rsyslog with omkafka, Fluent Bit built from
# source), the librdkafka they run with (the one inside PyPI's confluent-kafka wheel:
# Debian's 2.0.2 cannot talk to tansu), perf for profiling and gnuplot for the plots.
# `scripts/bench-deps.sh --print-rdkafka-libdir` prints the directory to put in
# LD_LIBRARY_PATH (RDKAFKA_LIBDIR of ../shared/bench/peers.sh, copied to bench/peers.sh);
# `--print-fluent-bit` prints the Fluent Bit binary.
#
# Fluent Bit: no registry here ships it, so it is built once (3 minutes on 2 idle cores,
# up to 20 on busy ones) into the tool cache, keyed by version and build options, from
# the source in FLUENT_BIT_SRC (a `git archive` tarball or a directory), else
# ../shared/peers/fluent-bit-$FLUENT_BIT_VERSION.tar.xz beside the checkout, else a clone
# of the pinned tag (recipe: ../shared/notes/fluent-bit.md).
set -euo pipefail
source "$(dirname "$0")/install-lib.sh"
repo=$(cd "$(dirname "$0")/.." && pwd)

cache=${LOGCATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/logcatch}
libdir="$cache/rdkafka-from-confluent-kafka"

FLUENT_BIT_VERSION=5.1.1
# FLB_MINIMAL turns every plugin off; these turn back on what the benchmarks use (tail
# with its offsets database, kafka, null). simdutf does not build with Debian 12's GCC 12
# and serves only the UTF-16 encoders.
fluent_bit_cmake_args=(
  -DCMAKE_BUILD_TYPE=Release -DFLB_MINIMAL=On
  -DFLB_IN_TAIL=On -DFLB_OUT_KAFKA=On -DFLB_OUT_NULL=On -DFLB_OUT_STDOUT=On -DFLB_OUT_FILE=On
  -DFLB_PREFER_SYSTEM_LIB_SQLITE=On -DFLB_SQLDB=On -DFLB_PARSER=On -DFLB_RECORD_ACCESSOR=On
  -DFLB_TLS=On -DFLB_WASM=Off -DFLB_LUAJIT=Off -DFLB_EXAMPLES=Off
  -DFLB_USE_SIMDUTF=No -DFLB_UNICODE_ENCODER=No
)
fluent_bit_key=$(printf '%s\n' "${fluent_bit_cmake_args[@]}" | sha256sum | cut -c1-8)
fluent_bit_root="$cache/fluent-bit-$FLUENT_BIT_VERSION-$fluent_bit_key"
fluent_bit_bin="$fluent_bit_root/bin/fluent-bit"

case ${1:-} in
  --print-rdkafka-libdir) echo "$libdir"; exit 0 ;;
  --print-fluent-bit) echo "$fluent_bit_bin"; exit 0 ;;
  "") ;;
  *) echo "bench-deps: unknown argument $1 (--print-rdkafka-libdir, --print-fluent-bit)" >&2; exit 2 ;;
esac

apt_packages=()
command -v kcat >/dev/null || apt_packages+=(kcat)
command -v rsyslogd >/dev/null || apt_packages+=(rsyslog)
[[ -e /usr/lib/x86_64-linux-gnu/rsyslog/omkafka.so || -n $(find /usr/lib -name omkafka.so 2>/dev/null | head -1) ]] || apt_packages+=(rsyslog-kafka)
command -v gnuplot >/dev/null || apt_packages+=(gnuplot-nox)
command -v perf >/dev/null || apt_packages+=(linux-perf)
command -v /usr/bin/time >/dev/null || apt_packages+=(time)
command -v bc >/dev/null || apt_packages+=(bc)
if [[ ! -x $fluent_bit_bin ]]; then
  for tool in cmake flex bison pkg-config make g++; do
    command -v $tool >/dev/null || apt_packages+=("$tool")
  done
  for dev in libyaml-dev libssl-dev zlib1g-dev libsqlite3-dev; do
    dpkg -s "$dev" >/dev/null 2>&1 || apt_packages+=("$dev")
  done
fi
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
# Fluent Bit, built through a scratch directory so a half-finished build never looks installed.
if [[ ! -x $fluent_bit_bin ]]; then
  work="$fluent_bit_root.partial"
  rm -rf "$work"
  mkdir -p "$work/src"
  shared_tarball="$repo/../shared/peers/fluent-bit-$FLUENT_BIT_VERSION.tar.xz"
  if [[ -n ${FLUENT_BIT_SRC:-} && -d $FLUENT_BIT_SRC ]]; then
    echo "bench-deps: Fluent Bit $FLUENT_BIT_VERSION from $FLUENT_BIT_SRC"
    cp -a "$FLUENT_BIT_SRC/." "$work/src/"
  elif [[ -n ${FLUENT_BIT_SRC:-} ]]; then
    [[ -f $FLUENT_BIT_SRC ]] || { echo "bench-deps: FLUENT_BIT_SRC=$FLUENT_BIT_SRC is neither a directory nor a tarball" >&2; exit 1; }
    echo "bench-deps: Fluent Bit $FLUENT_BIT_VERSION from $FLUENT_BIT_SRC"
    tar -xaf "$FLUENT_BIT_SRC" -C "$work/src" --strip-components=1
  elif [[ -f $shared_tarball ]]; then
    echo "bench-deps: Fluent Bit $FLUENT_BIT_VERSION from $shared_tarball"
    tar -xJf "$shared_tarball" -C "$work/src" --strip-components=1
  else
    echo "bench-deps: Fluent Bit $FLUENT_BIT_VERSION from a clone of github.com/fluent/fluent-bit (tag v$FLUENT_BIT_VERSION)"
    git clone --quiet --depth 1 --branch "v$FLUENT_BIT_VERSION" https://github.com/fluent/fluent-bit "$work/src"
  fi
  [[ -f $work/src/CMakeLists.txt ]] || { echo "bench-deps: no CMakeLists.txt in the Fluent Bit source ($work/src)" >&2; exit 1; }
  echo "bench-deps: building Fluent Bit $FLUENT_BIT_VERSION into $fluent_bit_root (once, 3–20 minutes; log: $work/build.log)"
  mkdir -p "$work/src/build"
  (
    cd "$work/src/build"
    cmake .. "${fluent_bit_cmake_args[@]}"
    make -j"$(nproc)" fluent-bit-bin
  ) >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; echo "bench-deps: the Fluent Bit build failed (log: $work/build.log)" >&2; exit 1; }
  mkdir -p "$work/bin"
  cp "$work/src/build/bin/fluent-bit" "$work/bin/fluent-bit"
  rm -rf "$work/src"
  rm -rf "$fluent_bit_root"
  mv "$work" "$fluent_bit_root"
fi
"$fluent_bit_bin" --version | head -1 | grep -q "v$FLUENT_BIT_VERSION" || { echo "bench-deps: $fluent_bit_bin is not Fluent Bit v$FLUENT_BIT_VERSION" >&2; exit 1; }

echo "bench-deps: kcat, rsyslogd (omkafka), gnuplot, perf, Fluent Bit $fluent_bit_bin; librdkafka $(python3 -c 'import confluent_kafka; print(confluent_kafka.libversion()[0])') in $libdir"
