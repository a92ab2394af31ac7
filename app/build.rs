//! Tauri's code generation: the config, capabilities and icons become part of the binary, and
//! each of the app's commands gets an `allow-…` permission for the capability to grant.

fn main() {
    let manifest = tauri_build::AppManifest::new().commands(&[
        "connect",
        "start_local",
        "stop_local",
        "state",
    ]);
    if let Err(e) = tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)) {
        eprintln!("tauri build step failed: {e:#}");
        std::process::exit(1);
    }
}
