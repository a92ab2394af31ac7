//! Configuration: TOML on disk, environment overrides, CLI flags, validated into runtime types.
//!
//! Precedence is built-in defaults < config file < environment (`SWITCHYARD__SECTION__KEY`) <
//! CLI flags. The raw serde types reject unknown keys; [`Config::from_raw`] then checks meaning
//! (URLs, references between sections, secrets) and quotes the full key path of any problem.

pub mod observe;
pub mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use observe::{
    BudgetSpec, BudgetsConfig, HardAction, LatencyBudget, LatencyScope, LedgerConfig,
    ObservabilityConfig, Price, PricesConfig,
};
pub use secret::{SecretError, SecretLocation};

/// A configuration problem, always naming the key path it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, environment or flags could not be parsed into the schema.
    #[error("{0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("`{path}`: {message}")]
    Invalid {
        /// Dotted key path, e.g. `providers.openai.base_url`.
        path: String,
        /// What is wrong and what would be accepted.
        message: String,
    },
}

impl ConfigError {
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Settings given on the command line; they win over everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Raw schema (what the TOML file says).
// ---------------------------------------------------------------------------------------------

/// The config file's schema.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`
    #[serde(default)]
    pub server: RawServer,
    /// `[auth]`
    #[serde(default)]
    pub auth: RawAuth,
    /// `[log]`
    #[serde(default)]
    pub log: RawLog,
    /// `[providers.NAME]`: one upstream each.
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    /// `[models."PUBLIC-NAME"]`: public model names mapped to upstream targets.
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    /// `[local]`: in-process models.
    #[serde(default)]
    pub local: RawLocal,
    /// `[ledger]`: per-call records.
    #[serde(default)]
    pub ledger: observe::RawLedger,
    /// `[prices]`: per-model token prices.
    #[serde(default)]
    pub prices: observe::RawPrices,
    /// `[budgets]`: daily spend limits.
    #[serde(default)]
    pub budgets: observe::RawBudgets,
    /// `[[latency_budgets]]`: percentile targets.
    #[serde(default)]
    pub latency_budgets: Vec<observe::RawLatencyBudget>,
    /// `[observability]`: metrics, events, tracing export.
    #[serde(default)]
    pub observability: observe::RawObservability,
    /// `[routing]`: tiers, rules and the learned scorer for the routing model (`auto`).
    #[serde(default)]
    pub routing: Option<crate::router::policy::RawRouting>,
    /// `[cache]`.
    #[serde(default)]
    pub cache: crate::cache::RawCache,
    /// `[jobs]`.
    #[serde(default)]
    pub jobs: crate::jobs::RawJobs,
}

/// `[local]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocal {
    /// Serve the local models at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Folder with the models' files (default `$SWITCHYARD_MODELS_DIR` or
    /// `~/.cache/switchyard/models`, where `scripts/fetch-models.sh` puts them).
    #[serde(default)]
    pub models_dir: Option<PathBuf>,
    /// `cpu`, `cuda` or `metal` (the last two need the matching cargo feature).
    #[serde(default)]
    pub device: LocalDevice,
    /// Requests admitted per local model, queued or running; more get 429 + `Retry-After`.
    #[serde(default = "default_local_queue")]
    pub queue: usize,
    /// Test-only: an input of exactly `__switchyard_panic__` makes the worker panic.
    #[serde(default)]
    pub fault_injection: bool,
    /// Download missing weights from the Hugging Face hub (pinned revisions; `HF_HUB_OFFLINE`
    /// also turns it off).
    #[serde(default = "default_true")]
    pub hub_download: bool,
    /// How the local LLM's matrices are held: `q8_0` (default: decoding is bound by memory
    /// traffic, and Q8_0's SIMD kernels measured 95 tok/s against f32's 40 on 2 cores),
    /// `f32` (2.7x faster prompt processing, 4x the memory) or `stored` (the file's Q4_1).
    #[serde(default)]
    pub precision: LlmPrecision,
}

