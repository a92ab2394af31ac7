//! Local inference for Switchyard on candle: loading weights and tokenizers, embeddings,
//! classification, summarisation and generation.
//!
//! This crate knows nothing of actix or HTTP: it loads models and runs forward passes.
//! `switchyard-core` owns the threads, queues and lifecycle around it, which keeps inference
//! testable on its own and reusable by the desktop app.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod bert;
pub mod classify;
pub mod device;
pub mod embed;
pub mod error;
pub mod generate;
pub mod router;
pub mod store;
pub mod summarize;
pub mod verify;

pub use device::{select_device, settle_thread_count, DeviceChoice};
pub use embed::Embedder;
pub use error::ModelError;
pub use generate::{Finish, GenOutput, GenParams, Generator, Precision};
pub use store::{ModelFiles, ModelStore};
