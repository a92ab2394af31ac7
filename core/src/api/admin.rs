//! Operator endpoints: `/metrics` (Prometheus), `/admin/stats`, `/admin/requests[/{id}]` and
//! `/admin/events`. The admin routes need a key with `admin = true` (or an open loopback).

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::error::ApiError;
use crate::ledger::{self, Query, Totals};
use crate::providers::resilience::BreakerState;

/// The caller must be an admin (a key with `admin = true`, a UI session, or an open loopback).
pub(crate) fn require_admin(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let p = state.auth.authenticate(req)?;
    if p.admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "This key may not read /admin: set `admin = true` on it in [[auth.keys]].".to_owned(),
        ))
    }
}

/// Largest JSON body an admin route accepts.
const ADMIN_BODY_LIMIT: usize = 1024 * 1024;

/// The opening of admin routes that take a body: the caller must be an admin; the body is read
/// within [`ADMIN_BODY_LIMIT`] and parsed (shape errors name the parameter).
async fn admin_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, ApiError> {
    require_admin(state, req)?;
    let body = super::body::read_limited(req, payload, ADMIN_BODY_LIMIT).await?;
    super::body::parse_json(&body)
}

fn storage_error(e: ledger::StoreError) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// `GET /metrics`: the Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.config.observability.metrics {
        return Err(ApiError::RouteNotFound {
            method: "GET".to_owned(),
            path: "/metrics".to_owned(),
        });
    }
    let m = &state.ledger.metrics;
    for u in &state.upstreams {
        let h = u.health();
        let code = match h.breaker {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        m.breaker.with_label_values(&[u.name()]).set(code);
        m.healthy
            .with_label_values(&[u.name()])
            .set(i64::from(h.healthy));
    }
    let queued = state
        .ledger
        .counters
        .queued
        .load(std::sync::atomic::Ordering::Relaxed);
    m.queue.with_label_values(&["ledger"]).set(queued.max(0));
    if let Some(c) = &state.local.chat {
        m.queue
            .with_label_values(&["local_chat"])
            .set(c.in_flight() as i64);
    }
    if let Some(e) = &state.local.embed {
        m.queue
            .with_label_values(&["local_embed"])
            .set(e.in_flight() as i64);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.render()))
}

/// Query of `/admin/stats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Days of totals, counting back from today (1 to 366).
    #[serde(default = "one")]
    pub days: u32,
}

fn one() -> u32 {
    1
}

fn totals_view(by: &BTreeMap<String, BTreeMap<String, Totals>>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (dim, values) in by {
        if dim == "all" {
            continue;
        }
        let m: serde_json::Map<String, serde_json::Value> =
            values.iter().map(|(k, t)| (k.clone(), t.view())).collect();
        out.insert(dim.clone(), serde_json::Value::Object(m));
    }
    serde_json::Value::Object(out)
}

/// `GET /admin/stats`: percentiles, daily totals, budgets, ledger health.
pub async fn stats(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<StatsQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    if !(1..=366).contains(&q.days) {
        return Err(ApiError::param("days", "'days' must be between 1 and 366."));
    }
    let l = &state.ledger;
    l.flush().await;
    let now = ledger::now_us();
    let mut days = Vec::new();
    for back in 0..q.days {
        let ts = now.saturating_sub(u64::from(back) * 86_400_000_000);
        let day = ledger::record::day_of(ts);
        let by = l.store.day(&day).map_err(storage_error)?;
        let all = by
            .get("all")
            .and_then(|m| m.get(""))
            .copied()
            .unwrap_or_default();
        days.push(json!({"day": day, "totals": all.view(), "by": totals_view(&by)}));
    }
    let latency = l
        .stats
        .lock()
        .map(|s| s.snapshot(now, &ledger::stats::WINDOWS))
        .unwrap_or_default();
    let breaches: Vec<serde_json::Value> = l
        .latency
        .lock()
        .map(|w| {
            w.states()
                .map(|(name, pct, breached)| json!({"budget": name, "percentile": pct, "breached": breached}))
                .collect()
        })
        .unwrap_or_default();
    let c = &l.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let body = json!({
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "ledger": {
            "enabled": l.enabled(),
            "records": l.store.count().map_err(storage_error)?,
            "queued": c.queued.load(std::sync::atomic::Ordering::Relaxed).max(0),
            "written": load(&c.written),
            "dropped": load(&c.dropped_full) + load(&c.dropped_write),
            "dropped_buffer_full": load(&c.dropped_full),
            "dropped_write_error": load(&c.dropped_write),
            "flush_ms": state.config.ledger.flush.as_millis() as u64,
        },
        "latency": latency,
        "days": days,
        "budgets": l.budgets.view(&ledger::today()),
        "latency_budgets": breaches,
        "savings_baseline": state.config.prices.savings_baseline,
    });
    Ok(HttpResponse::Ok().json(body))
}

