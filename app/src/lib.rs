//! The Switchyard desktop app: a window on a daemon's control UI.
//!
//! The window opens on a small bundled connect page. From there it either connects to a
//! daemon by URL (remembered for next time) or starts one on this machine as a sidecar
//! process, which it stops again when the app exits. Once connected, the window shows the
//! daemon's own `/ui`, so the desktop app and a browser see the same UI. A tray icon shows
//! whether the daemon is healthy. `--url URL` (or `SWITCHYARD_URL`) connects at start.

mod commands;
mod daemon;
mod tray;

use std::sync::Mutex;

use tauri::{Manager, RunEvent};

/// What the app holds while it runs.
#[derive(Default)]
pub struct AppState {
    /// The daemon the window shows, if connected.
    pub url: Mutex<Option<url::Url>>,
    /// The daemon this app started, if any.
    pub sidecar: Mutex<Option<daemon::Sidecar>>,
    /// The last health seen (`ready`, `degraded`, `not_ready`, `unreachable`).
    pub health: Mutex<String>,
}

/// The URL to connect to at start: `--url URL`, then `SWITCHYARD_URL`, then the saved one.
fn startup_url(app: &tauri::AppHandle) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--url" {
            return args.next();
        }
        if let Some(u) = a.strip_prefix("--url=") {
            return Some(u.to_owned());
        }
    }
    std::env::var("SWITCHYARD_URL")
        .ok()
        .or_else(|| commands::saved_url(app))
}

/// Build and run the app until it exits.
pub fn run() {
    let app = tauri::Builder::default()
        .manage(AppState::default())
        .invoke_handler(tauri::generate_handler![
            commands::connect,
            commands::start_local,
            commands::stop_local,
            commands::state
        ])
        .setup(|app| {
            tray::install(app.handle())?;
            let handle = app.handle().clone();
            if let Some(url) = startup_url(&handle) {
                // Connect off the main thread: the health check may take a moment.
                std::thread::spawn(move || {
                    if let Err(e) = commands::connect_to(&handle, &url, false) {
                        eprintln!("switchyard-app: {e}");
                    }
                });
            }
            tray::watch(app.handle().clone());
            Ok(())
        })
        .build(tauri::generate_context!());
    let app = match app {
        Ok(a) => a,
        Err(e) => {
            eprintln!("switchyard-app could not start: {e}");
            std::process::exit(1);
        }
    };
    app.run(|handle, event| {
        if let RunEvent::Exit = event {
            // Whatever happens to the window, a daemon this app started does not outlive it.
            if let Some(mut s) = handle
                .state::<AppState>()
                .sidecar
                .lock()
                .ok()
                .and_then(|mut g| g.take())
            {
                s.stop();
            }
        }
    });
}
