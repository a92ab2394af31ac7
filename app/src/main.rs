//! The Switchyard desktop app (see `lib.rs`).
fn main() {
    switchyard_app::run()
}
