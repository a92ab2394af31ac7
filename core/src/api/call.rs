//! Per-call accounting at the edge: the middleware opens a [`Call`] for every `/v1/*` request,
//! handlers fill it in as they learn things (caller, model, route, usage), and the response
//! body's end (or the client going away) closes it into a ledger record.
//!
//! Closing happens when the body is dropped, after its last byte was handed to the socket, so
//! the accounting never delays an answer.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use actix_web::{web, HttpMessage, HttpRequest};
use futures_util::StreamExt;

use super::auth::Principal;
use super::AppState;
use crate::ledger::{CacheOutcome, CallRecord, Outcome, Prices, Tier, UsageSource};
use crate::providers::chain::{Served, StreamStart};
use crate::types::{ChatRequest, ChatResponse, Usage};

/// Header naming the end user a call is for (wins over the body's `user`).
pub const USER_HEADER: &str = "x-switchyard-user";
/// Header tagging a call with a feature name, for cost per feature.
pub const TAG_HEADER: &str = "x-switchyard-tag";

/// What is known about a call so far.
#[derive(Debug)]
struct Draft {
    started: Instant,
    ts_us: u64,
    id: String,
    trace_id: String,
    endpoint: String,
    tenant: String,
    key_id: Option<String>,
    user: Option<String>,
    tag: Option<String>,
    model_requested: Option<String>,
    model_resolved: Option<String>,
    tier: Tier,
    provider: Option<String>,
    upstream_model: Option<String>,
    route_reason: Option<String>,
    route_header: Option<String>,
    route_inputs: Option<crate::router::policy::RouteInputs>,
    cache: CacheOutcome,
    cache_detail: Option<String>,
    cache_key: Option<String>,
    saved_pusd: Option<u64>,
    streamed: bool,
    usage: Option<(u64, u64, u64)>,
    request: Option<ChatRequest>,
    completion_text: String,
    ttft: Option<Duration>,
    head: Option<Duration>,
    upstream: Duration,
    waited: Duration,
    attempts: u32,
    status: u16,
    error: Option<String>,
    stream_failed: bool,
}

/// A call being accounted; cheap to clone, a no-op when the request is not accounted.
#[derive(Clone, Default)]
pub struct Call(Option<Arc<Mutex<Draft>>>);

fn header(req: &actix_web::dev::ServiceRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .map(str::to_owned)
}

fn clip(s: &str) -> String {
    s.chars().take(256).collect()
}

impl Call {
    /// Open the call of a request (middleware).
    pub fn open(
        req: &actix_web::dev::ServiceRequest,
        id: &str,
        trace: &crate::telemetry::TraceContext,
    ) -> Self {
        let draft = Draft {
            trace_id: trace.trace_id_hex(),
            started: Instant::now(),
            ts_us: crate::ledger::now_us(),
            id: id.to_owned(),
            endpoint: req.path().to_owned(),
            tenant: String::new(),
            key_id: None,
            user: header(req, USER_HEADER),
            tag: header(req, TAG_HEADER),
            model_requested: None,
            model_resolved: None,
            tier: Tier::None,
            provider: None,
            upstream_model: None,
            route_reason: None,
            route_header: None,
            route_inputs: None,
            cache: CacheOutcome::Bypass,
            cache_detail: None,
            cache_key: None,
            saved_pusd: None,
            streamed: false,
            usage: None,
            request: None,
            completion_text: String::new(),
            ttft: None,
            head: None,
            upstream: Duration::ZERO,
            waited: Duration::ZERO,
            attempts: 0,
            status: 0,
            error: None,
            stream_failed: false,
        };
        Self(Some(Arc::new(Mutex::new(draft))))
    }

    /// The call of a request, if it is accounted.
    pub fn of(req: &HttpRequest) -> Self {
        req.extensions().get::<Self>().cloned().unwrap_or_default()
    }

    fn with(&self, f: impl FnOnce(&mut Draft)) {
        if let Some(d) = &self.0 {
            if let Ok(mut d) = d.lock() {
                f(&mut d);
            }
        }
    }

    /// Who is calling.
    pub fn principal(&self, p: &Principal) {
        self.with(|d| {
            d.tenant.clone_from(&p.tenant);
            d.key_id.clone_from(&p.key_id);
        });
    }

