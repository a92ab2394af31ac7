#!/usr/bin/env bash
# Desktop app smoke test: a daemon over the mock upstream with a little traffic, the Tauri app
# started under Xvfb and pointed at it, a screenshot of the screen, and a check that the
# control UI rendered in the window (its colours cover the screen; a blank window fails).
# Needs the Tauri build deps and Xvfb (scripts/setup.sh) and a built app
# (`cargo build -p switchyard-app`); the screenshot goes to app/test-results/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

# Share of the screenshot's pixels within 4% of a colour.
share_of() { convert "$1" -fuzz 4% -fill black +opaque "$2" -fill white -opaque "$2" -format '%[fx:mean]' info:; }

if [[ "${1:-}" == "--inner" ]]; then
  # Runs inside the Xvfb display: start the app, screenshot until the UI shows, stop it.
  app="$2" url="$3" shot="$4"
  "$app" --url "$url" &
  app_pid=$!
  ok=1
  for _ in $(seq 1 60); do
    sleep 2
    if ! kill -0 "$app_pid" 2>/dev/null; then echo "the app exited early" >&2; break; fi
    import -window root "$shot" 2>/dev/null || continue
    page="$(share_of "$shot" '#0f172a')"
    cards="$(share_of "$shot" '#1e293b')"
    accent="$(share_of "$shot" '#38bdf8')"
    # The UI's page and card colours over most of the screen, and its accent (brand, active
    # tab, chart lines) somewhere: a blank or error window has none of them.
    if awk -v p="$page" -v c="$cards" -v a="$accent" 'BEGIN { exit !(p > 0.1 && c > 0.1 && p + c > 0.6 && a > 0.0003) }'; then
      ok=0
      echo "UI rendered: page and cards on $(awk -v p="$page" -v c="$cards" 'BEGIN{printf "%.0f", (p+c)*100}')% of the screen, accent on $(awk -v a="$accent" 'BEGIN{printf "%.2f", a*100}')%"
      sleep 3
      import -window root "$shot"
      break
    fi
  done
  kill -TERM "$app_pid" 2>/dev/null || true
  wait "$app_pid" 2>/dev/null || true
  exit "$ok"
fi

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
if ! dbus-run-session -- xvfb-run -a -s "-screen 0 1280x800x24" \
  bash "$0" --inner "$APP_BIN" "http://127.0.0.1:$gw_port" "$out/app.png"; then
  echo "the app's window did not show the control UI; screenshot: $out/app.png" >&2
  tail -20 "$work/switchyard.log" >&2
  exit 1
fi
# The app fetched the UI and ran it: the UI's own API calls reached the daemon.
echo "screenshot: $out/app.png"