/// Query of `/admin/requests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsQuery {
    /// Not before: RFC 3339 or unix seconds.
    pub since: Option<String>,
    /// Before: RFC 3339 or unix seconds.
    pub until: Option<String>,
    /// Tenant.
    pub tenant: Option<String>,
    /// End user.
    pub user: Option<String>,
    /// Requested or resolved model.
    pub model: Option<String>,
    /// `ok`, `error`, or an HTTP status.
    pub status: Option<String>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<usize>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
    /// Leave out the scorer's feature vectors (hundreds of numbers per routed call).
    #[serde(default)]
    pub compact: bool,
}

fn parse_time(param: &str, v: &str) -> Result<u64, ApiError> {
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok((secs * 1e6) as u64);
        }
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|d| u64::try_from(d.timestamp_micros()).ok())
        .ok_or_else(|| {
            ApiError::param(
                param,
                format!("'{param}' must be RFC 3339 (2026-01-31T12:00:00Z) or unix seconds."),
            )
        })
}

/// `GET /admin/requests`: recent calls, newest first, filtered.
pub async fn requests(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<RequestsQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::param(
            "limit",
            "'limit' must be between 1 and 1000.",
        ));
    }
    if let Some(s) = &q.status {
        if !matches!(s.as_str(), "ok" | "error") && s.parse::<u16>().is_err() {
            return Err(ApiError::param(
                "status",
                "'status' must be `ok`, `error` or an HTTP status code.",
            ));
        }
    }
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            c.split_once('_')
                .and_then(|(ts, i)| Some((ts.parse::<u64>().ok()?, i.parse::<u32>().ok()?)))
                .ok_or_else(|| {
                    ApiError::param(
                        "cursor",
                        "'cursor' must be a `next_cursor` from a previous page.",
                    )
                })
        })
        .transpose()?;
    let until_us = q
        .until
        .as_deref()
        .map(|v| parse_time("until", v))
        .transpose()?;
    let query = Query {
        since_us: q
            .since
            .as_deref()
            .map(|v| parse_time("since", v))
            .transpose()?,
        until_us,
        tenant: q.tenant,
        user: q.user,
        model: q.model,
        status: q.status,
        limit,
        after: cursor,
    };
    let compact = q.compact;
    state.ledger.flush().await;
    let st = state.clone();
    let (mut records, last) = web::block(move || st.ledger.store.query_page(&query, 200_000))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(storage_error)?;
    if compact {
        for r in &mut records {
            if let Some(i) = r.route_inputs.as_mut() {
                i.features = None;
            }
        }
    }
    let next_cursor = (records.len() == limit)
        .then(|| last.map(|(ts, i)| format!("{ts}_{i}")))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "data": records,
        "has_more": next_cursor.is_some(),
        "next_cursor": next_cursor,
    })))
}

/// `GET /admin/requests/{id}`: one call's full record.
pub async fn request(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    state.ledger.flush().await;
    match state.ledger.store.get(&id).map_err(storage_error)? {
        Some(r) => Ok(HttpResponse::Ok().json(r)),
        None => Err(ApiError::NotFound(format!(
            "No call with request id `{id}` is in the ledger."
        ))),
    }
}

/// Query of `/admin/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<usize>,
}

/// `GET /admin/events`: budget and latency-budget events, newest first.
pub async fn events(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::param(
            "limit",
            "'limit' must be between 1 and 1000.",
        ));
    }
    state.ledger.flush().await;
    let events = state.ledger.store.events(limit).map_err(storage_error)?;
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": events})))
}

/// The policy in force as answered by the policy routes: its view plus its version.
fn policy_view(state: &AppState) -> Result<serde_json::Value, ApiError> {
    let version = state
        .routing_history
        .latest()
        .map_err(storage_error)?
        .map(|v| v.version);
    Ok(state
        .routing
        .load_full()
        .as_ref()
        .map_or(serde_json::Value::Null, |p| {
            let mut v = p.view();
            if let Some(o) = v.as_object_mut() {
                o.insert("version".to_owned(), json!(version));
            }
            v
        }))
}