    /// The model asked for, whether the answer streams, and the body's `user` (the header wins).
    pub fn request(&self, model: &str, stream: bool, user: Option<&str>) {
        self.with(|d| {
            d.model_requested = Some(clip(model));
            d.streamed = stream;
            if d.user.is_none() {
                d.user = user.filter(|u| !u.is_empty()).map(clip);
            }
        });
    }

    /// The requested model was replaced (e.g. by a budget downgrade).
    pub fn reroute(&self, reason: &'static str) {
        self.with(|d| d.route_reason = Some(reason.to_owned()));
    }

    /// The router chose a tier: remember why, for the record and `x-switchyard-route`.
    pub fn routed(&self, d: &crate::router::policy::Decision) {
        self.with(|draft| {
            draft.route_reason = Some(match d.score {
                Some(s) => format!("route:{}:{}:{s:.3}", d.tier, d.reason),
                None => format!("route:{}:{}", d.tier, d.reason),
            });
            draft.route_header = Some(d.header());
        });
    }

    /// What the router looked at, kept in the record for the what-if simulator.
    pub fn route_inputs(&self, inputs: crate::router::policy::RouteInputs) {
        self.with(|d| d.route_inputs = Some(inputs));
    }

    /// The call's cost so far, when the model reported its usage (whole answers).
    pub fn cost_pusd(&self, prices: &Prices) -> Option<u64> {
        let mut out = None;
        self.with(|d| {
            if !d.streamed {
                out = d.usage.map(|(p, c, k)| d.cost(prices, p, c, k));
            }
        });
        out
    }

    /// The cache was consulted: a miss, or a hit that saved what its original call cost
    /// (`detail` says which entry and how close, for the record and the header).
    pub fn cache(&self, outcome: CacheOutcome, saved_pusd: Option<u64>, detail: Option<String>) {
        self.with(|d| {
            d.cache = outcome;
            d.saved_pusd = saved_pusd;
            if let Some(detail) = detail {
                if outcome != CacheOutcome::Miss {
                    d.route_reason = Some(detail.clone());
                }
                d.cache_detail = Some(detail);
            }
        });
    }

    /// The request's exact cache key (hex), for `x-switchyard-cache-key` and purges.
    pub fn cache_key(&self, key: &[u8; 32]) {
        self.with(|d| d.cache_key = Some(hex::encode(key)));
    }

    /// The exact cache key, when the cache took part.
    pub fn cache_key_hex(&self) -> Option<String> {
        let mut out = None;
        self.with(|d| out.clone_from(&d.cache_key));
        out
    }

    /// `x-switchyard-cache`: the outcome, and for semantic hits the verifier's score.
    pub fn cache_header(&self) -> String {
        let mut out = String::new();
        self.with(|d| {
            out = match &d.cache_detail {
                Some(detail) if d.cache != CacheOutcome::HitExact => {
                    let rest = detail.split_once(':').map_or("", |(_, r)| r);
                    format!("{}; {rest}", d.cache.as_str())
                }
                _ => d.cache.as_str().to_owned(),
            };
        });
        out
    }

    /// The cache outcome, for `x-switchyard-cache`.
    pub fn cache_outcome(&self) -> CacheOutcome {
        let mut out = CacheOutcome::Bypass;
        self.with(|d| out = d.cache);
        out
    }

    /// The `x-switchyard-route` value, when the router chose.
    pub fn route_header(&self) -> Option<String> {
        let mut out = None;
        self.with(|d| out.clone_from(&d.route_header));
        out
    }

    /// Who answered.
    pub fn served(&self, served: &Served, tier: Tier, reason: &'static str) {
        self.with(|d| {
            d.tier = tier;
            d.provider = Some(served.provider.clone());
            d.upstream_model = Some(served.model.clone());
            let prefix = format!("{}/", served.provider);
            d.model_resolved = Some(if served.model.starts_with(&prefix) {
                served.model.clone()
            } else {
                prefix + &served.model
            });
            d.attempts = served.attempts;
            d.upstream += served.upstream;
            d.waited += served.waited;
            d.route_reason.get_or_insert_with(|| reason.to_owned());
        });
    }

    /// Answered by the local model `model` (`local/...`), after `took` of inference.
    pub fn local(&self, model: &str, took: Duration) {
        self.with(|d| {
            d.tier = Tier::Local;
            d.provider = Some("local".to_owned());
            d.upstream_model = Some(model.to_owned());
            d.model_resolved = Some(model.to_owned());
            d.attempts = 1;
            d.upstream += took;
            d.route_reason
                .get_or_insert_with(|| "local_model".to_owned());
        });
    }

