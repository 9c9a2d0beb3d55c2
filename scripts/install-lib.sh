# Install steps shared by scripts/deps.sh and scripts/bench-deps.sh (sourced, not run).
# Each function does nothing when there is nothing to install; LABEL prefixes progress.

# Debian packages through apt-get (as root, or through sudo).
apt_install() { # LABEL PACKAGE...
  local label=$1
  shift
  (($#)) || return 0
  echo "$label: installing $* (apt-get)"
  local sudo_cmd=()
  [[ $(id -u) == 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# PyPI packages through pip.
pip_install() { # LABEL REQUIREMENT...
  local label=$1
  shift
  (($#)) || return 0
  echo "$label: installing $* (pip)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}

# librdkafka inside PyPI's confluent-kafka wheel: Debian's librdkafka is too old to talk
# to tansu.
pip_install_confluent_kafka() { # LABEL
  python3 -c 'import confluent_kafka' 2>/dev/null || pip_install "$1" 'confluent-kafka>=2.10'
}

# A crate's binaries built once into ROOT (keyed by the caller on version, features and
# rustc), through a scratch target dir so a half-finished build never looks installed.
cargo_install_cached() { # LABEL ROOT NOTE CRATE VERSION [CARGO-INSTALL-ARGS...]
  local label=$1 root=$2 note=$3 crate=$4 version=$5
  shift 5
  [[ -x $root/bin/$crate ]] && return 0
  echo "$label: building $crate $version into $root ($note)"
  mkdir -p "$(dirname "$root")"
  cargo install --locked --quiet "$crate" --version "$version" "$@" \
    --root "$root.partial" --target-dir "$root.target"
  rm -rf "$root"
  mv "$root.partial" "$root"
  rm -rf "$root.target"
}
