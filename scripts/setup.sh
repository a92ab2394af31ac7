#!/usr/bin/env bash
# Install what building and testing need, idempotently: system packages and Rust components.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need_apt=()
# promtool (Debian's `prometheus` package) checks the /metrics exposition in the tests.
for cmd_pkg in curl:curl python3:python3 pkg-config:pkg-config promtool:prometheus; do
  cmd="${cmd_pkg%%:*}"; pkg="${cmd_pkg##*:}"
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# The control UI: Node.js 20+ and npm build it; Debian's Chromium runs its browser tests.
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
# The Tauri desktop app: WebKitGTK and friends to build it, Xvfb and ImageMagick for its smoke
# test under a virtual display.
for pkg in chromium libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev \
  libssl-dev build-essential libxdo-dev xvfb xauth dbus-x11 imagemagick xdotool; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  log "apt install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

for comp in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
    log "rustup component add $comp"
    rustup component add "$comp"
  fi
done
