#!/usr/bin/env bash
# The whole test suite: format and lints, Rust unit and end-to-end tests, then the daemon
# against the mock upstream exercised by the official OpenAI Python SDK.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo build (binaries)"
cargo build --workspace --bins --locked

log "cargo test"
cargo test --workspace --locked

log "OpenAI SDK against the daemon"
ensure_venv tests/python/requirements.txt
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mock_port="$(free_port)"
gw_port="$(free_port)"
"$TARGET_DIR/debug/mock-upstream" --listen "127.0.0.1:$mock_port" >"$work/mock.log" 2>&1 &
pids+=($!)
key="sy-test-$(date +%s)-$RANDOM"
hash="$(printf '%s\n' "$key" | "$TARGET_DIR/debug/switchyard" hash-key)"
cat >"$work/switchyard.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
data_dir = "$work/data"

[[auth.keys]]
id = "sdk-test"
hash = "$hash"

[providers.mock]
type = "openai"
base_url = "http://127.0.0.1:$mock_port/v1"

[models."gpt-mock"]
targets = [{ provider = "mock", model = "mock-model" }]
TOML
"$TARGET_DIR/debug/switchyard" check-config "$work/switchyard.toml"
"$TARGET_DIR/debug/switchyard" serve --config "$work/switchyard.toml" >"$work/switchyard.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$gw_port/readyz" 60 || { cat "$work/switchyard.log"; exit 1; }
if grep -q "$key" "$work/switchyard.log"; then echo "the API key leaked into the log" >&2; exit 1; fi

SWITCHYARD_URL="http://127.0.0.1:$gw_port/v1" SWITCHYARD_KEY="$key" SWITCHYARD_MODEL="gpt-mock" \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/python/test_openai_sdk.py || {
    echo "--- switchyard log ---" >&2; tail -50 "$work/switchyard.log" >&2; exit 1;
  }
if grep -q "$key" "$work/switchyard.log"; then echo "the API key leaked into the log" >&2; exit 1; fi
log "all tests passed"
