//! `POST /v1/chat/completions`, streamed and not.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::Principal;
use super::body::read_request;
use super::call::Call;
use super::AppState;
use crate::error::ApiError;
use crate::ledger::{CacheOutcome, Tier, Verdict};
use crate::providers::chain::{self, Served};
use crate::types::{ChatRequest, ChatResponse, Role, Stop};
use switchyard_models::embed::MAX_TOKENS;

/// Header that sets a request's overall deadline in milliseconds.
pub const TIMEOUT_HEADER: &str = "x-switchyard-timeout-ms";

/// Check what serde cannot: non-empty conversation, ranges, required content.
pub fn validate(req: &ChatRequest) -> Result<(), ApiError> {
    if req.model.trim().is_empty() {
        return Err(ApiError::param("model", "'model' must not be empty."));
    }
    if req.messages.is_empty() {
        return Err(ApiError::param(
            "messages",
            "'messages' must contain at least one message.",
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        let has_content = m.content.as_ref().is_some_and(|c| !c.is_empty());
        match m.role {
            Role::Assistant => {
                if !has_content && m.tool_calls.as_ref().is_none_or(Vec::is_empty) {
                    return Err(ApiError::param(
                        format!("messages[{i}].content"),
                        format!(
                            "messages[{i}]: an assistant message needs 'content' or 'tool_calls'."
                        ),
                    ));
                }
            }
            Role::Tool => {
                if m.tool_call_id.as_deref().is_none_or(str::is_empty) {
                    return Err(ApiError::param(
                        format!("messages[{i}].tool_call_id"),
                        format!("messages[{i}]: a tool message needs 'tool_call_id'."),
                    ));
                }
            }
            Role::System | Role::Developer | Role::User | Role::Function => {
                if m.content.is_none() {
                    return Err(ApiError::param(
                        format!("messages[{i}].content"),
                        format!("messages[{i}]: 'content' is required."),
                    ));
                }
            }
        }
    }
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::param(
                "temperature",
                format!("{t} is not in [0, 2]."),
            ));
        }
    }
    if let Some(p) = req.top_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(ApiError::param("top_p", format!("{p} is not in [0, 1].")));
        }
    }
    if let Some(n) = req.n {
        if !(1..=128).contains(&n) {
            return Err(ApiError::param("n", format!("{n} is not in [1, 128].")));
        }
    }
    for (name, v) in [
        ("max_tokens", req.max_tokens),
        ("max_completion_tokens", req.max_completion_tokens),
    ] {
        if v == Some(0) {
            return Err(ApiError::param(
                name,
                format!("'{name}' must be at least 1."),
            ));
        }
    }
    if let Some(Stop::Many(v)) = &req.stop {
        if v.len() > 4 {
            return Err(ApiError::param(
                "stop",
                "at most 4 stop sequences are allowed.",
            ));
        }
    }
    Ok(())
}

/// The request's deadline: the header if present and sane, else the configured default.
pub fn deadline(req: &HttpRequest, default: Duration) -> Result<Instant, ApiError> {
    let timeout = match req.headers().get(TIMEOUT_HEADER) {
        None => default,
        Some(v) => {
            let ms = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    ApiError::param(
                        TIMEOUT_HEADER,
                        format!("'{TIMEOUT_HEADER}' must be a positive number of milliseconds."),
                    )
                })?;
            Duration::from_millis(ms)
        }
    };
    Ok(Instant::now() + timeout)
}

pub(crate) fn served_headers(resp: &mut actix_web::HttpResponseBuilder, served: &Served) {
    resp.insert_header(("x-switchyard-provider", served.provider.as_str()));
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&served.model) {
        resp.insert_header(("x-switchyard-model", v));
    }
    resp.insert_header(("x-switchyard-attempts", served.attempts));
}

/// What answering a chat request produced.
pub enum Dispatched {
    /// A stream whose first chunk is in hand.
    Stream(chain::StreamStart),
    /// A whole answer.
    Whole {
        /// The answer.
        answer: ChatResponse,
        /// Who answered.
        served: Served,
        /// The local model's confidence, when it answered.
        confidence: Option<f32>,
    },
}

