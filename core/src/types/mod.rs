//! Internal request, response and stream-chunk types shared by every API dialect and provider.
//!
//! They follow OpenAI's chat completions shape, the richest common denominator. Fields we do not
//! model are kept in `extra` maps and re-encoded untouched, so new SDK features keep working
//! through the gateway.

pub mod chat;

pub use chat::*;
