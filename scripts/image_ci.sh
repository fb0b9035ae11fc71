#!/usr/bin/env bash
# Build the image and smoke-test it (`make image-test`) on a machine that may have no Docker daemon
# and no access to a registry of base images (CI). Installs what is missing from Debian (docker.io,
# debootstrap), starts a private dockerd with no bridge, no iptables and no forwarding (containers use
# --network host; all traffic stays on loopback), builds a local Debian bookworm base with python3 and
# venv from the machine's configured Debian mirror, runs `make image-test` on it with the legacy
# builder, and stops the daemon it started (by its pid). Leaves no daemon or container running.
#
# Environment:
#   IMAGE_CI_BASE        use this base image instead of building one (e.g. python:3.11.14-slim-bookworm
#                        when a registry is reachable); default: the local debootstrap base
#   IMAGE_CI_DATA_ROOT   dockerd --data-root (default /var/lib/amazonpay-image-ci); the local base is
#                        kept there, so a second run on the same machine skips debootstrap
#   IMAGE_CI_REBUILD_BASE=1  rebuild the local base even if it exists
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
LOCAL_BASE=amazonpay-local-base:bookworm-python3
DATA_ROOT=${IMAGE_CI_DATA_ROOT:-/var/lib/amazonpay-image-ci}
RUN_DIR=$(mktemp -d /tmp/amazonpay-image-ci.XXXXXX)
SOCKET="$RUN_DIR/docker.sock"
dockerd_pid=""
policy_rc_added=""
data_root_was_mounted=""

log() { echo "image-ci [+$(( $(date +%s) - started ))s]: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

cleanup() {
  local code=$?
  if [ -n "$dockerd_pid" ]; then
    # Containers of this run first (the smoke test removes its own; this catches an aborted run).
    local left
    left=$(docker ps -aq --filter label=amazonpay-image-test 2>/dev/null || true)
    if [ -n "$left" ]; then
      # shellcheck disable=SC2086
      docker rm -f $left >/dev/null 2>&1 || true
    fi
    log "stopping dockerd (pid $dockerd_pid)"
    as_root kill -TERM "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      as_root kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.5
    done
    if as_root kill -0 "$dockerd_pid" 2>/dev/null; then
      log "dockerd did not stop; killing pid $dockerd_pid"
      as_root kill -KILL "$dockerd_pid" 2>/dev/null || true
    fi
  fi
  # dockerd leaves its network namespace handle and the data root's private bind mount behind.
  if [ -d "$RUN_DIR" ]; then
    awk -v d="$RUN_DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
      as_root umount "$m" || true
    done
  fi
  if [ -z "$data_root_was_mounted" ]; then
    while mountpoint -q "$DATA_ROOT" 2>/dev/null; do as_root umount "$DATA_ROOT" || break; done
  fi
  if [ -n "$policy_rc_added" ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
  as_root rm -rf "$RUN_DIR"
  log "finished in $(( $(date +%s) - started ))s (exit $code)"
  exit "$code"
}
trap cleanup EXIT

# --- 1. Install what is missing (Debian packages; nothing else is downloaded).
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
if [ -z "${IMAGE_CI_BASE:-}" ]; then
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing ${missing[*]}"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # Keep the package's init script from starting a daemon this script would not own.
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod 0755 /usr/sbin/policy-rc.d
    policy_rc_added=1
  fi
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# --- 2. Start a private daemon: no bridge network, no iptables, no forwarding or masquerading.
export DOCKER_HOST="unix://$SOCKET"
as_root mkdir -p "$DATA_ROOT"
if mountpoint -q "$DATA_ROOT"; then data_root_was_mounted=1; fi
log "starting dockerd (data root $DATA_ROOT)"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
# Started directly (not through a function, which would background a subshell), so $! is dockerd
# itself (or sudo, which relays SIGTERM to it).
"${sudo_cmd[@]}" dockerd \
  --host "$DOCKER_HOST" \
  --data-root "$DATA_ROOT" \
  --exec-root "$RUN_DIR/exec" \
  --pidfile "$RUN_DIR/dockerd.pid" \
  --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
  --storage-driver=overlay2 \
  >"$RUN_DIR/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 1 120); do
  if docker version >/dev/null 2>&1; then break; fi
  if ! kill -0 "$dockerd_pid" 2>/dev/null; then
    cat "$RUN_DIR/dockerd.log" >&2
    log "dockerd exited during start-up"
    dockerd_pid=""
    exit 1
  fi
  sleep 0.5
done
docker version --format 'image-ci: docker server {{.Server.Version}}' >&2
[ "$(id -u)" -eq 0 ] || as_root chmod 0666 "$SOCKET"

# --- 3. The base image: given, or a local debootstrap of bookworm (kept in the data root).
debian_mirror() {
  # The first Debian archive (not the security archive) configured for apt on this machine.
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local uri
  uri=$(
    for f in "${files[@]}"; do
      [ -f "$f" ] || continue
      case "$f" in
        *.sources) awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$f" ;;
        *) awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$f" ;;
      esac
    done | grep -v -- '-security' | head -n 1
  )
  echo "${uri:-http://deb.debian.org/debian}"
}

base=${IMAGE_CI_BASE:-$LOCAL_BASE}
if [ -z "${IMAGE_CI_BASE:-}" ]; then
  if [ "${IMAGE_CI_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    log "reusing local base $LOCAL_BASE"
  else
    mirror=$(debian_mirror)
    rootfs="$RUN_DIR/rootfs"
    t0=$(date +%s)
    log "debootstrap --variant=minbase bookworm from $mirror"
    as_root debootstrap --variant=minbase \
      --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$rootfs" "$mirror" >"$RUN_DIR/debootstrap.log" 2>&1 \
      || { tail -n 40 "$RUN_DIR/debootstrap.log" >&2; exit 1; }
    as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    as_root tar -C "$rootfs" -c . | docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
    as_root rm -rf "$rootfs"
    log "local base built in $(( $(date +%s) - t0 ))s"
  fi
fi

# --- 4. Build and smoke-test. The container reaches PostgreSQL over TCP on loopback: the machine's
# server on 127.0.0.1:5432 unless TEST_DATABASE_URL names another.
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    export TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres"
  else
    log "no PostgreSQL on 127.0.0.1:5432: set TEST_DATABASE_URL to a loopback server"
    exit 1
  fi
fi
# BuildKit would try to pull its frontend image; the legacy builder
# needs nothing but the base.
log "make image-test PYTHON_IMAGE=$base (DOCKER_BUILDKIT=0)"
DOCKER_BUILDKIT=0 make image-test PYTHON_IMAGE="$base"
log "image built and smoke-tested"