/// Answer a validated chat request, whatever its dialect: spend budget, the local model by
/// name, the model's failover chain, then the local model as the last resort. Everything
/// learnt on the way is noted on `call`.
pub async fn dispatch(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    chat: ChatRequest,
    call: &Call,
) -> Result<Dispatched, ApiError> {
    let max_cost = max_cost(req, &chat)?;
    let plan = cache_plan(state, req, principal, &chat)?;
    let mut question_embedding = None;
    if let Some(plan) = &plan {
        call.cache_key(&plan.key);
        if plan.mode.reads() {
            if let Some(e) = state.cache.get(&plan.tenant, &plan.key) {
                return cache_hit(call, chat, e, None);
            }
        }
        if let Some((partition, question)) = &plan.semantic {
            question_embedding = embed_prompt(state, question, MAX_TOKENS).await;
            if let (true, Some((emb, _))) = (plan.mode.reads(), &question_embedding) {
                let found = state
                    .cache
                    .semantic(&plan.tenant, partition, emb.clone(), question.clone())
                    .await;
                match found {
                    Ok((e, hit)) => return cache_hit(call, chat, e, Some(hit)),
                    Err(nearest) => {
                        call.cache(
                            CacheOutcome::Miss,
                            None,
                            nearest.map(|n| format!("cache_miss:nearest={n:.3}")),
                        );
                    }
                }
            }
        }
        if call.cache_outcome() != CacheOutcome::Miss {
            call.cache(CacheOutcome::Miss, None, None);
        }
    }
    let result = answer(
        state,
        req,
        principal,
        chat,
        call,
        max_cost,
        question_embedding.clone(),
    )
    .await?;
    Ok(match (plan, result) {
        (Some(plan), result) if plan.mode.writes() => {
            store(state, plan, question_embedding.map(|(e, _)| e), result)
        }
        (_, result) => result,
    })
}

/// Header choosing a request's cache mode: `on`, `off`, `read-only`, `write-only`, `refresh`.
/// (The response carries the outcome under the same name.)
pub const CACHE_HEADER: &str = "x-switchyard-cache";

/// What the cache does for one request.
struct CachePlan {
    mode: crate::cache::Mode,
    tenant: String,
    key: [u8; 32],
    model: String,
    ttl_s: u64,
    /// Semantic partition and question, when the request may be answered semantically.
    semantic: Option<(String, String)>,
}

/// Whether and how the cache takes part: the request's header, else the tenant's and model's
/// mode; only temperature-0 requests unless the header asks or the config allows sampled ones.
fn cache_plan(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    chat: &ChatRequest,
) -> Result<Option<CachePlan>, ApiError> {
    use crate::cache::Mode;
    let asked = match req.headers().get(CACHE_HEADER) {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(Mode::parse).ok_or_else(|| {
            ApiError::param(
                CACHE_HEADER,
                format!("'{CACHE_HEADER}' must be one of on, off, read-only, write-only, refresh."),
            )
        })?),
    };
    let cfg = &state.cache.config;
    let eff = cfg.effective(&principal.tenant, &chat.model);
    let mode = if cfg.enabled {
        asked.unwrap_or(eff.mode)
    } else {
        Mode::Off
    };
    let deterministic = chat.temperature.is_some_and(|t| t == 0.0);
    if mode == Mode::Off || !(deterministic || asked.is_some() || eff.nondeterministic) {
        return Ok(None);
    }
    let semantic = (eff.semantic && state.local.embed.is_some())
        .then(|| crate::cache::key::question(chat))
        .flatten()
        .map(|q| (crate::cache::key::partition(chat), q));
    Ok(Some(CachePlan {
        mode,
        tenant: principal.tenant.clone(),
        key: crate::cache::key::exact_key(chat),
        model: chat.model.clone(),
        ttl_s: eff.ttl_s,
        semantic,
    }))
}