/// How the local LLM's weight matrices are held in memory (see `scripts/bench-local.sh`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum LlmPrecision {
    /// 8-bit blocks (Q8_0).
    #[default]
    #[serde(rename = "q8_0")]
    Q8,
    /// 32-bit floats.
    #[serde(rename = "f32")]
    F32,
    /// As stored in the GGUF file.
    #[serde(rename = "stored")]
    Stored,
}

impl From<LlmPrecision> for switchyard_models::Precision {
    fn from(p: LlmPrecision) -> Self {
        match p {
            LlmPrecision::Q8 => Self::Q8,
            LlmPrecision::F32 => Self::F32,
            LlmPrecision::Stored => Self::Stored,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_local_queue() -> usize {
    256
}

impl Default for RawLocal {
    fn default() -> Self {
        Self {
            enabled: true,
            models_dir: None,
            device: LocalDevice::default(),
            queue: default_local_queue(),
            fault_injection: false,
            hub_download: true,
            precision: LlmPrecision::default(),
        }
    }
}

/// Where local models run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalDevice {
    /// CPU.
    #[default]
    Cpu,
    /// First CUDA GPU.
    Cuda,
    /// Apple GPU.
    Metal,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Folder for the embedded store (sled).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// HTTP worker threads; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Default overall deadline of a request, in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./switchyard-data")
}
fn default_max_body_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_request_timeout_ms() -> u64 {
    300_000
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
            workers: 0,
            max_body_bytes: default_max_body_bytes(),
            request_timeout_ms: default_request_timeout_ms(),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Let requests from loopback peers in without a key. Unset: allowed only while no keys
    /// are configured (a development default); set `false` behind a reverse proxy on the host.
    #[serde(default)]
    pub allow_unauthenticated_loopback: Option<bool>,
    /// Client API keys, stored as hashes (`switchyard hash-key` prints one).
    #[serde(default)]
    pub keys: Vec<RawApiKey>,
}

/// One `[[auth.keys]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// Stable identifier, recorded with each call (never the key itself).
    pub id: String,
    /// `sha256:<64 hex digits>` of the key.
    pub hash: String,
    /// Tenant the key belongs to; defaults to the key id.
    #[serde(default)]
    pub tenant: Option<String>,
    /// May read `/admin/*` (stats, call records, events).
    #[serde(default)]
    pub admin: bool,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `switchyard_core=debug`; `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_level() -> String {
    "info".to_owned()
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[providers.NAME]`, tagged by `type`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum RawProvider {
    /// Any server speaking OpenAI's chat completions wire format (OpenAI, vLLM, Ollama, Groq, ...).
    #[serde(rename = "openai")]
    OpenAi(RawHttpProvider),
    /// Anthropic's Messages API.
    #[serde(rename = "anthropic")]
    Anthropic(RawHttpProvider),
    /// Google's Gemini API (`generateContent`).
    #[serde(rename = "gemini")]
    Gemini(RawHttpProvider),
}

/// Settings shared by HTTP upstreams.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpProvider {
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`. Anthropic and
    /// Gemini default to their public endpoints.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Where the credential lives: `env::NAME`, `file::PATH` or `none`.
    #[serde(default = "default_api_key")]
    pub api_key: SecretLocation,
    /// Connect timeout in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest one attempt may take to answer (whole body, or first chunk of a stream), in ms.
    #[serde(default = "default_attempt_timeout_ms")]
    pub timeout_ms: u64,
    /// Idle pooled connections kept per host.
    #[serde(default = "default_pool_idle_per_host")]
    pub pool_idle_per_host: usize,
    /// Retries on this upstream before failing over.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First retry back-off in ms (doubles each retry, with jitter).
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest retry back-off in ms.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Client-side requests-per-minute limit (smoothed: 600 means one every 100 ms).
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Requests that may go at once before RPM smoothing applies.
    #[serde(default = "default_rpm_burst")]
    pub rpm_burst: u32,
    /// Client-side tokens-per-minute limit (prompt estimate plus `max_tokens`).
    #[serde(default)]
    pub tpm: Option<u32>,
    /// Longest a request waits for RPM/TPM capacity before failing over, in ms.
    #[serde(default = "default_limit_wait_ms")]
    pub limit_wait_ms: u64,
    /// `anthropic-version` header (Anthropic only).
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// Circuit breaker settings.
    #[serde(default)]
    pub breaker: RawBreaker,
}

fn default_attempt_timeout_ms() -> u64 {
    120_000
}
fn default_max_retries() -> u32 {
    2
}
fn default_retry_base_ms() -> u64 {
    100
}
fn default_retry_max_ms() -> u64 {
    2_000
}
fn default_rpm_burst() -> u32 {
    1
}
fn default_limit_wait_ms() -> u64 {
    1_000
}

/// `[providers.NAME.breaker]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Open after this many failures in a row.
    #[serde(default = "default_breaker_run")]
    pub consecutive_failures: u32,
    /// Or when this share of calls in the window failed...
    #[serde(default = "default_breaker_rate")]
    pub error_rate: f64,
    /// ...with at least this many calls in it.
    #[serde(default = "default_breaker_min")]
    pub min_requests: u32,
    /// Error-rate window in ms.
    #[serde(default = "default_breaker_window_ms")]
    pub window_ms: u64,
    /// First cool-down before a probe, in ms (doubles while probes fail).
    #[serde(default = "default_breaker_cooldown_ms")]
    pub cooldown_ms: u64,
    /// Longest cool-down, in ms.
    #[serde(default = "default_breaker_max_cooldown_ms")]
    pub max_cooldown_ms: u64,
}

fn default_breaker_run() -> u32 {
    // High enough that an upstream failing 30% of calls at random (P = 0.3^10) is not taken
    // for a dead one; a dead one trips it within four requests of three attempts.
    10
}
fn default_breaker_rate() -> f64 {
    0.5
}
fn default_breaker_min() -> u32 {
    50
}
fn default_breaker_window_ms() -> u64 {
    10_000
}
fn default_breaker_cooldown_ms() -> u64 {
    5_000
}
fn default_breaker_max_cooldown_ms() -> u64 {
    60_000
}

impl Default for RawBreaker {
    fn default() -> Self {
        Self {
            consecutive_failures: default_breaker_run(),
            error_rate: default_breaker_rate(),
            min_requests: default_breaker_min(),
            window_ms: default_breaker_window_ms(),
            cooldown_ms: default_breaker_cooldown_ms(),
            max_cooldown_ms: default_breaker_max_cooldown_ms(),
        }
    }
}

fn default_api_key() -> SecretLocation {
    SecretLocation::None
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_pool_idle_per_host() -> usize {
    256
}

/// `[models."NAME"]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// Upstreams to try in order; later ones are the fallbacks.
    pub targets: Vec<RawTarget>,
    /// When every target has failed, answer with the local chat model (`local/smollm2`) as a
    /// last resort, unless the request says `x-switchyard-local-fallback: off`.
    #[serde(default)]
    pub local_fallback: bool,
}

/// One upstream target of a public model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// Name of a `[providers.NAME]` section.
    pub provider: String,
    /// Model name the upstream knows.
    pub model: String,
}

