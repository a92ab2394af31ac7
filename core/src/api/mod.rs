//! The HTTP API: OpenAI-compatible routes, health, and the error dialect at the edge.
//!
//! Handlers are thin: authenticate, parse into internal types, call the router and providers,
//! encode. [`configure`] registers every route; the server and the tests both use it.

pub mod admin;
pub mod auth;
pub mod body;
pub mod call;
pub mod chat;
pub mod classify;
pub mod embeddings;
pub mod health;
pub mod jobs;
pub mod messages;
pub mod models;
pub mod responses;
pub mod sse;
pub mod summarize;
pub mod ui;

use std::sync::Arc;

use actix::Addr;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use tracing::Instrument;

use crate::config::Config;
use crate::error::ApiError;
use crate::router::ModelMap;
use crate::storage::Storage;
use crate::supervisor::Supervisor;

/// Everything handlers read; cheap to clone, never locked on the request path.
pub struct AppState {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Model name → failover chain.
    pub models: Arc<ModelMap>,
    /// Key checking.
    pub auth: Arc<auth::Authenticator>,
    /// The actor owning the others.
    pub supervisor: Addr<Supervisor>,
    /// Embedded store.
    pub storage: Storage,
    /// In-process models.
    pub local: crate::local::LocalModels,
    /// Per-call accounting, budgets and metrics.
    pub ledger: Arc<crate::ledger::Ledger>,
    /// The routing policy in force (replaced whole by `PUT /admin/routing/policy`).
    pub routing: crate::router::policy::PolicySlot,
    /// Every policy applied, for the UI's history and rollback.
    pub routing_history: crate::router::history::PolicyHistory,
    /// The response cache.
    pub cache: Arc<crate::cache::Cache>,
    /// Async jobs and batches.
    pub jobs: Arc<crate::jobs::actor::Jobs>,
    /// Every upstream's shared state (health and breaker gauges).
    pub upstreams: Vec<Arc<crate::providers::Upstream>>,
    /// Start time, unix seconds (the `created` of model objects).
    pub started_unix: u64,
}

/// The request id, from `x-request-id` or generated.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Header carrying the request id both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Register every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/chat/completions")
            .route(web::post().to(chat::completions))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/models")
            .route(web::get().to(models::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/classify")
            .route(web::post().to(classify::classify))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/summarize")
            .route(web::post().to(summarize::summarize))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/embeddings")
            .route(web::post().to(embeddings::embeddings))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/messages")
            .route(web::post().to(messages::messages))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/messages/count_tokens")
            .route(web::post().to(messages::count_tokens))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/responses")
            .route(web::post().to(responses::create))
            .default_service(web::to(method_not_allowed)),
    )
    .service(web::resource("/v1/responses/{rest:.+}").to(responses::stored))
    .service(web::resource("/v1/models/{id:.+}").route(web::get().to(models::retrieve)))
    .route("/metrics", web::get().to(admin::metrics))
    .route("/admin/stats", web::get().to(admin::stats))
    .route("/admin/requests", web::get().to(admin::requests))
    .route("/admin/requests/{id}", web::get().to(admin::request))
    .route("/admin/events", web::get().to(admin::events))
    .route("/admin/routing/simulate", web::post().to(admin::simulate))
    .route("/admin/routing/outcomes", web::get().to(admin::outcomes))
    .route("/admin/cache/stats", web::get().to(admin::cache_stats))
    .route("/v1/jobs", web::post().to(jobs::submit))
    .route("/v1/jobs", web::get().to(jobs::list))
    .route("/v1/jobs/{id}", web::get().to(jobs::get))
    .route("/v1/jobs/{id}", web::delete().to(jobs::cancel))
    .route("/v1/jobs/{id}/events", web::get().to(jobs::events))
    .route("/v1/files", web::post().to(jobs::upload))
    .route("/v1/files/{id}", web::get().to(jobs::file))
    .route("/v1/files/{id}/content", web::get().to(jobs::file_content))
    .route("/v1/batches", web::post().to(jobs::create_batch))
    .route("/v1/batches", web::get().to(jobs::list_batches))
    .route("/v1/batches/{id}", web::get().to(jobs::get_batch))
    .route(
        "/v1/batches/{id}/cancel",
        web::post().to(jobs::cancel_batch),
    )
    .route("/admin/cache/purge", web::post().to(admin::cache_purge))
    .route("/admin/timeline", web::get().to(admin::timeline))
    .route("/admin/providers", web::get().to(admin::providers))
    .route("/admin/keys", web::get().to(admin::keys))
    .route("/admin/jobs", web::get().to(jobs::admin_list))
    .route(
        "/admin/routing/history",
        web::get().to(admin::policy_history),
    )
    .route(
        "/admin/routing/rollback",
        web::post().to(admin::policy_rollback),
    )
    .route("/ui", web::get().to(ui::root))
    .route("/ui/login", web::post().to(ui::login))
    .route("/ui/logout", web::post().to(ui::logout))
    .route("/ui/{path:.*}", web::get().to(ui::asset))
    .service(
        web::resource("/admin/routing/policy")
            .route(web::get().to(admin::get_policy))
            .route(web::put().to(admin::put_policy))
            .default_service(web::to(method_not_allowed)),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::RouteNotFound {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    })
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let body = serde_json::json!({"error": {
        "message": format!("Method {} is not allowed on {}.", req.method(), req.path()),
        "type": "invalid_request_error", "param": null, "code": "method_not_allowed"}});
    HttpResponse::MethodNotAllowed().json(body)
}

fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_owned())
}

/// Middleware body: assign the request id, open the request span and the call's ledger entry
/// (`/v1/*`), echo the id back, and close the entry when the response body ends.
pub fn with_request_id<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<call::LedgerBody<B>>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody + Unpin,
{
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(valid_request_id)
        .unwrap_or_else(|| crate::ledger::new_id().to_string());
    let trace = crate::telemetry::TraceContext::from_traceparent(
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let span = tracing::info_span!("http", request_id = %id, trace_id = tracing::field::Empty, method = %req.method(), path = %req.path());
    let trace = crate::telemetry::link_span(&span, trace);
    span.record("trace_id", trace.trace_id_hex());
    let header_value = HeaderValue::from_str(&id).ok();
    // Inference calls are accounted; reads like `GET /v1/models` are not.
    let accounted = req.path().starts_with("/v1/") && req.method() == actix_web::http::Method::POST;
    let call = if accounted {
        let c = call::Call::open(&req, &id, &trace);
        req.extensions_mut().insert(c.clone());
        c
    } else {
        call::Call::default()
    };
    let state = accounted
        .then(|| req.app_data::<web::Data<AppState>>().cloned())
        .flatten();
    req.extensions_mut().insert(RequestId(id));
    let fut = {
        let _g = span.enter();
        srv.call(req)
    };
    async move {
        let mut res = trace.scope(fut).await?;
        if let Some(v) = header_value {
            res.headers_mut()
                .insert(HeaderName::from_static(REQUEST_ID), v);
        }
        let status = res.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), "request done");
        }
        let error = res.response().error().and_then(|e| {
            e.as_error::<ApiError>()
                .or_else(|| e.as_error::<messages::AnthropicError>().map(|a| &a.0))
                .map(ApiError::class)
        });
        let error = error.or_else(|| {
            (status.is_client_error() || status.is_server_error()).then(|| {
                if status == actix_web::http::StatusCode::NOT_FOUND {
                    "unknown_url"
                } else {
                    "http_error"
                }
            })
        });
        Ok(res.map_body(move |_, body| {
            call::LedgerBody::new(body, call, state, status.as_u16(), error)
        }))
    }
    .instrument(span)
}
