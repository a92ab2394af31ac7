#!/usr/bin/env bash
# Exact-hit benchmark: one temperature-0 request repeated through the gateway, so every call
# after the first is an exact cache hit; the mock upstream driven directly in the same run is the
# baseline. Prints p50/p99 of each at the fixed rates and their ratio.
# Then semantic hits (a reworded question: embedding, ANN search, verifier) at lower rates.
#   RATES=1000 BENCH_SECONDS=20 scripts/bench-cache.sh      (SEMANTIC=0 skips the second part)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

RATES="${RATES:-1000}"
SECONDS_PER_PHASE="${BENCH_SECONDS:-20}"

log "cargo build --release"
cargo build --release --locked -p switchyard-core -p switchyard-tests -p switchyard-benches --bins

scratch

mock_port="$(free_port)"
"$TARGET_DIR/release/mock-upstream" --listen "127.0.0.1:$mock_port" --threads 1 >"$work/mock.log" 2>&1 &
pids+=($!)
gw_port="$(free_port)"
cat >"$work/gw.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
data_dir = "$work/data"
[log]
level = "warn"
[local]
enabled = false
[cache]
semantic = false
[providers.mock]
type = "openai"
base_url = "http://127.0.0.1:$mock_port/v1"
[models."bench"]
targets = [{ provider = "mock", model = "mock-model" }]
TOML
"$TARGET_DIR/release/switchyard" serve --config "$work/gw.toml" >"$work/gw.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$gw_port/readyz" 60

body() { printf '{"model":"%s","temperature":0,"messages":[{"role":"user","content":"What is the capital of France? Answer in one word."}],"max_tokens":16}' "$1"; }
# Prime the entry, and check that the next call is a hit.
# POST a chat body to a gateway port; prints the response's x-switchyard-cache outcome.
cache_outcome() {
  curl -fsS -D - -o /dev/null -H 'content-type: application/json' -d "$2" \
    "http://127.0.0.1:$1/v1/chat/completions" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-switchyard-cache" {print $2}'
}
cache_outcome "$gw_port" "$(body bench)" >/dev/null
sleep 0.2
hit="$(cache_outcome "$gw_port" "$(body bench)")"
[[ "$hit" == hit_exact ]] || { echo "expected an exact hit, got '$hit'" >&2; exit 1; }
log "load: $RATES rps for $SECONDS_PER_PHASE s (gateway = exact cache hits; direct = the mock upstream)"
"$TARGET_DIR/release/loadgen" \
  --direct "http://127.0.0.1:$mock_port/v1/chat/completions" --direct-body "$(body mock-model)" \
  --gateway "http://127.0.0.1:$gw_port/v1/chat/completions" --gateway-body "$(body bench)" \
  --rates "$RATES" --seconds "$SECONDS_PER_PHASE" --rounds "${ROUNDS:-10}" --no-max \
  --json "${BENCH_JSON:-$work/bench.json}"

# Semantic hits: a gateway with the local embedder, asked a rewording of a stored question, so
# every call is an exact miss, an embedding (MiniLM on the CPU), an ANN search, the verifier and a
# hit. Far slower than an exact hit by design, so it runs at lower rates.
if [[ "${SEMANTIC:-1}" == 1 ]]; then
  sem_port="$(free_port)"
  cat >"$work/sem.toml" <<TOML
[server]
listen = "127.0.0.1:$sem_port"
data_dir = "$work/sem-data"
[log]
level = "warn"
[local]
enabled = true
hub_download = false
# The threshold only makes the reworded question a hit; what is measured is the hit path's speed.
[cache]
semantic = true
threshold = 0.5
[providers.mock]
type = "openai"
base_url = "http://127.0.0.1:$mock_port/v1"
[models."bench"]
targets = [{ provider = "mock", model = "mock-model" }]
TOML
  "$TARGET_DIR/release/switchyard" serve --config "$work/sem.toml" >"$work/sem.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$sem_port/readyz" 120
  ask() { printf '{"model":"bench","temperature":0,"messages":[{"role":"user","content":"%s"}],"max_tokens":16}' "$1"; }
  stored="What is the capital of France? Answer in one word."
  reworded="what is the capital of france? answer in one word"
  cache_outcome "$sem_port" "$(ask "$stored")" >/dev/null
  sleep 0.5
  for _ in 1 2; do
    outcome="$(cache_outcome "$sem_port" "$(ask "$reworded")")"
    [[ "$outcome" == hit_semantic* ]] || { echo "expected a semantic hit, got '$outcome'" >&2; exit 1; }
  done
  log "load: semantic hits at ${SEMANTIC_RATES:-20,50} rps (direct = the mock upstream)"
  "$TARGET_DIR/release/loadgen" \
    --direct "http://127.0.0.1:$mock_port/v1/chat/completions" --direct-body "$(body mock-model)" \
    --gateway "http://127.0.0.1:$sem_port/v1/chat/completions" --gateway-body "$(ask "$reworded")" \
    --rates "${SEMANTIC_RATES:-20,50}" --seconds "$SECONDS_PER_PHASE" --rounds "${SEMANTIC_ROUNDS:-2}" --no-max \
    --json "${BENCH_SEMANTIC_JSON:-$work/bench-semantic.json}"
fi
