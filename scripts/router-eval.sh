#!/usr/bin/env bash
# The routing scorer's report: train on MMLU prompts labelled with a strong and a weak model's
# correctness, hold 25% out, and print APGR and the strong-call share needed for 95% of strong
# quality, beside random and prompt-length routing.
#   scripts/router-eval.sh [--seed N] [--holdout 0.25] [--out scorer.json]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
DATA="${ROUTING_DATA:-$ROOT/../shared/data/routing/mmlu-dev.jsonl}"
bash scripts/fetch-models.sh >/dev/null
cargo build --locked --bin switchyard
"$TARGET_DIR/debug/switchyard" router eval --data "$DATA" "$@"
