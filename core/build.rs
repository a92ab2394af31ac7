//! Embed the control UI (`app/ui/dist`, built by `npm run build` there) into the daemon. A
//! checkout without a built UI still builds: `/ui` then says how to build it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let ui = manifest.join("../app/ui");
    let dist =
        std::env::var_os("SWITCHYARD_UI_DIST").map_or_else(|| ui.join("dist"), PathBuf::from);
    println!("cargo:rerun-if-env-changed=SWITCHYARD_UI_DIST");
    let built = dist.join("index.html").is_file();
    // Watch the build output once there is one; before that, the UI folder (where it appears).
    let watch = if built { &dist } else { &ui };
    println!("cargo:rerun-if-changed={}", watch.display());
    let mut files = Vec::new();
    if built {
        walk(&dist, &mut files);
        files.sort();
    }
    let mut code = String::from("/// The built UI: (path under /ui/, bytes).\npub static UI_ASSETS: &[(&str, &[u8])] = &[\n");
    for f in &files {
        let Ok(rel) = f.strip_prefix(&dist) else {
            continue;
        };
        let rel = rel.to_string_lossy().replace('\\', "/");
        let abs = f.canonicalize().unwrap_or_else(|_| f.clone());
        let _ = writeln!(
            code,
            "    ({rel:?}, include_bytes!({:?})),",
            abs.display().to_string()
        );
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("ui_assets.rs");
    if let Err(e) = std::fs::write(&out, code) {
        eprintln!("cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
}
