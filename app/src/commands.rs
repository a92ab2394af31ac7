//! The commands the bundled connect page calls (see `capabilities/default.json`).

use std::path::PathBuf;

use serde::Serialize;
use tauri::{AppHandle, Manager};

use crate::{daemon, AppState};

/// Where the app keeps the daemon URL it last connected to.
fn settings_path(app: &AppHandle) -> Option<PathBuf> {
    app.path()
        .app_config_dir()
        .ok()
        .map(|d| d.join("settings.json"))
}

/// The saved daemon URL, if any.
pub fn saved_url(app: &AppHandle) -> Option<String> {
    let text = std::fs::read_to_string(settings_path(app)?).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("url")?.as_str().map(str::to_owned)
}

fn save_url(app: &AppHandle, url: &url::Url) -> Result<(), String> {
    let path = settings_path(app).ok_or("no configuration folder for the app")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let body = serde_json::json!({ "url": url.as_str() }).to_string();
    std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))
}

/// A daemon's base URL from what a person typed: `host:port` or a full URL; no credentials
/// (they would be stored in the settings file).
pub fn parse_base(input: &str) -> Result<url::Url, String> {
    let s = input.trim();
    let with_scheme = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let mut u = url::Url::parse(&with_scheme).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "`{s}`: only http:// and https:// daemons can be reached"
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(
            "leave credentials out of the URL: the UI asks for an admin key itself".to_owned(),
        );
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{s}` names no host"));
    }
    u.set_path("/");
    u.set_query(None);
    u.set_fragment(None);
    Ok(u)
}

/// Check the daemon answers, remember it, and show its UI in the window.
pub fn connect_to(app: &AppHandle, input: &str, save: bool) -> Result<String, String> {
    let base = parse_base(input)?;
    let health = daemon::health(&base);
    if health == "unreachable" {
        return Err(format!(
            "no Switchyard daemon answers at {base} (GET /readyz)"
        ));
    }
    if save {
        save_url(app, &base)?;
    }
    let state = app.state::<AppState>();
    if let Ok(mut g) = state.url.lock() {
        *g = Some(base.clone());
    }
    if let Ok(mut g) = state.health.lock() {
        g.clone_from(&health);
    }
    let ui = base.join("ui/").map_err(|e| e.to_string())?;
    let window = app
        .get_webview_window("main")
        .ok_or("the main window is gone")?;
    window
        .navigate(ui.clone())
        .map_err(|e| format!("could not open {ui}: {e}"))?;
    crate::tray::refresh(app);
    Ok(health)
}

/// `connect(url)`: connect to a daemon by URL and remember it.
#[tauri::command]
pub async fn connect(app: AppHandle, url: String) -> Result<String, String> {
    tauri::async_runtime::spawn_blocking(move || connect_to(&app, &url, true))
        .await
        .map_err(|e| e.to_string())?
}

/// Start a daemon on this machine (unless one of ours runs) and connect to it.
pub fn start_local_blocking(app: &AppHandle) -> Result<String, String> {
    let state = app.state::<AppState>();
    let running = state
        .sidecar
        .lock()
        .ok()
        .and_then(|g| g.as_ref().map(|s| s.url.clone()));
    let url = match running {
        Some(u) => u,
        None => {
            let dir = app
                .path()
                .app_data_dir()
                .map_err(|e| e.to_string())?
                .join("daemon");
            let sidecar = daemon::start(&dir)?;
            let url = sidecar.url.clone();
            if let Ok(mut g) = state.sidecar.lock() {
                *g = Some(sidecar);
            }
            url
        }
    };
    connect_to(app, url.as_str(), false)
}

/// `start_local()`: start a daemon on this machine (stopped when the app exits) and connect.
#[tauri::command]
pub async fn start_local(app: AppHandle) -> Result<String, String> {
    tauri::async_runtime::spawn_blocking(move || start_local_blocking(&app))
        .await
        .map_err(|e| e.to_string())?
}

/// `stop_local()`: stop the daemon this app started, if any.
#[tauri::command]
pub async fn stop_local(app: AppHandle) -> Result<bool, String> {
    let sidecar = app
        .state::<AppState>()
        .sidecar
        .lock()
        .ok()
        .and_then(|mut g| g.take());
    match sidecar {
        Some(mut s) => {
            tauri::async_runtime::spawn_blocking(move || s.stop())
                .await
                .map_err(|e| e.to_string())?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// What the connect page shows.
#[derive(Serialize)]
pub struct View {
    /// The connected daemon.
    url: Option<String>,
    /// The saved one.
    saved: Option<String>,
    /// Its last health.
    health: String,
    /// Whether this app runs a local daemon.
    sidecar: bool,
}

/// `state()`: the connection as the connect page shows it.
#[tauri::command]
pub fn state(app: AppHandle) -> View {
    let s = app.state::<AppState>();
    View {
        url: s
            .url
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(ToString::to_string)),
        saved: saved_url(&app),
        health: s.health.lock().map(|g| g.clone()).unwrap_or_default(),
        sidecar: s.sidecar.lock().map(|g| g.is_some()).unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_base;

    #[test]
    fn addresses_are_normalised_and_credentials_refused() {
        assert_eq!(
            parse_base("127.0.0.1:8080").map(|u| u.to_string()),
            Ok("http://127.0.0.1:8080/".to_owned())
        );
        assert_eq!(
            parse_base(" https://sy.example.com/ui/#/routing ").map(|u| u.to_string()),
            Ok("https://sy.example.com/".to_owned())
        );
        assert!(parse_base("http://admin:secret@host:1").is_err());
        assert!(parse_base("ftp://host").is_err());
        assert!(parse_base("http://").is_err());
    }
}
