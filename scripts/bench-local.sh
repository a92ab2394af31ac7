#!/usr/bin/env bash
# Local-model benchmark: embeddings/s (batch 1 and 32), embed and zero-shot classify latency,
# SmolLM2 prefill and decode tok/s with its matrices held as Q8_0 (the default), f32 and the
# file's Q4_1; and, with BENCH_TORCH=1, PyTorch sentence-transformers on the same sentences in
# the same run, with the ratio. (The torch venv is large: ~6 GB of wheels.)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bash scripts/fetch-models.sh >/dev/null
cargo build --release --locked -p switchyard-benches --bin local_bench
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
data="$(dirname "$ROOT")/shared/data/cache/qqp-dev.jsonl.gz"
python3 - "$data" "$work/sentences.txt" <<'PY'
import gzip, json, sys
out = open(sys.argv[2], "w")
n = 0
for line in gzip.open(sys.argv[1], "rt"):
    q = json.loads(line)["text_a"].strip().replace("\n", " ")
    if q:
        out.write(q + "\n"); n += 1
    if n >= 512: break
PY
log "candle: embeddings, classification, routing with its embedding; SmolLM2 as Q8_0 (the default)"
"$TARGET_DIR/release/local_bench" --sentences "$work/sentences.txt" \
  --routing-prompts "$(dirname "$ROOT")/shared/data/routing/mmlu-dev.jsonl" | tee "$work/ours.json"
for p in f32 stored; do
  log "candle: SmolLM2 as $p"
  "$TARGET_DIR/release/local_bench" --sentences "$work/sentences.txt" --no-embeddings --precision "$p"
done
if [[ "${BENCH_TORCH:-0}" == 1 ]]; then
  TORCH_VENV="${TORCH_VENV:-$CACHE_DIR/torch-venv}"
  [[ -x "$TORCH_VENV/bin/python" ]] || { python3 -m venv "$TORCH_VENV"; "$TORCH_VENV/bin/pip" install -q sentence-transformers; }
  log "PyTorch sentence-transformers, same sentences"
  "$TORCH_VENV/bin/python" - "$work/sentences.txt" "$SWITCHYARD_MODELS_DIR/minilm" "$work/ours.json" <<'PY'
import json, sys, time
from sentence_transformers import SentenceTransformer, models
sents = [l.strip() for l in open(sys.argv[1]) if l.strip()]
word = models.Transformer(sys.argv[2]); pool = models.Pooling(word.get_word_embedding_dimension(), "mean")
m = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
m.encode(sents[:8])
t = time.perf_counter(); [m.encode([s]) for s in sents]; b1 = len(sents) / (time.perf_counter() - t)
t = time.perf_counter(); m.encode(sents, batch_size=32); b32 = len(sents) / (time.perf_counter() - t)
ours = json.load(open(sys.argv[3]))
print(json.dumps({"torch_per_s_batch1": b1, "torch_per_s_batch32": b32,
                  "ratio_batch1": ours["embed_per_s_batch1"] / b1,
                  "ratio_batch32": ours["embed_per_s_batch32"] / b32}, indent=2))
PY
fi
