//! `[cache]`: modes, TTLs, size limit and the semantic cache's settings, per tenant and model.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a request may do with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Read and write.
    #[default]
    On,
    /// Neither.
    Off,
    /// Serve hits, store nothing.
    ReadOnly,
    /// Store answers, never serve from the cache.
    WriteOnly,
    /// Skip the lookup and store the fresh answer over any old one.
    Refresh,
}

impl Mode {
    /// Parse the `x-switchyard-cache` request header.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" => Some(Self::On),
            "off" => Some(Self::Off),
            "read-only" => Some(Self::ReadOnly),
            "write-only" => Some(Self::WriteOnly),
            "refresh" => Some(Self::Refresh),
            _ => None,
        }
    }

    /// Whether hits may be served.
    pub fn reads(self) -> bool {
        matches!(self, Self::On | Self::ReadOnly)
    }

    /// Whether answers are stored.
    pub fn writes(self) -> bool {
        matches!(self, Self::On | Self::WriteOnly | Self::Refresh)
    }
}

/// `[cache]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Whether the cache exists at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Default mode of requests that do not send `x-switchyard-cache`.
    #[serde(default)]
    pub mode: Mode,
    /// How long an entry lives, in seconds (0: until evicted).
    #[serde(default = "day")]
    pub ttl_s: u64,
    /// Total bytes of stored entries; beyond it the least valuable are evicted.
    #[serde(default = "half_gib")]
    pub max_bytes: u64,
    /// Serve close paraphrases too (needs the local embedder).
    #[serde(default = "yes")]
    pub semantic: bool,
    /// Verifier file (`switchyard cache eval --out`); the built-in one when unset.
    #[serde(default)]
    pub verifier: Option<PathBuf>,
    /// Verifier probability needed for a semantic hit (default: the verifier's own, chosen
    /// for 0.95+ precision).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Cosine below which candidates are not even verified.
    #[serde(default = "min_cosine")]
    pub min_cosine: f32,
    /// Cache sampled requests (temperature above 0 or unset) without asking; by default only
    /// temperature-0 requests, or requests that send `x-switchyard-cache`, are cached.
    #[serde(default)]
    pub nondeterministic: bool,
    /// Partitions up to this many entries are searched exactly; larger ones by HNSW.
    #[serde(default = "flat_max")]
    pub flat_max: usize,
    /// Per-tenant overrides.
    #[serde(default)]
    pub tenants: BTreeMap<String, Override>,
    /// Per-model (public name) overrides.
    #[serde(default)]
    pub models: BTreeMap<String, Override>,
}

/// Overrides for one tenant or model.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Default mode.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Entry lifetime in seconds.
    #[serde(default)]
    pub ttl_s: Option<u64>,
    /// Semantic hits on or off.
    #[serde(default)]
    pub semantic: Option<bool>,
    /// Cache sampled requests without asking.
    #[serde(default)]
    pub nondeterministic: Option<bool>,
}

fn yes() -> bool {
    true
}
fn day() -> u64 {
    86_400
}
fn half_gib() -> u64 {
    512 << 20
}
fn min_cosine() -> f32 {
    0.75
}
fn flat_max() -> usize {
    2048
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: Mode::On,
            ttl_s: day(),
            max_bytes: half_gib(),
            semantic: true,
            verifier: None,
            threshold: None,
            min_cosine: min_cosine(),
            nondeterministic: false,
            flat_max: flat_max(),
            tenants: BTreeMap::new(),
            models: BTreeMap::new(),
        }
    }
}

/// The settings that apply to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    /// Mode before the request's header.
    pub mode: Mode,
    /// Entry lifetime (0: none).
    pub ttl_s: u64,
    /// Semantic hits allowed.
    pub semantic: bool,
    /// Sampled requests cached without asking.
    pub nondeterministic: bool,
}

impl RawCache {
    /// Check ranges; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bytes < 1 << 20 {
            return Err("cache.max_bytes: at least 1048576 (1 MiB)".to_owned());
        }
        if !(-1.0..=1.0).contains(&self.min_cosine) {
            return Err("cache.min_cosine: must be in [-1, 1]".to_owned());
        }
        if self.threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return Err("cache.threshold: must be in [0, 1]".to_owned());
        }
        if self.flat_max == 0 {
            return Err("cache.flat_max: must be at least 1".to_owned());
        }
        Ok(())
    }

    /// Settings for a tenant and model: the model's overrides win over the tenant's, which win
    /// over the defaults.
    pub fn effective(&self, tenant: &str, model: &str) -> Effective {
        let mut e = Effective {
            mode: self.mode,
            ttl_s: self.ttl_s,
            semantic: self.semantic,
            nondeterministic: self.nondeterministic,
        };
        for o in [self.tenants.get(tenant), self.models.get(model)]
            .into_iter()
            .flatten()
        {
            e.mode = o.mode.unwrap_or(e.mode);
            e.ttl_s = o.ttl_s.unwrap_or(e.ttl_s);
            e.semantic = o.semantic.unwrap_or(e.semantic);
            e.nondeterministic = o.nondeterministic.unwrap_or(e.nondeterministic);
        }
        if !self.enabled {
            e.mode = Mode::Off;
        }
        e
    }
}