// ---------------------------------------------------------------------------------------------
// Runtime types (validated).
// ---------------------------------------------------------------------------------------------

/// The validated configuration the runtime uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Client authentication.
    pub auth: AuthConfig,
    /// Logging.
    pub log: RawLog,
    /// Upstreams by name.
    pub providers: BTreeMap<String, ProviderSpec>,
    /// Public model names → ordered targets.
    pub models: BTreeMap<String, Vec<Target>>,
    /// Models whose chains end with the local model as a last resort.
    pub local_fallback: std::collections::BTreeSet<String>,
    /// In-process models.
    pub local: LocalConfig,
    /// Per-call records.
    pub ledger: LedgerConfig,
    /// Token prices.
    pub prices: PricesConfig,
    /// Daily spend limits.
    pub budgets: BudgetsConfig,
    /// Latency targets.
    pub latency_budgets: Vec<LatencyBudget>,
    /// Metrics, events, tracing export.
    pub observability: ObservabilityConfig,
    /// Routing policy as written (checked against the models when the runtime starts).
    pub routing: Option<crate::router::policy::RawRouting>,
    /// The response cache.
    pub cache: crate::cache::RawCache,
    /// Async jobs.
    pub jobs: crate::jobs::RawJobs,
}

/// Validated `[local]`.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Serve local models.
    pub enabled: bool,
    /// Models folder.
    pub models_dir: PathBuf,
    /// Device.
    pub device: LocalDevice,
    /// Admission bound per model.
    pub queue: usize,
    /// Test-only panic trigger.
    pub fault_injection: bool,
    /// How the local LLM's matrices are held.
    pub precision: LlmPrecision,
    /// Allow hub downloads.
    pub hub_download: bool,
}

/// Validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// sled folder.
    pub data_dir: PathBuf,
    /// HTTP worker threads.
    pub workers: usize,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Default request deadline.
    pub request_timeout: Duration,
}

/// Validated `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Loopback peers may call without a key.
    pub allow_unauthenticated_loopback: bool,
    /// Known keys.
    pub keys: Vec<ApiKeySpec>,
}

/// A configured client key (hash only).
#[derive(Debug, Clone)]
pub struct ApiKeySpec {
    /// Key id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// May read `/admin/*`.
    pub admin: bool,
}

/// Which wire format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini generateContent.
    Gemini,
}

impl ProviderKind {
    fn default_base_url(self) -> Option<&'static str> {
        match self {
            Self::OpenAi => None,
            Self::Anthropic => Some("https://api.anthropic.com/v1"),
            Self::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
        }
    }
}

/// A validated upstream.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    /// Section name.
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL, without a trailing slash.
    pub base_url: String,
    /// Credential, if any.
    pub api_key: Option<SecretString>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-attempt timeout.
    pub attempt_timeout: Duration,
    /// Idle pooled connections per host.
    pub pool_idle_per_host: usize,
    /// Retry policy.
    pub retry: RetrySpec,
    /// Client-side limits.
    pub limits: LimitSpec,
    /// Circuit breaker.
    pub breaker: BreakerSpec,
    /// `anthropic-version` header value.
    pub anthropic_version: String,
}

/// Validated retry policy.
#[derive(Debug, Clone)]
pub struct RetrySpec {
    /// Retries on the same upstream.
    pub max_retries: u32,
    /// First back-off.
    pub base: Duration,
    /// Largest back-off.
    pub max: Duration,
}

/// Validated client-side limits.
#[derive(Debug, Clone)]
pub struct LimitSpec {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Burst allowance for RPM.
    pub rpm_burst: u32,
    /// Tokens per minute.
    pub tpm: Option<u32>,
    /// Longest wait for capacity.
    pub max_wait: Duration,
}

/// Validated breaker settings.
#[derive(Debug, Clone)]
pub struct BreakerSpec {
    /// Failures in a row that open it.
    pub consecutive_failures: u32,
    /// Error rate that opens it.
    pub error_rate: f64,
    /// Calls needed before the rate counts.
    pub min_requests: u32,
    /// Error-rate window.
    pub window: Duration,
    /// First cool-down.
    pub cooldown: Duration,
    /// Longest cool-down.
    pub max_cooldown: Duration,
}

/// One upstream target of a public model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Provider name.
    pub provider: String,
    /// Upstream model name.
    pub model: String,
}

