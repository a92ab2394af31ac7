#!/usr/bin/env bash
# The whole test suite: format and lints, Rust unit and end-to-end tests, the daemon against the
# mock upstream exercised by the official OpenAI Python SDK, the control UI in Chromium, and the
# desktop app under Xvfb. Run scripts/setup.sh once first (system packages).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

log "model weights"
bash scripts/fetch-models.sh >/dev/null

log "control UI (typecheck and build; the daemon embeds it)"
bash scripts/build-ui.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo build (binaries, the desktop app included)"
cargo build --workspace --bins --locked

log "cargo test"
cargo test --workspace --locked -- --skip fault_run

log "fault run: 2,000 requests over two upstreams failing 30% each"
cargo test --locked -p switchyard-tests --test resilience fault_run -- --nocapture

log "OpenAI SDK against the daemon"
ensure_venv tests/python/requirements.txt
scratch

mock_port="$(free_port)"
gw_port="$(free_port)"
# A provider key that must reach the upstream in each format's header, and never show up in
# logs or answers.
export SWITCHYARD_TEST_UPSTREAM_KEY="sk-upstream-secret-$RANDOM$RANDOM"
MOCK_UPSTREAM_API_KEY="$SWITCHYARD_TEST_UPSTREAM_KEY" \
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
api_key = "env::SWITCHYARD_TEST_UPSTREAM_KEY"
[providers.mock-anthropic]
type = "anthropic"
base_url = "http://127.0.0.1:$mock_port/v1"
api_key = "env::SWITCHYARD_TEST_UPSTREAM_KEY"
limit_wait_ms = 0
[providers.mock-gemini]
type = "gemini"
base_url = "http://127.0.0.1:$mock_port/v1beta"
api_key = "env::SWITCHYARD_TEST_UPSTREAM_KEY"
limit_wait_ms = 0

[models."gpt-mock"]
targets = [{ provider = "mock", model = "mock-model" }]
[models."claude-mock"]
targets = [{ provider = "mock-anthropic", model = "claude-mock-upstream" }]
[models."gemini-mock"]
targets = [{ provider = "mock-gemini", model = "gemini-mock-upstream" }]
TOML
"$TARGET_DIR/debug/switchyard" check-config "$work/switchyard.toml"
"$TARGET_DIR/debug/switchyard" serve --config "$work/switchyard.toml" >"$work/switchyard.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$gw_port/readyz" 60 || { cat "$work/switchyard.log"; exit 1; }
if grep -q "$key" "$work/switchyard.log"; then echo "the API key leaked into the log" >&2; exit 1; fi

SWITCHYARD_URL="http://127.0.0.1:$gw_port/v1" SWITCHYARD_BASE="http://127.0.0.1:$gw_port" \
SWITCHYARD_KEY="$key" SWITCHYARD_MODEL="gpt-mock" SWITCHYARD_MODELS="gpt-mock,claude-mock,gemini-mock" \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/python/ || {
    echo "--- switchyard log ---" >&2; tail -50 "$work/switchyard.log" >&2; exit 1;
  }
for secret in "$key" "$SWITCHYARD_TEST_UPSTREAM_KEY"; do
  if grep -q "$secret" "$work/switchyard.log"; then echo "a secret leaked into the log" >&2; exit 1; fi
done

log "control UI in Chromium (Playwright), with 100k ledger records"
(cd app/ui && UI_LEDGER_RECORDS="${UI_LEDGER_RECORDS:-100000}" npm run --silent e2e)

log "desktop app under Xvfb"
bash scripts/app-smoke.sh
log "all tests passed"