/// Answer from a cache entry, as JSON or as a replayed stream.
fn cache_hit(
    call: &Call,
    chat: ChatRequest,
    entry: crate::cache::Entry,
    semantic: Option<crate::cache::SemanticHit>,
) -> Result<Dispatched, ApiError> {
    let mut answer: ChatResponse = serde_json::from_slice(&entry.response)
        .map_err(|e| ApiError::Internal(format!("cached answer: {e}")))?;
    answer.id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    answer.created = crate::ledger::now_us() / 1_000_000;
    let served = crate::cache::stream::served_by_cache(&entry.upstream_model);
    let (outcome, detail) = match semantic {
        Some(h) => (
            crate::ledger::CacheOutcome::HitSemantic,
            format!(
                "cache_semantic:score={:.3}; cosine={:.3}",
                h.probability, h.cosine
            ),
        ),
        None => (
            crate::ledger::CacheOutcome::HitExact,
            "cache_exact".to_owned(),
        ),
    };
    call.cache(outcome, Some(entry.cost_pusd), Some(detail));
    call.served(&served, Tier::Cache, "cache");
    if chat.stream {
        let start = crate::cache::stream::replay(answer, served);
        Ok(Dispatched::Stream(call.stream(start, chat)))
    } else {
        call.answer(&answer, chat);
        Ok(Dispatched::Whole {
            answer,
            served,
            confidence: None,
        })
    }
}

/// Store what answering produced: whole answers now, streams once they end complete.
fn store(
    state: &AppState,
    plan: CachePlan,
    embedding: Option<Vec<f32>>,
    result: Dispatched,
) -> Dispatched {
    let cache = std::sync::Arc::clone(&state.cache);
    let prices = state.ledger.prices.clone();
    let semantic = match (plan.semantic, embedding) {
        (Some((partition, question)), Some(embedding)) => Some(crate::cache::Semantic {
            partition,
            question,
            embedding,
        }),
        _ => None,
    };
    let put = move |answer: &ChatResponse, served: &Served| {
        let now = crate::ledger::now_us() / 1_000_000;
        let (prompt, completion, cached) = answer.usage.as_ref().map_or((0, 0, 0), |u| {
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens())
        });
        let cost = if served.provider == "local" {
            0
        } else {
            prices
                .lookup(&[
                    &format!("{}/{}", served.provider, served.model),
                    &served.model,
                    &plan.model,
                ])
                .map_or(0, |p| {
                    crate::ledger::Prices::cost(p, prompt, completion, cached)
                })
        };
        let Ok(response) = serde_json::to_vec(answer) else {
            return;
        };
        cache.put(
            &plan.tenant,
            plan.key,
            crate::cache::Entry {
                created_s: now,
                expires_s: if plan.ttl_s == 0 { 0 } else { now + plan.ttl_s },
                model: plan.model.clone(),
                provider: served.provider.clone(),
                upstream_model: served.model.clone(),
                semantic: semantic.clone(),
                response,
                cost_pusd: cost,
            },
        );
    };
    match result {
        Dispatched::Whole {
            answer,
            served,
            confidence,
        } => {
            put(&answer, &served);
            Dispatched::Whole {
                answer,
                served,
                confidence,
            }
        }
        Dispatched::Stream(start) => {
            let served = start.served.clone();
            Dispatched::Stream(crate::cache::stream::tee(start, move |answer| {
                put(&answer, &served);
            }))
        }
    }
}

