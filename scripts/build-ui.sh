#!/usr/bin/env bash
# Build the control UI (app/ui) into app/ui/dist, which the daemon embeds at compile time and
# serves at /ui. npm ci runs only when the lockfile changed. Without Node.js the daemon still
# builds; its /ui then says how to build the UI.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT/app/ui"
if ! command -v npm >/dev/null 2>&1; then
  log "npm not found: the daemon is built without the control UI (install Node.js 20+ and npm)"
  exit 0
fi
stamp="node_modules/.switchyard-lock-$(sha256sum package-lock.json | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  log "npm ci (app/ui)"
  npm ci --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi
log "vite build (app/ui)"
npm run --silent build
