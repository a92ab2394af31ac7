#!/usr/bin/env bash
# Load benchmark: the mock upstream driven directly, then through Switchyard, in one run.
# Prints p50/p99/p99.9 and RPS for each phase and the gateway's added latency and RPS ratio.
# A bare pass-through proxy (`passproxy`: no parsing, routing, ledger or metrics) runs as a third
# target, so the report also says how much of the gap to the mock any proxy on this box pays.
#   RATES=500,1000,2000 BENCH_SECONDS=10 CONNECTIONS=32 scripts/bench.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

RATES="${RATES:-500,1000,2000}"
SECONDS_PER_PHASE="${BENCH_SECONDS:-10}"
CONNECTIONS="${CONNECTIONS:-32}"

log "cargo build --release"
cargo build --release --locked -p switchyard-core -p switchyard-tests -p switchyard-benches --bins

scratch

mock_port="$(free_port)"
gw_port="$(free_port)"
"$TARGET_DIR/release/mock-upstream" --listen "127.0.0.1:$mock_port" --threads 1 >"$work/mock.log" 2>&1 &
pids+=($!)
cat >"$work/switchyard.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
data_dir = "$work/data"
[log]
level = "warn"
[providers.mock]
type = "openai"
base_url = "http://127.0.0.1:$mock_port/v1"
[models."bench"]
targets = [{ provider = "mock", model = "mock-model" }]
TOML
"$TARGET_DIR/release/switchyard" serve --config "$work/switchyard.toml" >"$work/switchyard.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$gw_port/readyz" 60
proxy_port="$(free_port)"
"$TARGET_DIR/release/passproxy" --listen "127.0.0.1:$proxy_port" --upstream "http://127.0.0.1:$mock_port" \
  >"$work/proxy.log" 2>&1 &
pids+=($!)
wait_port "$proxy_port" 30

body() { printf '{"model":"%s","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"What is the capital of France? Answer in one word."}],"max_tokens":16}' "$1"; }
log "load: rates $RATES rps, $SECONDS_PER_PHASE s per phase, max rate with $CONNECTIONS connections ($(nproc) cores)"
"$TARGET_DIR/release/loadgen" \
  --direct "http://127.0.0.1:$mock_port/v1/chat/completions" --direct-body "$(body mock-model)" \
  --gateway "http://127.0.0.1:$gw_port/v1/chat/completions" --gateway-body "$(body bench)" \
  --compare "passproxy=http://127.0.0.1:$proxy_port/v1/chat/completions" \
  --rates "$RATES" --seconds "$SECONDS_PER_PHASE" --connections "$CONNECTIONS" \
  --json "${BENCH_JSON:-$work/bench.json}"
