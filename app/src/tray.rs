//! The tray icon: the daemon's health at a glance, and the app's few actions.

use std::time::Duration;

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, Wry};

use crate::{daemon, AppState};

/// The status line of the tray menu.
struct Status(MenuItem<Wry>);

/// The bundled connect page.
fn connect_page() -> Option<url::Url> {
    let s = if cfg!(windows) {
        "http://tauri.localhost/index.html"
    } else {
        "tauri://localhost/index.html"
    };
    url::Url::parse(s).ok()
}

/// Add the tray icon and its menu.
pub fn install(app: &AppHandle) -> tauri::Result<()> {
    let status = MenuItem::with_id(app, "status", "Not connected", false, None::<&str>)?;
    let show = MenuItem::with_id(app, "show", "Show Switchyard", true, None::<&str>)?;
    let change = MenuItem::with_id(
        app,
        "change",
        "Connect to another daemon…",
        true,
        None::<&str>,
    )?;
    let quit = MenuItem::with_id(
        app,
        "quit",
        "Quit (stops a local daemon)",
        true,
        None::<&str>,
    )?;
    let sep = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(app, &[&status, &sep, &show, &change, &quit])?;
    let mut tray = TrayIconBuilder::with_id("switchyard")
        .tooltip("Switchyard: not connected")
        .menu(&menu)
        .on_menu_event(|app, event| match event.id().as_ref() {
            "show" => {
                if let Some(w) = app.get_webview_window("main") {
                    let _ = w.show();
                    let _ = w.set_focus();
                }
            }
            "change" => {
                if let (Some(w), Some(u)) = (app.get_webview_window("main"), connect_page()) {
                    let _ = w.navigate(u);
                    let _ = w.show();
                }
            }
            "quit" => app.exit(0),
            _ => {}
        });
    if let Some(icon) = app.default_window_icon() {
        tray = tray.icon(icon.clone());
    }
    tray.build(app)?;
    app.manage(Status(status));
    Ok(())
}

/// Show the current health in the tray.
pub fn refresh(app: &AppHandle) {
    let state = app.state::<AppState>();
    let url = state.url.lock().ok().and_then(|g| g.clone());
    let health = state.health.lock().map(|g| g.clone()).unwrap_or_default();
    let text = match &url {
        Some(u) => format!("{} — {health}", u.host_str().unwrap_or("daemon")),
        None => "Not connected".to_owned(),
    };
    if let Some(s) = app.try_state::<Status>() {
        let _ = s.0.set_text(&text);
    }
    if let Some(t) = app.tray_by_id("switchyard") {
        let _ = t.set_tooltip(Some(format!("Switchyard: {text}")));
    }
}

/// Poll the connected daemon's health every five seconds.
pub fn watch(app: AppHandle) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(5));
        let url = app
            .state::<AppState>()
            .url
            .lock()
            .ok()
            .and_then(|g| g.clone());
        if let Some(u) = url {
            let h = daemon::health(&u);
            if let Ok(mut g) = app.state::<AppState>().health.lock() {
                *g = h;
            }
            refresh(&app);
        }
    });
}
