#!/usr/bin/env bash
# Desktop app smoke test: a daemon over the mock upstream with a little traffic, the Tauri app
# started under Xvfb and pointed at it, a screenshot of the screen, and a check that the
# control UI rendered in the window (its colours cover the screen; a blank window fails).
# Then the laptop case: the app starts its own daemon as a sidecar, shows its UI, and the
# daemon goes when the app does (stopped on a normal exit, and on its own if the app is killed).
# Needs the Tauri build deps and Xvfb (scripts/setup.sh) and a built app
# (`cargo build -p switchyard-app`); the screenshot goes to app/test-results/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

# Share of the screenshot's pixels within 4% of a colour.
share_of() { convert "$1" -fuzz 4% -fill black +opaque "$2" -fill white -opaque "$2" -format '%[fx:mean]' info:; }

if [[ "${1:-}" == "--inner" ]]; then
  # Runs inside the Xvfb display: start the app, screenshot until the UI shows, then end the
  # app with the given signal. Usage: --inner SHOT SIGNAL APP [ARGS...]
  shot="$2" signal="$3"
  shift 3
  "$@" &
  app_pid=$!
  ok=1
  typed=""
  for _ in $(seq 1 60); do
    sleep 2
    if ! kill -0 "$app_pid" 2>/dev/null; then echo "the app exited early" >&2; break; fi
    # With TYPE_URL, a person's way in: type the daemon's URL on the connect page, press Enter.
    if [[ -n "${TYPE_URL:-}" && -z "$typed" ]]; then
      if win="$(xdotool search --name '^Switchyard$' 2>/dev/null | head -1)" && [[ -n "$win" ]]; then
        xdotool windowfocus --sync "$win" type --delay 20 "$TYPE_URL"
        xdotool key Return
        typed=1
      fi
      continue
    fi
    import -window root "$shot" 2>/dev/null || continue
    page="$(share_of "$shot" '#0f172a')"
    cards="$(share_of "$shot" '#1e293b')"
    nav="$(share_of "$shot" '#020617')"
    accent="$(share_of "$shot" '#38bdf8')"
    # The UI's page and card colours over most of the screen, its navigation bar across the
    # top (which the app's own connect page lacks), and its accent (brand, active tab, chart
    # lines): a blank or error window, or the connect page, fails.
    if awk -v p="$page" -v c="$cards" -v n="$nav" -v a="$accent" \
      'BEGIN { exit !(p > 0.1 && c > 0.1 && p + c > 0.6 && n > 0.03 && a > 0.0003) }'; then
      ok=0
      echo "UI rendered: page and cards on $(awk -v p="$page" -v c="$cards" 'BEGIN{printf "%.0f", (p+c)*100}')% of the screen, accent on $(awk -v a="$accent" 'BEGIN{printf "%.2f", a*100}')%"
      sleep 3
      import -window root "$shot"
      break
    fi
  done
  kill "-$signal" "$app_pid" 2>/dev/null || true
  wait "$app_pid" 2>/dev/null || true
  exit "$ok"
fi

# Run the app under a virtual display (and its own D-Bus session).
under_xvfb() { dbus-run-session -- xvfb-run -a -s "-screen 0 1280x800x24" bash "$0" --inner "$@"; }

# PIDs of daemons started as this test's sidecars (their config is under $XDG_DATA_HOME).
sidecars() { pgrep -f "serve --config $XDG_DATA_HOME" || true; }

APP_BIN="${APP_BIN:-$TARGET_DIR/debug/switchyard-app}"
out="${APP_ARTIFACTS:-$ROOT/app/test-results}"
mkdir -p "$out"
scratch
mock_port="$(free_port)"
gw_port="$(free_port)"
"$TARGET_DIR/debug/mock-upstream" --listen "127.0.0.1:$mock_port" --ttft 20 >"$work/mock.log" 2>&1 &
pids+=($!)
cat >"$work/switchyard.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
data_dir = "$work/data"
[local]
enabled = false
[providers.mock]
type = "openai"
base_url = "http://127.0.0.1:$mock_port/v1"
[models."gpt-mock"]
targets = [{ provider = "mock", model = "mock-model" }]
TOML
"$TARGET_DIR/debug/switchyard" serve --config "$work/switchyard.toml" >"$work/switchyard.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$gw_port/readyz" 60 || { cat "$work/switchyard.log"; exit 1; }
for i in $(seq 1 40); do
  curl -fsS -o /dev/null "http://127.0.0.1:$gw_port/v1/chat/completions" -H 'content-type: application/json' \
    -d "{\"model\":\"gpt-mock\",\"messages\":[{\"role\":\"user\",\"content\":\"hello $i\"}]}"
done

# A home of its own: the app saves the daemon URL there, not in the developer's.
export HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_DATA_HOME="$work/home/.local/share"
mkdir -p "$XDG_CONFIG_HOME"
log "desktop app under Xvfb against http://127.0.0.1:$gw_port"
if ! under_xvfb "$out/app.png" TERM "$APP_BIN" --url "http://127.0.0.1:$gw_port"; then
  echo "the app's window did not show the control UI; screenshot: $out/app.png" >&2
  tail -20 "$work/switchyard.log" >&2
  exit 1
fi
echo "screenshot: $out/app.png"

log "desktop app: the URL typed on its connect page, then the saved URL at the next start"
if ! TYPE_URL="http://127.0.0.1:$gw_port" under_xvfb "$out/app-typed.png" TERM "$APP_BIN"; then
  echo "connecting from the connect page failed; screenshot: $out/app-typed.png" >&2
  exit 1
fi
settings="$(find "$XDG_CONFIG_HOME" -name settings.json | head -1)"
grep -q "127.0.0.1:$gw_port" "$settings" || { echo "the daemon URL was not saved" >&2; exit 1; }
if ! under_xvfb "$out/app-saved.png" TERM "$APP_BIN"; then
  echo "the app did not reconnect to the saved URL; screenshot: $out/app-saved.png" >&2
  exit 1
fi
echo "saved in $settings and reconnected"

# The laptop case: `--local` starts `switchyard serve` beside the app (the daemon binary next
# to the app's) with the embedded defaults, and connects to it.
for signal in TERM KILL; do
  log "desktop app with a local sidecar daemon, ended with SIG$signal"
  if ! under_xvfb "$out/app-local.png" "$signal" "$APP_BIN" --local; then
    echo "the app did not show its sidecar's UI; screenshot: $out/app-local.png" >&2
    find "$XDG_DATA_HOME" -name daemon.log -exec tail -20 {} \; >&2
    exit 1
  fi
  # Stopped by the app on a normal exit; on its own (it watches its parent) after a kill.
  for _ in $(seq 1 40); do
    [[ -z "$(sidecars)" ]] && break
    sleep 0.5
  done
  if [[ -n "$(sidecars)" ]]; then
    echo "the sidecar daemon outlived the app (SIG$signal): $(sidecars)" >&2
    exit 1
  fi
  grep -q "switchyard serving" "$(find "$XDG_DATA_HOME" -name daemon.log | head -1)"
  echo "sidecar stopped with the app (SIG$signal)"
done
