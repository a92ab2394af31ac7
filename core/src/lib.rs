//! Switchyard: an OpenAI-compatible runtime between apps and language models.
//!
//! For each request it answers from cache, runs a small local model, or escalates to a cloud
//! provider chosen by routing policy, with failover and accounting around it. `main.rs` is a thin
//! shell over [`cli`]; everything it runs lives here so tests drive exactly what production runs.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod cache;
pub mod cli;
pub mod config;
pub mod error;
pub mod jobs;
pub mod ledger;
pub mod local;
pub mod metrics;
pub mod providers;
pub mod router;
pub mod server;
pub mod storage;
pub mod supervisor;
pub mod telemetry;
pub mod types;
