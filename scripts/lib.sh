# Shared helpers for the scripts; source it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${SWITCHYARD_CACHE_DIR:-$HOME/.cache/switchyard}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="${SWITCHYARD_VENV:-$CACHE_DIR/venv}"
# Where fetch-models.sh puts weights and where the daemon and tests look for them.
export SWITCHYARD_MODELS_DIR="${SWITCHYARD_MODELS_DIR:-$CACHE_DIR/models}"

log() { printf '\n==> %s\n' "$*" >&2; }

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Wait until an HTTP URL answers 200, or fail after $2 seconds.
wait_http() {
  local url="$1" secs="${2:-30}" i
  for ((i = 0; i < secs * 10; i++)); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $url" >&2
  return 1
}

# Wait until something listens on a loopback TCP port, or fail after $2 seconds.
wait_port() {
  local port="$1" secs="${2:-30}" i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for port $port" >&2
  return 1
}

# Python venv with the pinned packages of a requirements file, installed once.
ensure_venv() {
  local req="$1" stamp
  stamp="$VENV/.req-$(sha256sum "$req" | cut -c1-16)"
  if [[ -f "$stamp" ]]; then return 0; fi
  log "python venv at $VENV ($req)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$req"
  touch "$stamp"
}

# A scratch folder ($work) and a list of background processes ($pids), both cleaned up when the
# script exits, however it exits.
scratch() {
  work="$(mktemp -d)"
  pids=()
  trap _scratch_cleanup EXIT
}
_scratch_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
