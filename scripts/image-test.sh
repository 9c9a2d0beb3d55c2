#!/usr/bin/env bash
# Builds the container image from the Dockerfile and proves it works: runs it (read-only
# root, as the DaemonSet does) with a mounted config and a mounted log dir, checks
# /healthz, that every line of the log file comes out on stdout (`podman logs`), including
# lines appended while it runs, and that SIGTERM stops it cleanly (exit 0).
#
# No container registry is reachable here: the shared build-local-bases.sh makes local
# stand-ins for the two base images (in CI the shared dir is a sibling of the clone).
# Usage: scripts/image-test.sh   (make image-test). Needs root and podman (installed by
# build-local-bases.sh). Set LOGCATCH_IMAGE to keep another tag.
#
# Not part of .ci/run: from an empty podman store it took 19 minutes here (base images
# 2m15s, the image's release build 17m on 2 shared cores), on top of a CI that already
# builds tansu (11 min) and the tests. With cached layers it takes about 10 seconds.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bases=${LOGCATCH_BASES_SCRIPT:-$(dirname "$repo")/shared/container/build-local-bases.sh}
image=${LOGCATCH_IMAGE:-localhost/logcatch:image-test}
[[ -x $bases ]] || { echo "image-test: $bases not found (the shared dir must be beside the repo)" >&2; exit 1; }
started=$(date +%s)
step() { echo "image-test: [$(($(date +%s) - started))s] $*"; }

step "local base images"
CONTAINERS_CONF=$("$bases")
export CONTAINERS_CONF
step "podman build $image"
podman build --pull=never -q -t "$image" "$repo" >/dev/null

work=$(mktemp -d)
base=logcatch-image-test-$$
name=$base
cleanup() {
  podman rm -f -i -t 0 "$base" "$base-cap" "$base-nocap" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/config" "$work/logs" "$work/state"
# The image runs as uid 10001: the mounted dirs must be readable (logs) and writable (state).
chmod 0755 "$work" "$work/config" "$work/logs"
chmod 0777 "$work/state"
cat >"$work/config/logcatch.yaml" <<'YAML'
node: image-test
state_dir: /var/lib/logcatch
logs:
  - path: /var/log/app/*.log
    topic: app
sink:
  kind: stdout
tail:
  poll_interval: 100ms
http:
  listen: "0.0.0.0:9733"
shutdown_timeout: 5s
YAML
for i in $(seq 1 100); do echo "image-test line $i"; done >"$work/logs/app.log"
chmod 0644 "$work/config/logcatch.yaml" "$work/logs/app.log"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "podman run (config + logs mounted, read-only root, port $port)"
podman run -d --name "$name" --read-only -p "127.0.0.1:$port:9733" \
  -v "$work/config:/etc/logcatch:ro" -v "$work/logs:/var/log/app:ro" \
  -v "$work/state:/var/lib/logcatch" "$image" >/dev/null

fail() {
  echo "image-test: FAILED: $*" >&2
  podman logs "$name" 2>&1 | tail -20 >&2 || true
  exit 1
}
wait_until() { # seconds, description, command...
  local deadline=$(($(date +%s) + $1)) what=$2
  shift 2
  until "$@"; do
    (($(date +%s) < deadline)) || fail "timed out waiting for $what"
    sleep 0.5
  done
}
healthy() { [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz") == 200 ]]; }
lines_out() { (($(podman logs "$name" 2>/dev/null | grep -c "\"image-test line [0-9]*\"") >= $1)); }

wait_until 30 "/healthz = 200" healthy
step "/healthz = 200"
wait_until 30 "the 100 lines of app.log on stdout" lines_out 100
for i in $(seq 101 150); do echo "image-test line $i"; done >>"$work/logs/app.log"
wait_until 30 "the 50 appended lines on stdout" lines_out 150
podman logs "$name" 2>/dev/null | grep -q '"line":"image-test line 150"' || fail "line 150 is not a JSON record"
step "all 150 lines came out on stdout"

podman stop -t 20 "$name" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
[[ $code == 0 ]] || fail "exit code $code after SIGTERM"
[[ -n $(ls -A "$work/state") ]] || fail "no checkpoint written to the state volume"
step "SIGTERM: clean exit, checkpoint written"

# The DaemonSet's securityContext: uid 0, every capability dropped but DAC_READ_SEARCH,
# read-only root, no_new_privs. It must read a log that another user keeps private
# (mode 0600 in a 0700 dir) — and without the capability it must not (proves it is needed).
private_run() { # name, extra podman args...
  local run=$1
  shift
  rm -rf "$work/state" && mkdir "$work/state" && chmod 0700 "$work/state"
  podman run -d --name "$run" --read-only --user 0:0 --cap-drop ALL "$@" \
    --security-opt no-new-privileges -v "$work/config:/etc/logcatch:ro" \
    -v "$work/private:/var/log/app:ro" -v "$work/state:/var/lib/logcatch" "$image" >/dev/null
}
mkdir "$work/private"
echo "image-test line 0" >"$work/private/app.log"
chown -R 4242:4242 "$work/private"
chmod 0700 "$work/private"
chmod 0600 "$work/private/app.log"
name=$base-cap
private_run "$name" --cap-add DAC_READ_SEARCH
wait_until 30 "the private log read with CAP_DAC_READ_SEARCH" lines_out 1
podman rm -f -t 0 "$name" >/dev/null
name=$base-nocap
private_run "$name"
wait_until 30 "the permission error without the capability" \
  sh -c "podman logs $name 2>&1 | grep -qi 'permission denied'"
lines_out 1 && fail "read a private log without CAP_DAC_READ_SEARCH"
step "uid 0 + only CAP_DAC_READ_SEARCH reads another user's 0600 log; without it, denied. OK"