impl Config {
    /// Load from an optional file, the environment and CLI overrides, then validate.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let raw = Self::load_raw(file, overrides)?;
        Self::from_raw(raw)
    }

    /// Layer the sources into the raw schema, without semantic checks.
    pub fn load_raw(file: Option<&Path>, overrides: &Overrides) -> Result<RawConfig, ConfigError> {
        let mut fig = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Parse(format!(
                    "config file `{}` does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("SWITCHYARD__").split("__"));
        if let Some(listen) = overrides.listen {
            fig = fig.merge(("server.listen", listen.to_string()));
        }
        if let Some(dir) = &overrides.data_dir {
            fig = fig.merge(("server.data_dir", dir.clone()));
        }
        fig.extract::<RawConfig>().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| describe_figment_error(&e)).collect();
            ConfigError::Parse(msgs.join("; "))
        })
    }

    /// Check meaning and build runtime types.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            ConfigError::invalid(
                "server.listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:8080",
                    raw.server.listen
                ),
            )
        })?;
        if raw.server.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "server.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if raw.server.request_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.request_timeout_ms",
                "must be positive",
            ));
        }
        let workers = if raw.server.workers == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            raw.server.workers
        };
        let server = ServerConfig {
            listen,
            data_dir: raw.server.data_dir,
            workers,
            max_body_bytes: raw.server.max_body_bytes,
            request_timeout: Duration::from_millis(raw.server.request_timeout_ms),
        };

        let mut keys = Vec::with_capacity(raw.auth.keys.len());
        for (i, k) in raw.auth.keys.iter().enumerate() {
            let path = format!("auth.keys[{i}]");
            if k.id.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{path}.id"),
                    "must not be empty",
                ));
            }
            let hash = parse_key_hash(&k.hash).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{path}.hash"),
                    "expected `sha256:` followed by 64 hex digits (see `switchyard hash-key`)",
                )
            })?;
            if keys.iter().any(|o: &ApiKeySpec| o.id == k.id) {
                return Err(ConfigError::invalid(
                    format!("{path}.id"),
                    format!("duplicate key id `{}`", k.id),
                ));
            }
            keys.push(ApiKeySpec {
                id: k.id.clone(),
                tenant: k.tenant.clone().unwrap_or_else(|| k.id.clone()),
                hash,
                admin: k.admin,
            });
        }
        let auth = AuthConfig {
            allow_unauthenticated_loopback: raw
                .auth
                .allow_unauthenticated_loopback
                .unwrap_or(keys.is_empty()),
            keys,
        };

        let mut providers = BTreeMap::new();
        for (name, p) in &raw.providers {
            let path = format!("providers.{name}");
            if !is_valid_name(name) {
                return Err(ConfigError::invalid(
                    path,
                    "provider names use letters, digits, `-` and `_` only",
                ));
            }
            if name == "local" {
                return Err(ConfigError::invalid(
                    path,
                    "`local` is reserved for the in-process models",
                ));
            }
            let (kind, http) = match p {
                RawProvider::OpenAi(h) => (ProviderKind::OpenAi, h),
                RawProvider::Anthropic(h) => (ProviderKind::Anthropic, h),
                RawProvider::Gemini(h) => (ProviderKind::Gemini, h),
            };
            let Some(raw_url) = http.base_url.as_deref().or(kind.default_base_url()) else {
                return Err(ConfigError::invalid(
                    format!("{path}.base_url"),
                    "is required for `openai` providers (e.g. https://api.openai.com/v1)",
                ));
            };
            let base_url = raw_url.trim_end_matches('/').to_owned();
            match reqwest::Url::parse(&base_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return Err(ConfigError::invalid(
                        format!("{path}.base_url"),
                        format!("`{raw_url}` is not an http(s) URL"),
                    ))
                }
            }
            let b = &http.breaker;
            if !(b.error_rate > 0.0 && b.error_rate <= 1.0) {
                return Err(ConfigError::invalid(
                    format!("{path}.breaker.error_rate"),
                    "must be in (0, 1]",
                ));
            }
            if b.consecutive_failures == 0 {
                return Err(ConfigError::invalid(
                    format!("{path}.breaker.consecutive_failures"),
                    "must be at least 1",
                ));
            }
            if http.timeout_ms == 0 {
                return Err(ConfigError::invalid(
                    format!("{path}.timeout_ms"),
                    "must be positive",
                ));
            }
            if http.rpm == Some(0) || http.tpm == Some(0) {
                return Err(ConfigError::invalid(
                    format!("{path}.{}", if http.rpm == Some(0) { "rpm" } else { "tpm" }),
                    "must be positive (leave it out for no limit)",
                ));
            }
            let api_key = http
                .api_key
                .load()
                .map_err(|e| ConfigError::invalid(format!("{path}.api_key"), e.to_string()))?;
            providers.insert(
                name.clone(),
                ProviderSpec {
                    name: name.clone(),
                    kind,
                    base_url,
                    api_key,
                    connect_timeout: Duration::from_millis(http.connect_timeout_ms.max(1)),
                    attempt_timeout: Duration::from_millis(http.timeout_ms),
                    pool_idle_per_host: http.pool_idle_per_host,
                    retry: RetrySpec {
                        max_retries: http.max_retries,
                        base: Duration::from_millis(http.retry_base_ms.max(1)),
                        max: Duration::from_millis(
                            http.retry_max_ms.max(http.retry_base_ms.max(1)),
                        ),
                    },
                    limits: LimitSpec {
                        rpm: http.rpm,
                        rpm_burst: http.rpm_burst.max(1),
                        tpm: http.tpm,
                        max_wait: Duration::from_millis(http.limit_wait_ms),
                    },
                    breaker: BreakerSpec {
                        consecutive_failures: b.consecutive_failures,
                        error_rate: b.error_rate,
                        min_requests: b.min_requests.max(1),
                        window: Duration::from_millis(b.window_ms.max(1)),
                        cooldown: Duration::from_millis(b.cooldown_ms.max(1)),
                        max_cooldown: Duration::from_millis(
                            b.max_cooldown_ms.max(b.cooldown_ms.max(1)),
                        ),
                    },
                    anthropic_version: http
                        .anthropic_version
                        .clone()
                        .unwrap_or_else(|| "2023-06-01".to_owned()),
                },
            );
        }

        let mut models = BTreeMap::new();
        let mut local_fallback = std::collections::BTreeSet::new();
        for (name, m) in &raw.models {
            let path = format!("models.\"{name}\"");
            if name.trim().is_empty() {
                return Err(ConfigError::invalid(path, "model names must not be empty"));
            }
            if m.targets.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{path}.targets"),
                    "needs at least one target",
                ));
            }
            let mut targets = Vec::with_capacity(m.targets.len());
            for (i, t) in m.targets.iter().enumerate() {
                if !providers.contains_key(&t.provider) {
                    let known: Vec<&str> = providers.keys().map(String::as_str).collect();
                    return Err(ConfigError::invalid(
                        format!("{path}.targets[{i}].provider"),
                        format!(
                            "unknown provider `{}` (configured: {})",
                            t.provider,
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
                if t.model.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{path}.targets[{i}].model"),
                        "must not be empty",
                    ));
                }
                targets.push(Target {
                    provider: t.provider.clone(),
                    model: t.model.clone(),
                });
            }
            models.insert(name.clone(), targets);
            if m.local_fallback {
                local_fallback.insert(name.clone());
            }
        }

        if raw.local.queue == 0 {
            return Err(ConfigError::invalid("local.queue", "must be at least 1"));
        }
        let local = LocalConfig {
            enabled: raw.local.enabled,
            models_dir: raw
                .local
                .models_dir
                .unwrap_or_else(switchyard_models::ModelStore::default_dir),
            device: raw.local.device,
            queue: raw.local.queue,
            fault_injection: raw.local.fault_injection,
            precision: raw.local.precision,
            hub_download: raw.local.hub_download,
        };
        let (ledger, prices, budgets, latency_budgets, observability) = observe::validate(
            &raw.ledger,
            &raw.prices,
            &raw.budgets,
            &raw.latency_budgets,
            &raw.observability,
        )?;
        Ok(Self {
            server,
            auth,
            log: raw.log,
            providers,
            models,
            local_fallback,
            local,
            ledger,
            prices,
            budgets,
            latency_budgets,
            observability,
            routing: raw.routing,
            cache: raw.cache,
            jobs: raw.jobs,
        })
    }
}

fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Parse `sha256:<hex>` into the digest bytes.
pub fn parse_key_hash(s: &str) -> Option<[u8; 32]> {
    let hex_part = s.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_part).ok()?;
    bytes.try_into().ok()
}

/// The `sha256:<hex>` form of a client key, as config stores it.
pub fn hash_key(key: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}

fn describe_figment_error(e: &figment::Error) -> String {
    let path = e.path.join(".");
    let source = e
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(src) => format!(" (from {} {src})", m.name),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    if path.is_empty() {
        format!("{}{source}", e.kind)
    } else {
        format!("`{path}`: {}{source}", e.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("sy-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let file = dir.join("c.toml");
        std::fs::write(&file, toml_text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let r = Config::load(Some(&file), &Overrides::default());
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn err_text(r: Result<Config, ConfigError>) -> String {
        match r {
            Ok(_) => "no error".to_owned(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_start_on_loopback_without_keys() -> Result<(), ConfigError> {
        let c = Config::from_raw(RawConfig::default())?;
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert!(c.auth.allow_unauthenticated_loopback);
        assert!(c.providers.is_empty());
        Ok(())
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let t = err_text(parse("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n"));
        assert!(t.contains("listne"), "{t}");
        let t = err_text(parse(
            "[providers.a]\ntype = \"openai\"\nbase_url = \"http://x\"\nbogus = 1\n",
        ));
        assert!(t.contains("bogus"), "{t}");
        let t = err_text(parse(
            "[providers.a]\ntype = \"nope\"\nbase_url = \"http://x\"\n",
        ));
        assert!(t.contains("nope"), "{t}");
    }

    #[test]
    fn semantic_errors_quote_the_key_path() {
        let t = err_text(parse(
            "[providers.a]\ntype = \"openai\"\nbase_url = \"http://x/v1\"\n[models.m]\ntargets = [{provider = \"b\", model = \"x\"}]\n",
        ));
        assert!(
            t.contains("models.\"m\".targets[0].provider") && t.contains("unknown provider `b`"),
            "{t}"
        );
        let t = err_text(parse(
            "[providers.a]\ntype = \"openai\"\nbase_url = \"ftp://x\"\n",
        ));
        assert!(t.contains("providers.a.base_url"), "{t}");
        let t = err_text(parse("[[auth.keys]]\nid = \"k\"\nhash = \"abc\"\n"));
        assert!(t.contains("auth.keys[0].hash"), "{t}");
        let t = err_text(parse(
            "[providers.a]\ntype = \"openai\"\nbase_url = \"http://x\"\napi_key = \"env::SWITCHYARD_TEST_UNSET_KEY_VAR\"\n",
        ));
        assert!(
            t.contains("providers.a.api_key") && t.contains("SWITCHYARD_TEST_UNSET_KEY_VAR"),
            "{t}"
        );
    }

    #[test]
    fn keys_hash_round_trip_and_require_auth() -> Result<(), ConfigError> {
        let h = hash_key("sk-test");
        let c = parse(&format!("[[auth.keys]]\nid = \"k1\"\nhash = \"{h}\"\n"))?;
        assert_eq!(c.auth.keys.len(), 1);
        assert_eq!(c.auth.keys[0].tenant, "k1");
        assert!(!c.auth.allow_unauthenticated_loopback);
        assert_eq!(Some(c.auth.keys[0].hash), parse_key_hash(&h));
        Ok(())
    }

    #[test]
    fn flags_win_over_the_file() -> Result<(), ConfigError> {
        let dir = std::env::temp_dir().join(format!("sy-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let file = dir.join("c.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:1111\"\n")
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        let o = Overrides {
            listen: "127.0.0.1:2222".parse().ok(),
            data_dir: Some(PathBuf::from("/tmp/x")),
        };
        let c = Config::load(Some(&file), &o)?;
        assert_eq!(c.server.listen.port(), 2222);
        assert_eq!(c.server.data_dir, PathBuf::from("/tmp/x"));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