    /// Time spent in a local model before the answer started.
    pub fn inference(&self, took: Duration) {
        self.with(|d| d.upstream += took);
    }

    /// Token counts reported by the model.
    pub fn usage(&self, u: &Usage) {
        self.with(|d| d.usage = Some((u.prompt_tokens, u.completion_tokens, u.cached_tokens())));
    }

    /// Token counts of a non-chat endpoint.
    pub fn tokens(&self, prompt: u64, completion: u64) {
        self.with(|d| d.usage = Some((prompt, completion, 0)));
    }

    /// A whole chat answer: its usage, or (when it has none) the request and text to count.
    pub fn answer(&self, resp: &ChatResponse, req: ChatRequest) {
        self.with(|d| match &resp.usage {
            Some(u) => d.usage = Some((u.prompt_tokens, u.completion_tokens, u.cached_tokens())),
            None => {
                d.request = Some(req);
                for c in &resp.choices {
                    if let Some(t) = &c.message.content {
                        d.completion_text.push_str(t);
                    }
                }
            }
        });
    }

    /// A streamed answer started: note the first token and watch the rest for usage, text and
    /// failures. The request is kept in case the stream reports no usage.
    pub fn stream(&self, mut start: StreamStart, req: ChatRequest) -> StreamStart {
        let Some(inner) = self.0.clone() else {
            return start;
        };
        self.with(|d| {
            d.ttft = Some(d.started.elapsed());
            d.request = Some(req);
            note_chunk(d, &start.first);
        });
        let rest = std::mem::replace(&mut start.rest, futures_util::stream::empty().boxed());
        start.rest = rest
            .inspect(move |item| {
                if let Ok(mut d) = inner.lock() {
                    match item {
                        Ok(chunk) => note_chunk(&mut d, chunk),
                        Err(e) => {
                            d.stream_failed = true;
                            d.error = Some(e.clone().into_api_error().class().to_owned());
                        }
                    }
                }
            })
            .boxed();
        start
    }
}

fn note_chunk(d: &mut Draft, c: &crate::types::ChatChunk) {
    if let Some(u) = &c.usage {
        d.usage = Some((u.prompt_tokens, u.completion_tokens, u.cached_tokens()));
    }
    if d.usage.is_none() {
        for ch in &c.choices {
            if let Some(t) = &ch.delta.content {
                d.completion_text.push_str(t);
            }
        }
    }
}

/// Count tokens the model did not report: with the local tokenizer when loaded, else about
/// four characters a token.
fn count(state: &AppState, text: &str) -> (u64, UsageSource) {
    if let Some(tok) = state.local.chat.as_ref().and_then(|c| c.tokenizer()) {
        if let Ok(enc) = tok.encode(text, false) {
            return (enc.len() as u64, UsageSource::Tokenizer);
        }
    }
    (text.len().div_ceil(4) as u64, UsageSource::Estimate)
}

impl Draft {
    /// What these tokens cost on the tier and model that answered (local and cache: nothing).
    fn cost(&self, prices: &Prices, prompt: u64, completion: u64, cached: u64) -> u64 {
        match self.tier {
            Tier::Cloud => {
                let names = [
                    self.model_resolved.as_deref().unwrap_or_default(),
                    self.upstream_model.as_deref().unwrap_or_default(),
                    self.model_requested.as_deref().unwrap_or_default(),
                ];
                prices
                    .lookup(&names)
                    .map_or(0, |p| Prices::cost(p, prompt, completion, cached))
            }
            Tier::Local | Tier::Cache | Tier::None => 0,
        }
    }

