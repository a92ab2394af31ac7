//! The Switchyard desktop app: a window on a daemon's control UI.
//!
//! The window opens on a small bundled connect page. From there it either connects to a
//! daemon by URL (remembered for next time) or starts one on this machine as a sidecar
//! process, which it stops again when the app exits. Once connected, the window shows the
//! daemon's own `/ui`, so the desktop app and a browser see the same UI. A tray icon shows
//! whether the daemon is healthy. `--url URL` (or `SWITCHYARD_URL`) connects at start;
//! `--local` starts a local daemon at start.

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

/// What to do at start.
enum Startup {
    /// Connect to this URL.
    Url(String),
    /// Start a local daemon and connect to it.
    Local,
    /// Show the connect page.
    Ask,
}

/// `--local`, `--url URL`, then `SWITCHYARD_URL`, then the saved URL.
fn startup(app: &tauri::AppHandle) -> Startup {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--local" {
            return Startup::Local;
        }
        if a == "--url" {
            if let Some(u) = args.next() {
                return Startup::Url(u);
            }
        }
        if let Some(u) = a.strip_prefix("--url=") {
            return Startup::Url(u.to_owned());
        }
    }
    std::env::var("SWITCHYARD_URL")
        .ok()
        .or_else(|| commands::saved_url(app))
        .map_or(Startup::Ask, Startup::Url)
}

/// End the app on SIGTERM, SIGINT or SIGHUP through its normal exit (which stops a sidecar).
fn exit_on_signals(app: tauri::AppHandle) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            app.exit(0);
        }
    });
    Ok(())
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
            exit_on_signals(app.handle().clone())?;
            let handle = app.handle().clone();
            // Off the main thread: health checks and a daemon's start take a moment.
            match startup(&handle) {
                Startup::Url(url) => {
                    std::thread::spawn(move || {
                        if let Err(e) = commands::connect_to(&handle, &url, false) {
                            eprintln!("switchyard-app: {e}");
                        }
                    });
                }
                Startup::Local => {
                    std::thread::spawn(move || {
                        if let Err(e) = commands::start_local_blocking(&handle) {
                            eprintln!("switchyard-app: {e}");
                        }
                    });
                }
                Startup::Ask => {}
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