/// Answer a request the cache did not: budgets, routing, local or upstream.
#[allow(clippy::too_many_arguments)]
async fn answer(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    mut chat: ChatRequest,
    call: &Call,
    max_cost: Option<u64>,
    question_embedding: Option<(Vec<f32>, usize)>,
) -> Result<Dispatched, ApiError> {
    let budgets = &state.ledger.budgets;
    if !budgets.is_empty() {
        let day = crate::ledger::today();
        match budgets.check(&principal.tenant, principal.key_id.as_deref(), &day) {
            Verdict::Allow => {}
            Verdict::Reject { what } => {
                state
                    .ledger
                    .metrics
                    .budget_actions
                    .with_label_values(&["reject"])
                    .inc();
                return Err(ApiError::BudgetExceeded(format!(
                    "The daily spend budget of {what} is used up; calls resume at 00:00 UTC or when the budget is raised."
                )));
            }
            Verdict::Downgrade { what, model } => {
                state
                    .ledger
                    .metrics
                    .budget_actions
                    .with_label_values(&["downgrade"])
                    .inc();
                tracing::info!(budget = %what, from = %chat.model, to = %model, "spend budget reached; downgrading");
                chat.model = model;
                call.reroute("budget_downgrade");
            }
        }
    }
    if let Some(policy) = state.routing.load_full().filter(|p| p.applies(&chat.model)) {
        let task = req.headers().get(TASK_HEADER).and_then(|v| v.to_str().ok());
        let mut inputs = crate::router::policy::RouteInputs::of(&chat, task, &principal.tenant);
        // The embedding is made whenever a scorer is configured, even when a rule decides,
        // so the what-if simulator can replay any candidate policy on this call.
        if let Some(window) = policy.embedding_window() {
            // One embedding per request: the question's, which the semantic cache made
            // already when it looked, if the scorer's window covered the whole question
            // (the same vector). Otherwise the scorer's window of it: a bounded time however
            // long the prompt.
            let text = crate::router::policy::prompt_text(&chat);
            let e = match question_embedding {
                Some((e, tokens)) if tokens <= window => Some(e),
                _ => {
                    let q = crate::cache::key::question(&chat).unwrap_or_else(|| text.clone());
                    embed_prompt(state, &q, window).await.map(|(e, _)| e)
                }
            };
            if let Some(e) = e {
                inputs.features = Some(switchyard_models::router::features(&e, &text));
            }
        }
        let mut decision = policy.decide(&inputs);
        call.route_inputs(inputs);
        // Cascade: a confident local answer stands; an unsure one escalates.
        if let (Some((up_tier, up_model, min)), Some(local), false) = (
            decision.escalate.clone(),
            state
                .local
                .chat
                .as_ref()
                .filter(|_| is_local_chat(&decision.model)),
            chat.stream,
        ) {
            let began = Instant::now();
            let (answer, confidence) = local.complete(&chat).await?;
            if f64::from(confidence) >= min {
                decision.reason = format!(
                    "{}{}:confidence={confidence:.2}",
                    crate::router::CASCADE_KEPT,
                    decision.reason
                );
                call.routed(&decision);
                call.inference(began.elapsed());
                let served = crate::local::generate::served();
                call.served(&served, Tier::Local, "local_model");
                call.answer(&answer, chat);
                return Ok(Dispatched::Whole {
                    answer,
                    served,
                    confidence: Some(confidence),
                });
            }
            call.inference(began.elapsed());
            decision = crate::router::policy::Decision {
                tier: up_tier,
                model: up_model,
                reason: format!(
                    "{}{}:confidence={confidence:.2}",
                    crate::router::CASCADE_ESCALATED,
                    decision.reason
                ),
                score: decision.score,
                escalate: None,
            };
            tracing::debug!(confidence, route = %decision.header(), "local answer unsure; escalating");
        }
        if let Some(ceiling) = max_cost {
            decision = within_cost(state, &policy, &chat, decision, ceiling)?;
        }
        tracing::debug!(route = %decision.header(), model = %decision.model, "routed");
        call.routed(&decision);
        chat.model = decision.model;
    } else if let Some(ceiling) = max_cost {
        let est = estimate_pusd(state, &chat, &chat.model, DEFAULT_ASSUMED_OUTPUT)
            .ok_or_else(|| unpriced(&chat.model))?;
        if est > ceiling {
            return Err(over_cost(&chat.model, est, ceiling));
        }
    }
    if let Some(local) = state
        .local
        .chat
        .as_ref()
        .filter(|_| is_local_chat(&chat.model))
    {
        return local_answer(local, chat, call, "local_model").await;
    }
    let routes = state.models.resolve(&chat.model)?;
    let reason = if state.config.models.contains_key(&chat.model) {
        "model_map"
    } else {
        "explicit_provider"
    };
    let deadline = deadline(req, state.config.server.request_timeout)?;
    let result = if chat.stream {
        chain::stream(&routes, &chat, deadline)
            .await
            .map(Dispatched::Stream)
    } else {
        chain::complete(&routes, &chat, deadline)
            .await
            .map(|(answer, served)| Dispatched::Whole {
                answer,
                served,
                confidence: None,
            })
    };
    match result {
        Ok(Dispatched::Stream(start)) => {
            call.served(&start.served, Tier::Cloud, reason);
            Ok(Dispatched::Stream(call.stream(start, chat)))
        }
        Ok(Dispatched::Whole {
            answer,
            served,
            confidence,
        }) => {
            call.served(&served, Tier::Cloud, reason);
            call.answer(&answer, chat);
            Ok(Dispatched::Whole {
                answer,
                served,
                confidence,
            })
        }
        Err(e) => match last_resort(state, req, &chat.model, &e) {
            Some(local) => {
                tracing::warn!(error = %e, "every upstream failed; answering with the local model");
                local_answer(local, chat, call, "local_fallback").await
            }
            None => Err(e),
        },
    }
}