/// `GET /admin/routing/policy`: the policy in force (`null` when routing is off).
pub async fn get_policy(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    Ok(HttpResponse::Ok().json(policy_view(&state)?))
}

/// Put a validated policy in force and record it as the next version (one apply at a time,
/// so the newest version is always the one in force); answers its view with that version.
fn install_version(
    state: &AppState,
    policy: crate::router::policy::Policy,
    source: crate::router::history::Source,
    restored: Option<u64>,
) -> Result<serde_json::Value, ApiError> {
    let digest = crate::router::history::config_digest(state.config.routing.as_ref());
    let mut view = policy.view();
    let raw = policy.raw.clone();
    let v = state
        .routing_history
        .install_and_record(Some(raw), source, restored, &digest, || {
            state.routing.store(Some(std::sync::Arc::new(policy)));
        })
        .map_err(storage_error)?;
    if let Some(o) = view.as_object_mut() {
        o.insert("version".to_owned(), json!(v.version));
    }
    Ok(view)
}

/// Query of `GET /admin/routing/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// At most this many versions, newest first (1 to 200, default 50).
    pub limit: Option<usize>,
}

/// `GET /admin/routing/history`: the policies applied, newest first.
pub async fn policy_history(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::param(
            "limit",
            "'limit' must be between 1 and 200.",
        ));
    }
    let data = state.routing_history.list(limit).map_err(storage_error)?;
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// Body of `POST /admin/routing/rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The version to make current again.
    pub version: u64,
}

/// `POST /admin/routing/rollback {"version": N}`: apply an earlier version again (validated
/// as a new policy would be); recorded as a new version.
pub async fn policy_rollback(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ask: Rollback = admin_body(&state, &req, payload).await?;
    let Some(old) = state
        .routing_history
        .get(ask.version)
        .map_err(storage_error)?
    else {
        return Err(ApiError::NotFound(format!(
            "No routing policy version {} is kept.",
            ask.version
        )));
    };
    let Some(raw) = old.policy else {
        return Err(ApiError::param(
            "version",
            format!(
                "Version {} had routing off; there is nothing to apply.",
                ask.version
            ),
        ));
    };
    let known = |m: &str| state.models.resolve(m).is_ok() || super::chat::is_local_chat(m);
    state.ledger.flush().await;
    let policy = crate::router::build_policy(raw, &known, &state.ledger.store)?;
    let view = install_version(
        &state,
        policy,
        crate::router::history::Source::Rollback,
        Some(ask.version),
    )?;
    tracing::info!(restored = ask.version, "routing policy rolled back");
    Ok(HttpResponse::Ok().json(view))
}

/// `PUT /admin/routing/policy`: validate a new policy and make it current for the next
/// request; an invalid one is refused with the key path of the problem and changes nothing.
pub async fn put_policy(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw: crate::router::policy::RawRouting =
        admin_body(&state, &req, payload)
            .await
            .map_err(|e| match e {
                ApiError::InvalidParam { param, message } => ApiError::InvalidParam {
                    param: param.map(|p| format!("routing.{p}")),
                    message,
                },
                other => other,
            })?;
    let known = |m: &str| state.models.resolve(m).is_ok() || super::chat::is_local_chat(m);
    state.ledger.flush().await;
    let policy = crate::router::build_policy(raw, &known, &state.ledger.store)?;
    tracing::info!(model = %policy.raw.model, tiers = policy.raw.tiers.len(), calibrated = ?policy.calibration(), "routing policy replaced");
    let view = install_version(&state, policy, crate::router::history::Source::Api, None)?;
    Ok(HttpResponse::Ok().json(view))
}

/// Body of `POST /admin/routing/simulate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    /// The candidate policy (as for `PUT /admin/routing/policy`).
    pub policy: crate::router::policy::RawRouting,
    /// Routed calls to replay, newest first (default 1,000, at most 100,000).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Default, serde::Serialize)]
struct TierCount {
    calls: u64,
    share: f64,
}

fn shares(counts: BTreeMap<String, u64>, n: u64) -> BTreeMap<String, TierCount> {
    counts
        .into_iter()
        .map(|(tier, calls)| {
            let share = if n == 0 { 0.0 } else { calls as f64 / n as f64 };
            (tier, TierCount { calls, share })
        })
        .collect()
}

