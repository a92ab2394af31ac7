//! One call's record and the daily totals it adds to.

use serde::{Deserialize, Serialize};

/// Where a call was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Nowhere: it failed before any model ran.
    #[default]
    None,
    /// The cache.
    Cache,
    /// An in-process model.
    Local,
    /// An upstream provider.
    Cloud,
}

impl Tier {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Cache => "cache",
            Self::Local => "local",
            Self::Cloud => "cloud",
        }
    }
}

/// What the cache said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// Not consulted (endpoint or request not cacheable, or no cache configured).
    #[default]
    Bypass,
    /// Consulted, nothing found.
    Miss,
    /// Same normalised request seen before.
    HitExact,
    /// A close enough request seen before.
    HitSemantic,
}

impl CacheOutcome {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bypass => "bypass",
            Self::Miss => "miss",
            Self::HitExact => "hit_exact",
            Self::HitSemantic => "hit_semantic",
        }
    }

    /// A hit of either kind.
    pub fn is_hit(self) -> bool {
        matches!(self, Self::HitExact | Self::HitSemantic)
    }
}

/// Where the token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// No tokens (the call failed before any model ran).
    #[default]
    None,
    /// The upstream's or local model's own `usage`.
    Reported,
    /// Counted with the local tokenizer (the upstream gave none).
    Tokenizer,
    /// Estimated from characters (no tokenizer loaded).
    Estimate,
}

/// How the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered in full.
    #[default]
    Ok,
    /// Answered with an error status, or failed mid-stream.
    Error,
    /// The client went away before the answer was complete.
    ClientClosed,
}

impl Outcome {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::ClientClosed => "client_closed",
        }
    }
}

/// One call, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CallRecord {
    /// Request id (`x-request-id`).
    pub id: String,
    /// W3C trace id (the caller's `traceparent`, or a new one).
    #[serde(default)]
    pub trace_id: String,
    /// Start, unix microseconds.
    pub ts_us: u64,
    /// Tenant accounted.
    pub tenant: String,
    /// API key id (never the key).
    pub key_id: Option<String>,
    /// End user (`user` field or `x-switchyard-user`).
    pub user: Option<String>,
    /// Feature tag (`x-switchyard-tag`).
    pub tag: Option<String>,
    /// Endpoint path.
    pub endpoint: String,
    /// Model the client asked for.
    pub model_requested: Option<String>,
    /// Model that answered (`provider/model`, or `local/...`).
    pub model_resolved: Option<String>,
    /// Where it was answered.
    pub tier: Tier,
    /// Provider that answered.
    pub provider: Option<String>,
    /// Why this route was taken.
    pub route_reason: Option<String>,
    /// What the router looked at (routed calls only), for the what-if simulator.
    #[serde(default)]
    pub route_inputs: Option<crate::router::policy::RouteInputs>,
    /// Cache outcome.
    pub cache: CacheOutcome,
    /// Streamed answer.
    pub streamed: bool,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: u64,
    /// Where the counts came from.
    pub usage_source: UsageSource,
    /// Time to first token (streams), ms.
    pub ttft_ms: Option<f64>,
    /// Total latency, ms (to the last byte).
    pub latency_ms: f64,
    /// Time spent in upstream calls or local inference before the answer started, ms.
    pub upstream_ms: Option<f64>,
    /// The gateway's own time before the answer started, ms.
    pub overhead_ms: Option<f64>,
    /// Upstream calls made.
    pub attempts: u32,
    /// Cost in picodollars (exact).
    pub cost_pusd: u64,
    /// What the call would have cost on the savings baseline, when answered by cache or
    /// locally, in picodollars.
    pub savings_pusd: u64,
    /// HTTP status.
    pub status: u16,
    /// Error class (`code` of the error), if any.
    pub error: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
}

impl CallRecord {
    /// Cost in US dollars.
    pub fn cost_usd(&self) -> f64 {
        pusd_to_usd(self.cost_pusd)
    }

    /// UTC day, `YYYY-MM-DD`.
    pub fn day(&self) -> String {
        day_of(self.ts_us)
    }
}

/// Picodollars to dollars.
pub fn pusd_to_usd(p: u64) -> f64 {
    p as f64 / 1e12
}

/// UTC day of a unix-microsecond time.
pub fn day_of(ts_us: u64) -> String {
    let secs = i64::try_from(ts_us / 1_000_000).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".to_owned())
}

/// Sums for one day and one dimension value.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    /// Calls.
    pub requests: u64,
    /// Calls that ended in an error.
    pub errors: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cached prompt tokens.
    pub cached_tokens: u64,
    /// Cost, picodollars.
    pub cost_pusd: u64,
    /// Savings, picodollars.
    pub savings_pusd: u64,
    /// Calls answered from the cache.
    pub cache_hits: u64,
    /// Calls answered by a local model.
    pub local: u64,
    /// Calls answered by an upstream.
    pub cloud: u64,
}

impl Totals {
    /// Add one call.
    pub fn add(&mut self, r: &CallRecord) {
        self.requests += 1;
        self.errors += u64::from(r.outcome != Outcome::Ok);
        self.prompt_tokens += r.prompt_tokens;
        self.completion_tokens += r.completion_tokens;
        self.cached_tokens += r.cached_tokens;
        self.cost_pusd += r.cost_pusd;
        self.savings_pusd += r.savings_pusd;
        self.cache_hits += u64::from(r.cache.is_hit());
        self.local += u64::from(r.tier == Tier::Local);
        self.cloud += u64::from(r.tier == Tier::Cloud);
    }

    /// Add another total.
    pub fn merge(&mut self, o: &Totals) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.cached_tokens += o.cached_tokens;
        self.cost_pusd += o.cost_pusd;
        self.savings_pusd += o.savings_pusd;
        self.cache_hits += o.cache_hits;
        self.local += o.local;
        self.cloud += o.cloud;
    }

    /// The readable form: dollars, rates.
    pub fn view(&self) -> serde_json::Value {
        let rate = |n: u64| {
            if self.requests == 0 {
                0.0
            } else {
                n as f64 / self.requests as f64
            }
        };
        serde_json::json!({
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": pusd_to_usd(self.cost_pusd),
            "cost_pusd": self.cost_pusd,
            "savings_usd": pusd_to_usd(self.savings_pusd),
            "cache_hits": self.cache_hits,
            "cache_hit_rate": rate(self.cache_hits),
            "local": self.local,
            "cloud": self.cloud,
            "local_share": rate(self.local),
        })
    }
}

/// The dimensions daily totals are kept by.
pub const DIMENSIONS: [&str; 7] = ["all", "tenant", "key", "user", "tag", "provider", "model"];

/// The (dimension, value) pairs a record counts under.
pub fn dimension_values(r: &CallRecord) -> Vec<(&'static str, &str)> {
    let mut v = Vec::with_capacity(7);
    v.push(("all", ""));
    v.push(("tenant", r.tenant.as_str()));
    let optional = [
        ("key", r.key_id.as_deref()),
        ("user", r.user.as_deref()),
        ("tag", r.tag.as_deref()),
        ("provider", r.provider.as_deref()),
        (
            "model",
            r.model_requested.as_deref().or(r.model_resolved.as_deref()),
        ),
    ];
    v.extend(optional.into_iter().filter_map(|(d, x)| x.map(|x| (d, x))));
    v
}