/// Header with a request's cost ceiling in USD (the body's `max_cost` does the same).
pub const MAX_COST_HEADER: &str = "x-switchyard-max-cost-usd";

/// Completion tokens assumed for an estimate when neither the request nor a policy says.
const DEFAULT_ASSUMED_OUTPUT: u32 = 256;

/// The request's cost ceiling in picodollars: the header, else the body's `max_cost`.
fn max_cost(req: &HttpRequest, chat: &ChatRequest) -> Result<Option<u64>, ApiError> {
    let (param, usd) = match req.headers().get(MAX_COST_HEADER) {
        Some(v) => (
            MAX_COST_HEADER,
            Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .unwrap_or(f64::NAN),
            ),
        ),
        None => ("max_cost", chat.max_cost),
    };
    match usd {
        None => Ok(None),
        Some(v) if v.is_finite() && (0.0..=1e6).contains(&v) => Ok(Some((v * 1e12).round() as u64)),
        Some(_) => Err(ApiError::param(
            param,
            format!("'{param}' must be a number of US dollars between 0 and 1000000."),
        )),
    }
}

/// Estimated picodollars of answering `chat` with `model`: the prompt (about four characters a
/// token) plus the completion budget (`max_tokens`, else `assumed_output`) for each choice.
fn estimate_pusd(
    state: &AppState,
    chat: &ChatRequest,
    model: &str,
    assumed_output: u32,
) -> Option<u64> {
    let price = crate::router::price_of(&state.models, &state.ledger.prices, model)?;
    let output = chat
        .max_completion_tokens
        .or(chat.max_tokens)
        .unwrap_or(assumed_output);
    let choices = u64::from(chat.n.unwrap_or(1));
    Some(crate::ledger::Prices::cost(
        price,
        u64::from(chat.estimate_prompt_tokens()),
        u64::from(output) * choices,
        0,
    ))
}

fn usd(pusd: u64) -> String {
    format!("${:.6}", crate::ledger::record::pusd_to_usd(pusd))
}

fn over_cost(model: &str, est: u64, ceiling: u64) -> ApiError {
    ApiError::MaxCostExceeded(format!(
        "The estimated cost of this request with `{model}` ({}) is over its max_cost ({}); lower max_tokens or raise max_cost.",
        usd(est),
        usd(ceiling)
    ))
}

fn unpriced(model: &str) -> ApiError {
    ApiError::MaxCostExceeded(format!(
        "max_cost cannot be checked: no price is known for `{model}` (set one under [prices.models])."
    ))
}

