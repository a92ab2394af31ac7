//! The Switchyard desktop app (see `lib.rs`).
#[rustfmt::skip]
fn main() { switchyard_app::run() }
