//! Prometheus metrics, one registry per runtime (so tests and embedders can run several).
//!
//! Names follow the OpenTelemetry GenAI semantic conventions where they exist
//! (`gen_ai_client_operation_duration_seconds`, `gen_ai_client_token_usage`,
//! `gen_ai_server_time_to_first_token_seconds`, labels `gen_ai_operation_name`,
//! `gen_ai_request_model`, `gen_ai_provider_name`, `gen_ai_token_type`); the rest are
//! `switchyard_*`. Label values are bounded: model names beyond a few hundred fold into `other`.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::{
    exponential_buckets, CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::ledger::CallRecord;

const MAX_MODEL_LABELS: usize = 256;

/// Every metric the runtime exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    ttft: HistogramVec,
    token_usage: HistogramVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    overhead: HistogramVec,
    cache: IntCounterVec,
    /// Breaker state per provider: 0 closed, 1 half-open, 2 open.
    pub breaker: IntGaugeVec,
    /// Whether each provider is healthy (1) or not (0).
    pub healthy: IntGaugeVec,
    /// Queue depths: `ledger`, `local_chat`, `local_embed`.
    pub queue: IntGaugeVec,
    /// Ledger records by result (`written`, `dropped_buffer_full`, `dropped_write_error`).
    pub ledger: IntCounterVec,
    /// Latency budgets in breach (1) or not (0).
    pub latency_breach: GaugeVec,
    /// Events emitted by type.
    pub events: IntCounterVec,
    /// Budget enforcement actions (`reject`, `downgrade`).
    pub budget_actions: IntCounterVec,
    /// The response cache's size: `entries`, `bytes`, `semantic_entries`.
    pub cache_state: IntGaugeVec,
    /// Cache entries removed, by reason (`size`, `ttl`, `purge`, `corrupt`).
    pub cache_removed: IntCounterVec,
    models_seen: Mutex<HashSet<String>>,
}