/// The decision if its estimate fits under `ceiling`; else, by policy, the costliest tier
/// that fits (reason `max_cost:<was>`) or a refusal.
fn within_cost(
    state: &AppState,
    policy: &crate::router::policy::Policy,
    chat: &ChatRequest,
    decision: crate::router::policy::Decision,
    ceiling: u64,
) -> Result<crate::router::policy::Decision, ApiError> {
    let assumed = policy.raw.assumed_output_tokens;
    let est = estimate_pusd(state, chat, &decision.model, assumed);
    if est.is_some_and(|e| e <= ceiling) {
        return Ok(decision);
    }
    let refuse = || match est {
        Some(e) => over_cost(&decision.model, e, ceiling),
        None => unpriced(&decision.model),
    };
    if policy.raw.on_max_cost == crate::router::policy::OverCost::Reject {
        return Err(refuse());
    }
    let best = policy
        .tiers()
        .filter_map(|(tier, model)| {
            let e = estimate_pusd(state, chat, model, assumed)?;
            (e <= ceiling).then_some((e, tier))
        })
        .max_by_key(|(e, _)| *e);
    match best {
        Some((_, tier)) => Ok(policy.to_tier(
            tier,
            format!("max_cost:{}", decision.reason),
            decision.score,
        )),
        None => Err(refuse()),
    }
}

/// Header hinting the task (`classify`, `summarize`, `short`, ...) to routing rules.
pub const TASK_HEADER: &str = "x-switchyard-task";

/// The MiniLM embedding of a text's first `window` tokens and the text's token count, if the
/// local embedder is up and not saturated.
async fn embed_prompt(state: &AppState, text: &str, window: usize) -> Option<(Vec<f32>, usize)> {
    let svc = state.local.embed.as_ref()?;
    let permit = svc.admit().ok()?;
    let text = if text.trim().is_empty() { " " } else { text };
    let (mut vectors, mut tokens) = svc
        .embed_head(&permit, vec![text.to_owned()], window)
        .await
        .ok()?;
    Some((vectors.pop()?, tokens.pop()?))
}

/// Answer with the local chat model (asked for by name, downgraded to, or as the last resort).
async fn local_answer(
    local: &crate::local::GenService,
    chat: ChatRequest,
    call: &Call,
    reason: &'static str,
) -> Result<Dispatched, ApiError> {
    let served = crate::local::generate::served();
    let began = Instant::now();
    if chat.stream {
        let start = local.stream(&chat).await?;
        call.inference(began.elapsed());
        call.served(&served, Tier::Local, reason);
        Ok(Dispatched::Stream(call.stream(start, chat)))
    } else {
        let (answer, confidence) = local.complete(&chat).await?;
        call.inference(began.elapsed());
        call.served(&served, Tier::Local, reason);
        call.answer(&answer, chat);
        Ok(Dispatched::Whole {
            answer,
            served,
            confidence: Some(confidence),
        })
    }
}

/// Response headers of an event stream.
pub(crate) fn sse_response(served: &Served) -> actix_web::HttpResponseBuilder {
    let mut resp = HttpResponse::Ok();
    resp.content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"));
    served_headers(&mut resp, served);
    resp
}

/// The shared tail of the handlers whose dialect has its own event protocol (Anthropic
/// Messages, OpenAI Responses): answer the converted request, then encode a stream with
/// `encoder` or a whole answer with `whole`, with the call's headers either way.
pub(crate) async fn respond_in<E: super::sse::EventEncoder>(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    chat: ChatRequest,
    call: &Call,
    encoder: E,
    whole: impl FnOnce(&ChatResponse) -> serde_json::Value,
) -> Result<HttpResponse, ApiError> {
    let span = tracing::Span::current();
    span.record("model", chat.model.as_str());
    span.record("stream", chat.stream);
    match dispatch(state, req, principal, chat, call).await? {
        Dispatched::Stream(start) => {
            span.record("provider", start.served.provider.as_str());
            let mut resp = sse_response(&start.served);
            call_headers(&mut resp, call, state);
            Ok(resp.streaming(super::sse::encoded_stream(start, encoder)))
        }
        Dispatched::Whole { answer, served, .. } => {
            span.record("provider", served.provider.as_str());
            let mut resp = HttpResponse::Ok();
            served_headers(&mut resp, &served);
            call_headers(&mut resp, call, state);
            Ok(resp.json(whole(&answer)))
        }
    }
}