/// `POST /admin/routing/simulate`: replay recent routed calls (what the router saw, kept in
/// their records) through a candidate policy: tier shares and projected cost beside what
/// actually happened.
pub async fn simulate(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ask: SimulateRequest = admin_body(&state, &req, payload).await?;
    let limit = ask.limit.unwrap_or(1000);
    if !(1..=100_000).contains(&limit) {
        return Err(ApiError::param(
            "limit",
            "'limit' must be between 1 and 100000.",
        ));
    }
    let known = |m: &str| state.models.resolve(m).is_ok() || super::chat::is_local_chat(m);
    state.ledger.flush().await;
    let policy = crate::router::build_policy(ask.policy, &known, &state.ledger.store)?;
    let records = state
        .ledger
        .store
        .query(
            &Query {
                model: Some(policy.raw.model.clone()),
                limit,
                ..Query::default()
            },
            2_000_000,
        )
        .map_err(storage_error)?;
    let price_of =
        |model: &str| crate::router::price_of(&state.models, &state.ledger.prices, model);
    let (mut projected, mut actual) = (BTreeMap::new(), BTreeMap::new());
    let (mut projected_cost, mut actual_cost, mut changed, mut n) = (0u64, 0u64, 0u64, 0u64);
    // Quality where an outcome is known (cascades): a call whose local answer was not good
    // enough is served badly by a projection that keeps it local with no escalation.
    let (mut labelled, mut adequate) = (0u64, 0u64);
    let mut unpriced = std::collections::BTreeSet::new();
    for r in &records {
        let Some(inputs) = &r.route_inputs else {
            continue;
        };
        n += 1;
        let d = policy.decide(inputs);
        if let Some(label) = r
            .route_reason
            .as_deref()
            .and_then(crate::router::outcome_label)
        {
            labelled += 1;
            let stays_local = super::chat::is_local_chat(&d.model) && d.escalate.is_none();
            adequate += u64::from(!(stays_local && label > 0.5));
        }
        let was = r
            .route_reason
            .as_deref()
            .and_then(|s| s.strip_prefix("route:"))
            .and_then(|s| s.split(':').next())
            .unwrap_or("unknown")
            .to_owned();
        changed += u64::from(was != d.tier);
        *actual.entry(was).or_insert(0u64) += 1;
        actual_cost += r.cost_pusd;
        match price_of(&d.model) {
            Some(p) => {
                projected_cost += crate::ledger::Prices::cost(
                    p,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cached_tokens,
                );
            }
            None => {
                unpriced.insert(d.model.clone());
            }
        }
        *projected.entry(d.tier).or_insert(0u64) += 1;
    }
    Ok(HttpResponse::Ok().json(json!({
        "replayed": n,
        "changed": changed,
        "projected": {"tiers": shares(projected, n), "cost_usd": crate::ledger::record::pusd_to_usd(projected_cost)},
        "actual": {"tiers": shares(actual, n), "cost_usd": crate::ledger::record::pusd_to_usd(actual_cost)},
        "unpriced_models": unpriced,
        "quality": {
            "labelled": labelled,
            "projected_adequate_share": (labelled > 0).then(|| adequate as f64 / labelled as f64),
        },
    })))
}

/// Query of `GET /admin/routing/outcomes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomesQuery {
    /// Newest routed calls to look at (default 10,000, at most 100,000).
    pub limit: Option<usize>,
    /// The routing model name (default: the policy in force's).
    pub model: Option<String>,
}