/// Why the metrics could not be set up (a programming error: duplicate names).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn reg<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    m: T,
) -> Result<T, MetricsError> {
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let gen_ai = [
            "gen_ai_operation_name",
            "gen_ai_request_model",
            "gen_ai_provider_name",
        ];
        // 1 ms .. ~65 s.
        let latency_buckets = exponential_buckets(0.001, 2.0, 17)?;
        let m = Self {
            requests: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "switchyard_requests_total",
                        "Calls by endpoint, model, provider, tier, cache outcome and status.",
                    ),
                    &["endpoint", "model", "provider", "tier", "cache", "status"],
                )?,
            )?,
            duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gen_ai_client_operation_duration_seconds",
                        "Total duration of a call, to its last byte.",
                    )
                    .buckets(latency_buckets.clone()),
                    &[gen_ai[0], gen_ai[1], gen_ai[2], "error_type"],
                )?,
            )?,
            ttft: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gen_ai_server_time_to_first_token_seconds",
                        "Time from request to the first streamed token leaving the gateway.",
                    )
                    .buckets(latency_buckets),
                    &gen_ai,
                )?,
            )?,
            token_usage: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("gen_ai_client_token_usage", "Tokens per call.")
                        .buckets(exponential_buckets(1.0, 4.0, 12)?),
                    &[gen_ai[0], gen_ai[1], gen_ai[2], "gen_ai_token_type"],
                )?,
            )?,
            tokens: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "switchyard_tokens_total",
                        "Tokens by model, provider and type (input, output, cached).",
                    ),
                    &["model", "provider", "type"],
                )?,
            )?,
            cost: reg(
                &r,
                CounterVec::new(
                    Opts::new(
                        "switchyard_cost_usd_total",
                        "Spend in US dollars by tenant, model and provider.",
                    ),
                    &["tenant", "model", "provider"],
                )?,
            )?,
            overhead: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "switchyard_gateway_overhead_seconds",
                        "The gateway's own time per call, upstream and model time excluded.",
                    )
                    // 25 µs .. ~0.8 s.
                    .buckets(exponential_buckets(0.000_025, 2.0, 16)?),
                    &["endpoint"],
                )?,
            )?,
            cache: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "switchyard_cache_requests_total",
                        "Cache lookups by outcome.",
                    ),
                    &["outcome"],
                )?,
            )?,
            breaker: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "switchyard_upstream_breaker_state",
                        "Circuit breaker: 0 closed, 1 half-open, 2 open.",
                    ),
                    &["provider"],
                )?,
            )?,
            healthy: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "switchyard_upstream_healthy",
                        "1 when the upstream is healthy.",
                    ),
                    &["provider"],
                )?,
            )?,
            queue: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "switchyard_queue_depth",
                        "Items waiting or in progress per queue.",
                    ),
                    &["queue"],
                )?,
            )?,
            ledger: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "switchyard_ledger_records_total",
                        "Ledger records by result.",
                    ),
                    &["result"],
                )?,
            )?,
            latency_breach: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "switchyard_latency_budget_breached",
                        "1 while a latency budget is breached.",
                    ),
                    &["budget", "percentile"],
                )?,
            )?,
            events: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("switchyard_events_total", "Operational events by type."),
                    &["type"],
                )?,
            )?,
            budget_actions: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "switchyard_budget_actions_total",
                        "Calls refused or downgraded by a spend budget.",
                    ),
                    &["action"],
                )?,
            )?,
            cache_state: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "switchyard_cache_state",
                        "Response cache size: entries, bytes, semantic_entries.",
                    ),
                    &["kind"],
                )?,
            )?,
            cache_removed: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "switchyard_cache_removed_total",
                        "Cache entries removed by reason: size, ttl, purge, corrupt.",
                    ),
                    &["reason"],
                )?,
            )?,
            registry: r,
            models_seen: Mutex::new(HashSet::new()),
        };
        Ok(m)
    }

    fn model_label<'a>(&self, model: Option<&'a str>) -> &'a str {
        let Some(m) = model else { return "" };
        let Ok(mut seen) = self.models_seen.lock() else {
            return "other";
        };
        if seen.contains(m) {
            m
        } else if seen.len() < MAX_MODEL_LABELS {
            seen.insert(m.to_owned());
            m
        } else {
            "other"
        }
    }

    /// Count one finished call.
    pub fn observe(&self, r: &CallRecord) {
        // An unknown model name comes from the client and is not a bounded label.
        let requested = if r.error.as_deref() == Some("model_not_found") {
            Some("unknown")
        } else {
            r.model_requested.as_deref()
        };
        let model = self.model_label(requested);
        let provider = r.provider.as_deref().unwrap_or("");
        let operation = operation_name(&r.endpoint);
        let status = r.status.to_string();
        self.requests
            .with_label_values(&[
                r.endpoint.as_str(),
                model,
                provider,
                r.tier.as_str(),
                r.cache.as_str(),
                status.as_str(),
            ])
            .inc();
        self.duration
            .with_label_values(&[operation, model, provider, r.error.as_deref().unwrap_or("")])
            .observe(r.latency_ms / 1e3);
        if let Some(t) = r.ttft_ms {
            self.ttft
                .with_label_values(&[operation, model, provider])
                .observe(t / 1e3);
        }
        if let Some(o) = r.overhead_ms {
            self.overhead
                .with_label_values(&[r.endpoint.as_str()])
                .observe(o / 1e3);
        }
        if r.prompt_tokens + r.completion_tokens > 0 {
            for (ty, n) in [("input", r.prompt_tokens), ("output", r.completion_tokens)] {
                self.token_usage
                    .with_label_values(&[operation, model, provider, ty])
                    .observe(n as f64);
            }
            for (ty, n) in [
                ("input", r.prompt_tokens),
                ("output", r.completion_tokens),
                ("cached", r.cached_tokens),
            ] {
                self.tokens
                    .with_label_values(&[model, provider, ty])
                    .inc_by(n);
            }
        }
        if r.cost_pusd > 0 {
            self.cost
                .with_label_values(&[r.tenant.as_str(), model, provider])
                .inc_by(r.cost_usd());
        }
        if r.cache != crate::ledger::CacheOutcome::Bypass {
            self.cache.with_label_values(&[r.cache.as_str()]).inc();
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// GenAI `gen_ai.operation.name` of an endpoint.
pub fn operation_name(endpoint: &str) -> &'static str {
    match endpoint {
        "/v1/chat/completions" | "/v1/messages" | "/v1/responses" => "chat",
        "/v1/embeddings" => "embeddings",
        "/v1/classify" => "classify",
        "/v1/summarize" => "summarize",
        _ => "other",
    }
}
