#!/usr/bin/env bash
# Ledger benchmark: the same gateway with the ledger on and off, in one run, against the mock
# upstream. Reports the added p99 of each (vs the mock driven directly) and their ratio (the
# fixed-rate phase runs in alternating slices, so drift of a shared machine hits all alike), then
# checks that the ledger holds every call the gateway served (or says how many it dropped).
#   RATES=1000 BENCH_SECONDS=20 scripts/bench-ledger.sh     (20,000 requests per fixed phase)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

RATES="${RATES:-1000}"
SECONDS_PER_PHASE="${BENCH_SECONDS:-20}"
CONNECTIONS="${CONNECTIONS:-32}"

log "cargo build --release"
cargo build --release --locked -p switchyard-core -p switchyard-tests -p switchyard-benches --bins

scratch

mock_port="$(free_port)"
"$TARGET_DIR/release/mock-upstream" --listen "127.0.0.1:$mock_port" --threads 1 >"$work/mock.log" 2>&1 &
pids+=($!)
start_gateway() { # name port ledger-enabled
  cat >"$work/$1.toml" <<TOML
[server]
listen = "127.0.0.1:$2"
data_dir = "$work/$1-data"
[log]
level = "warn"
[local]
enabled = false
[ledger]
enabled = $3
[providers.mock]
type = "openai"
base_url = "http://127.0.0.1:$mock_port/v1"
[models."bench"]
targets = [{ provider = "mock", model = "mock-model" }]
[prices.models."mock-model"]
input = 0.15
output = 0.60
TOML
  "$TARGET_DIR/release/switchyard" serve --config "$work/$1.toml" >"$work/$1.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$2/readyz" 60
}
on_port="$(free_port)"
off_port="$(free_port)"
start_gateway ledger-on "$on_port" true
start_gateway ledger-off "$off_port" false

body() { printf '{"model":"%s","user":"bench-user","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"What is the capital of France? Answer in one word."}],"max_tokens":16}' "$1"; }
log "load: $RATES rps for $SECONDS_PER_PHASE s per gateway, then max rate with $CONNECTIONS connections ($(nproc) cores)"
"$TARGET_DIR/release/loadgen" \
  --direct "http://127.0.0.1:$mock_port/v1/chat/completions" --direct-body "$(body mock-model)" \
  --gateway "http://127.0.0.1:$on_port/v1/chat/completions" --gateway-body "$(body bench)" \
  --compare "ledger_off=http://127.0.0.1:$off_port/v1/chat/completions" \
  --rates "$RATES" --seconds "$SECONDS_PER_PHASE" --rounds "${ROUNDS:-10}" --connections "$CONNECTIONS" \
  --json "${BENCH_JSON:-$work/bench.json}"

log "ledger (gateway = ledger on)"
served="$(curl -fsS "http://127.0.0.1:$on_port/metrics" | awk '/^switchyard_requests_total/ {s += $NF} END {printf "%d", s}')"
curl -fsS "http://127.0.0.1:$on_port/admin/stats" >"$work/stats.json"
python3 - "$served" "$work/stats.json" <<'PY'
import json, sys
served = int(sys.argv[1])
s = json.load(open(sys.argv[2]))
l = s["ledger"]
day = s["days"][0]["totals"]
print(f"calls served (switchyard_requests_total): {served}")
print(f"records in the ledger: {l['records']}  dropped: {l['dropped']} "
      f"(buffer full: {l['dropped_buffer_full']}, write errors: {l['dropped_write_error']})")
print(f"today's totals: {day['requests']} requests, {day['prompt_tokens']} prompt + "
      f"{day['completion_tokens']} completion tokens, ${day['cost_usd']:.6f}")
ok = l["records"] + l["dropped"] == served and day["requests"] == l["records"]
print("every call is a record or a counted drop" if ok else "MISMATCH")
sys.exit(0 if ok else 1)
PY