/// Handle a chat completion.
#[tracing::instrument(skip_all, fields(model, stream, provider))]
pub async fn completions(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let call = Call::of(&req);
    let (principal, chat): (_, ChatRequest) = read_request(&state, &req, payload).await?;
    call.principal(&principal);
    call.request(&chat.model, chat.stream, chat.user.as_deref());
    validate(&chat)?;
    let span = tracing::Span::current();
    span.record("model", chat.model.as_str());
    span.record("stream", chat.stream);
    let include_usage = include_usage(&chat);
    match dispatch(&state, &req, &principal, chat, &call).await? {
        Dispatched::Stream(start) => {
            span.record("provider", start.served.provider.as_str());
            let mut resp = sse_response(&start.served);
            call_headers(&mut resp, &call, &state);
            Ok(resp.streaming(super::sse::openai_stream(start, include_usage)))
        }
        Dispatched::Whole {
            answer,
            served,
            confidence,
        } => {
            span.record("provider", served.provider.as_str());
            let mut resp = HttpResponse::Ok();
            served_headers(&mut resp, &served);
            call_headers(&mut resp, &call, &state);
            if let Some(c) = confidence {
                resp.insert_header(("x-switchyard-confidence", format!("{c:.4}")));
            }
            Ok(resp.json(answer))
        }
    }
}

/// The call's own headers: `x-switchyard-route` when the router chose the tier,
/// `x-switchyard-cache`, and `x-switchyard-cost-usd` when the cost is known before the body
/// goes (whole answers; a stream's cost is in its ledger record).
pub(crate) fn call_headers(
    resp: &mut actix_web::HttpResponseBuilder,
    call: &Call,
    state: &AppState,
) {
    if let Some(h) = call
        .route_header()
        .and_then(|h| actix_web::http::header::HeaderValue::from_str(&h).ok())
    {
        resp.insert_header(("x-switchyard-route", h));
    }
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&call.cache_header()) {
        resp.insert_header(("x-switchyard-cache", v));
    }
    if let Some(k) = call.cache_key_hex() {
        resp.insert_header(("x-switchyard-cache-key", k));
    }
    if let Some(c) = call.cost_pusd(&state.ledger.prices) {
        let usd = crate::ledger::record::pusd_to_usd(c);
        resp.insert_header(("x-switchyard-cost-usd", format!("{usd:.8}")));
    }
}

/// Whether a model name means the local chat model.
pub fn is_local_chat(model: &str) -> bool {
    model == crate::local::CHAT_MODEL || model == "smollm2"
}

/// Whether the client asked for the usage chunk.
fn include_usage(chat: &ChatRequest) -> bool {
    chat.stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// Header with which a request opts out of the local last resort.
pub const LOCAL_FALLBACK_HEADER: &str = "x-switchyard-local-fallback";

/// The local model, when this failure of every upstream may be answered by it: the model is
/// configured for it, the request did not opt out, the local model is ready, and the failure
/// is the upstreams' (not a bad request).
pub fn last_resort<'a>(
    state: &'a AppState,
    req: &HttpRequest,
    model: &str,
    err: &ApiError,
) -> Option<&'a crate::local::GenService> {
    let upstream_failure = matches!(
        err,
        ApiError::BadGateway(_)
            | ApiError::Unavailable(_)
            | ApiError::Timeout(_)
            | ApiError::RateLimited { .. }
    );
    let opted_out = req
        .headers()
        .get(LOCAL_FALLBACK_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("off"));
    let local = state.local.chat.as_deref()?;
    (upstream_failure
        && !opted_out
        && state.models.local_fallback(model)
        && local.state() == crate::local::ModelState::Ready)
        .then_some(local)
}