/// `GET /admin/routing/outcomes`: the scorer inputs and outcome labels of recent cascaded
/// calls (1: the local answer had to escalate, 0: it was kept), what
/// `switchyard router train --from-ledger` learns from.
pub async fn outcomes(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<OutcomesQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let limit = q.limit.unwrap_or(10_000);
    if !(1..=100_000).contains(&limit) {
        return Err(ApiError::param(
            "limit",
            "'limit' must be between 1 and 100000.",
        ));
    }
    let model = q
        .model
        .clone()
        .or_else(|| state.routing.load_full().map(|p| p.raw.model.clone()))
        .unwrap_or_else(|| "auto".to_owned());
    state.ledger.flush().await;
    let st = state.clone();
    let records = web::block(move || {
        st.ledger.store.query(
            &Query {
                model: Some(model),
                limit,
                ..Query::default()
            },
            2_000_000,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(storage_error)?;
    let data: Vec<serde_json::Value> = records
        .iter()
        .filter_map(|r| {
            let label = crate::router::outcome_label(r.route_reason.as_deref()?)?;
            let features = r.route_inputs.as_ref()?.features.as_ref()?;
            Some(json!({"id": r.id, "features": features, "label": label}))
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// `GET /admin/cache/stats`: entries, bytes and hits per tenant, and how each tenant's semantic
/// partitions are searched.
pub async fn cache_stats(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let stats = state
        .cache
        .stats()
        .await
        .ok_or_else(|| ApiError::Internal("the cache actor is not running".to_owned()))?;
    Ok(HttpResponse::Ok().json(stats))
}

/// `POST /admin/cache/purge {"tenant", "model", "older_than_s", "key"}`: remove the entries
/// matching every filter given (`{}` empties the cache); answers how many went.
pub async fn cache_purge(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let purge: crate::cache::Purge = admin_body(&state, &req, payload).await?;
    if let Some(k) = &purge.key {
        if k.len() != 64 || hex::decode(k).is_err() {
            return Err(ApiError::param("key", "'key' must be 64 hex characters."));
        }
    }
    let removed = state
        .cache
        .purge(purge)
        .await
        .ok_or_else(|| ApiError::Internal("the cache actor is not running".to_owned()))?;
    Ok(HttpResponse::Ok().json(json!({"removed": removed})))
}

/// Query of `GET /admin/timeline`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    /// Minutes back from now (1 to 60, default 15), in 10-second points.
    pub minutes: Option<u64>,
}

/// `GET /admin/timeline`: the last minutes in 10-second points (rate, errors, latency and
/// TTFT percentiles, cache hits, local and cloud calls, cost, savings): the overview's charts.
pub async fn timeline(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<TimelineQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let minutes = q.minutes.unwrap_or(15);
    if !(1..=60).contains(&minutes) {
        return Err(ApiError::param(
            "minutes",
            "'minutes' must be between 1 and 60.",
        ));
    }
    state.ledger.flush().await;
    let slot_s = ledger::stats::SLOT.as_secs();
    let points = state
        .ledger
        .stats
        .lock()
        .map(|s| s.timeline(ledger::now_us(), minutes * 60 / slot_s))
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({"step_s": slot_s, "points": points})))
}

/// `GET /admin/providers`: every upstream's health, breaker, rate-limit headroom and latency
/// percentiles (1, 5 and 15 minutes).
pub async fn providers(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    state.ledger.flush().await;
    let now = ledger::now_us();
    let stats = state.ledger.stats.lock().ok();
    let data: Vec<serde_json::Value> = state
        .upstreams
        .iter()
        .map(|u| {
            let mut v = serde_json::to_value(u.health()).unwrap_or_default();
            let latency: BTreeMap<String, ledger::stats::Percentiles> = ledger::stats::WINDOWS
                .iter()
                .filter_map(|w| {
                    let p =
                        stats
                            .as_ref()?
                            .percentiles("latency", "provider", u.name(), now, *w)?;
                    (p.count > 0).then(|| (format!("{}s", w.as_secs()), p))
                })
                .collect();
            if let Some(o) = v.as_object_mut() {
                o.insert("latency".to_owned(), json!(latency));
                o.insert(
                    "base_url".to_owned(),
                    json!(crate::providers::redact_url(&u.spec().base_url)),
                );
            }
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// `GET /admin/keys`: the configured API keys (ids, tenants, roles; never the hashes) with
/// today's calls and spend, and the spend budgets.
pub async fn keys(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    state.ledger.flush().await;
    let day = ledger::today();
    let by = state.ledger.store.day(&day).map_err(storage_error)?;
    let used = |dim: &str, name: &str| {
        by.get(dim)
            .and_then(|m| m.get(name))
            .copied()
            .unwrap_or_default()
            .view()
    };
    let keys: Vec<serde_json::Value> = state
        .config
        .auth
        .keys
        .iter()
        .map(|k| {
            json!({
                "id": k.id,
                "tenant": k.tenant,
                "admin": k.admin,
                "today": used("key", &k.id),
            })
        })
        .collect();
    let tenants: std::collections::BTreeSet<&str> = state
        .config
        .auth
        .keys
        .iter()
        .map(|k| k.tenant.as_str())
        .collect();
    let tenants: BTreeMap<&str, serde_json::Value> = tenants
        .into_iter()
        .map(|t| (t, used("tenant", t)))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "day": day,
        "allow_unauthenticated_loopback": state.config.auth.allow_unauthenticated_loopback,
        "keys": keys,
        "tenants": tenants,
        "budgets": state.ledger.budgets.view(&day),
    })))
}