    fn into_record(self, state: &AppState, outcome_hint: Option<Outcome>) -> CallRecord {
        let latency = self.started.elapsed();
        let (prompt, completion, cached, source) = match (self.usage, &self.request) {
            (Some((p, c, k)), _) => (p, c, k, UsageSource::Reported),
            (None, Some(req)) => {
                let (p, src) = count(state, &req.text_of(|_| true));
                let (c, _) = count(state, &self.completion_text);
                (p, c, 0, src)
            }
            (None, None) => (0, 0, 0, UsageSource::None),
        };
        let prices = &state.ledger.prices;
        let cost = self.cost(prices, prompt, completion, cached);
        let savings = match (self.tier, self.saved_pusd) {
            (Tier::Cache, Some(saved)) => saved,
            (Tier::Local | Tier::Cache, _) => prices
                .baseline()
                .map_or(0, |p| Prices::cost(p, prompt, completion, 0)),
            (Tier::Cloud | Tier::None, _) => 0,
        };
        let failed = self.status >= 400 || self.stream_failed;
        let outcome = match outcome_hint {
            Some(o) => o,
            None if failed => Outcome::Error,
            None => Outcome::Ok,
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let overhead = (self.tier != Tier::None)
            .then(|| self.ttft.or(self.head))
            .flatten()
            .map(|h| ms(h.saturating_sub(self.upstream + self.waited)));
        CallRecord {
            id: self.id,
            trace_id: self.trace_id,
            ts_us: self.ts_us,
            tenant: self.tenant,
            key_id: self.key_id,
            user: self.user,
            tag: self.tag,
            endpoint: self.endpoint,
            model_requested: self.model_requested,
            model_resolved: self.model_resolved,
            tier: self.tier,
            provider: self.provider,
            route_reason: self.route_reason,
            route_inputs: self.route_inputs,
            cache: self.cache,
            streamed: self.streamed,
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            usage_source: source,
            ttft_ms: self.ttft.map(ms),
            latency_ms: ms(latency),
            upstream_ms: (self.tier != Tier::None).then(|| ms(self.upstream)),
            overhead_ms: overhead,
            attempts: self.attempts,
            cost_pusd: cost,
            savings_pusd: savings,
            status: self.status,
            error: self.error,
            outcome,
        }
    }
}

/// The response body of an accounted call: passes bytes through and closes the call when it
/// is dropped (finished, or abandoned by the client).
pub struct LedgerBody<B> {
    inner: B,
    closer: Option<Closer>,
    finished: bool,
}

struct Closer {
    call: Arc<Mutex<Draft>>,
    state: web::Data<AppState>,
}

impl<B> LedgerBody<B> {
    /// Wrap `inner`; `call` is closed when the body goes.
    pub fn new(
        inner: B,
        call: Call,
        state: Option<web::Data<AppState>>,
        status: u16,
        error: Option<&str>,
    ) -> Self {
        let closer = match (call.0, state) {
            (Some(call), Some(state)) => {
                if let Ok(mut d) = call.lock() {
                    d.status = status;
                    d.head = Some(d.started.elapsed());
                    if d.error.is_none() {
                        d.error = error.map(str::to_owned);
                    }
                }
                Some(Closer { call, state })
            }
            _ => None,
        };
        Self {
            inner,
            closer,
            finished: false,
        }
    }
}

impl<B> Drop for LedgerBody<B> {
    fn drop(&mut self) {
        let Some(Closer { call, state }) = self.closer.take() else {
            return;
        };
        let draft = match Arc::try_unwrap(call) {
            Ok(m) => m.into_inner().ok(),
            // A stream's inspector may still hold a reference; take the contents.
            Err(shared) => shared.lock().ok().map(|mut d| {
                let mut taken = Draft {
                    request: d.request.take(),
                    completion_text: std::mem::take(&mut d.completion_text),
                    id: std::mem::take(&mut d.id),
                    trace_id: std::mem::take(&mut d.trace_id),
                    endpoint: std::mem::take(&mut d.endpoint),
                    tenant: std::mem::take(&mut d.tenant),
                    key_id: d.key_id.take(),
                    user: d.user.take(),
                    tag: d.tag.take(),
                    model_requested: d.model_requested.take(),
                    model_resolved: d.model_resolved.take(),
                    provider: d.provider.take(),
                    upstream_model: d.upstream_model.take(),
                    error: d.error.take(),
                    route_reason: d.route_reason.take(),
                    route_header: d.route_header.take(),
                    route_inputs: d.route_inputs.take(),
                    cache_detail: d.cache_detail.take(),
                    cache_key: d.cache_key.take(),
                    ..*d
                };
                taken.started = d.started;
                taken
            }),
        };
        let Some(draft) = draft else { return };
        let hint = (!self.finished && draft.streamed && draft.status < 400)
            .then_some(Outcome::ClientClosed);
        let record = draft.into_record(&state, hint);
        state.ledger.submit(record);
    }
}

impl<B: MessageBody> MessageBody for LedgerBody<B>
where
    B: Unpin,
{
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.as_mut().get_mut();
        let r = Pin::new(&mut this.inner).poll_next(cx);
        if let Poll::Ready(None) = r {
            this.finished = true;
        }
        r
    }
}
