#!/usr/bin/env bash
# Start the daemon on the embedded default: local models (fetched on first run), sled in
# ./switchyard-data, no cloud keys needed. Extra arguments go to `switchyard serve`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/fetch-models.sh" >/dev/null
bash "$ROOT/scripts/build-ui.sh" >/dev/null
exec cargo run --release --locked --manifest-path "$ROOT/Cargo.toml" -p switchyard-core --bin switchyard -- serve "$@"
