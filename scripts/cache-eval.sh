#!/usr/bin/env bash
# The semantic cache's precision/recall report: train the verifier on Quora question pairs,
# hold 30% out, and print precision and recall on the held-out pairs beside plain cosine
# thresholds (the first run embeds ~23k questions: a few minutes on 2 cores; later runs reuse
# the embeddings).
#   scripts/cache-eval.sh [--limit 12000] [--target-precision 0.92] [--out verifier.json]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
DATA="${CACHE_DATA:-$ROOT/../shared/data/cache/qqp-dev.jsonl.gz}"
bash scripts/fetch-models.sh >/dev/null
cargo build --locked --bin switchyard
"$TARGET_DIR/debug/switchyard" cache eval --data "$DATA" "$@"
