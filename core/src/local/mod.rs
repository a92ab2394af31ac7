//! Local inference: the in-process models of `switchyard-models`, run by actors.
//!
//! Each model runs in a `SyncArbiter` worker thread (candle already uses every core for one
//! forward pass), behind an async front actor that batches concurrent requests, and behind an
//! admission bound that answers 429 with `Retry-After` when the queue is full. Models load in
//! the background at start-up; until they are warm, requests get 503 with `Retry-After`. A
//! worker that panics returns an error for the request in hand and is rebuilt by its arbiter.

pub mod embed;
pub mod generate;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::{LocalConfig, LocalDevice};
use crate::error::ApiError;

pub use embed::EmbedService;
pub use generate::{GenService, CHAT_MODEL};

/// Public name prefix of local models (`local/minilm`).
pub const PREFIX: &str = "local/";
/// The embedding model's public name.
pub const EMBED_MODEL: &str = "local/minilm";

/// The input that makes a worker panic when `local.fault_injection` is on (tests only).
pub const PANIC_TRIGGER: &str = "__switchyard_panic__";

/// A local model's lifecycle, as `/readyz` and `/v1/models` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum ModelState {
    /// Weights are being read and the model warmed up.
    Loading,
    /// Serving.
    Ready,
    /// Could not load; requests get 503.
    Failed(String),
}

/// Why a local call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LocalError {
    /// Still loading or warming up.
    #[error("local model `{0}` is still loading")]
    Loading(String),
    /// The model could not be loaded.
    #[error("local model `{model}` is unavailable: {reason}")]
    Failed {
        /// Model name.
        model: String,
        /// Why.
        reason: String,
    },
    /// The admission bound is reached.
    #[error("local model `{0}` is busy: too many requests queued")]
    Busy(String),
    /// The input is not acceptable.
    #[error("{0}")]
    Input(String),
    /// The worker panicked or its actor is gone; it is being rebuilt.
    #[error("local model `{0}` failed while handling the request; it has been restarted")]
    Crashed(String),
    /// Inference failed.
    #[error("local inference failed: {0}")]
    Inference(String),
}

impl From<LocalError> for ApiError {
    fn from(e: LocalError) -> Self {
        let message = e.to_string();
        match e {
            LocalError::Loading(_) => ApiError::NotReady {
                message,
                retry_after: Some(Duration::from_secs(2)),
            },
            LocalError::Failed { .. } => ApiError::NotReady {
                message,
                retry_after: None,
            },
            LocalError::Busy(_) => ApiError::RateLimited {
                message,
                retry_after: Some(Duration::from_secs(1)),
            },
            LocalError::Input(m) => ApiError::InvalidParam {
                param: Some("input".to_owned()),
                message: m,
            },
            LocalError::Crashed(_) | LocalError::Inference(_) => ApiError::Internal(message),
        }
    }
}

/// The local models this daemon serves.
#[derive(Clone, Default)]
pub struct LocalModels {
    /// Embeddings (`local/minilm`), if enabled.
    pub embed: Option<Arc<EmbedService>>,
    /// Chat and short generation (`local/smollm2`), if enabled.
    pub chat: Option<Arc<GenService>>,
}

impl LocalModels {
    /// Start loading every enabled model in the background. Must run inside an actix system.
    pub fn start(cfg: &LocalConfig) -> Self {
        if !cfg.enabled {
            return Self::default();
        }
        Self {
            embed: Some(Arc::new(EmbedService::start(cfg))),
            chat: Some(GenService::start(cfg)),
        }
    }

    /// Names and states, for `/v1/models` and `/readyz`.
    pub fn states(&self) -> Vec<(&'static str, ModelState)> {
        let mut out = Vec::new();
        if let Some(e) = &self.embed {
            out.push((EMBED_MODEL, e.state()));
        }
        if let Some(c) = &self.chat {
            out.push((CHAT_MODEL, c.state()));
        }
        out
    }
}

/// The candle device for the configured choice.
pub fn device_choice(d: LocalDevice) -> switchyard_models::DeviceChoice {
    match d {
        LocalDevice::Cpu => switchyard_models::DeviceChoice::Cpu,
        LocalDevice::Cuda => switchyard_models::DeviceChoice::Cuda,
        LocalDevice::Metal => switchyard_models::DeviceChoice::Metal,
    }
}
