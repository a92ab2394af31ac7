//! `/v1/jobs`, and the OpenAI Batch API (`/v1/files`, `/v1/batches`) over the same queue.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Principal;
use super::body::read_request;
use super::AppState;
use crate::error::ApiError;
use crate::jobs::{batch, new_job, webhook, BatchInfo, Job, Operation, State, Webhook};

fn jobs_of(state: &AppState) -> Result<&crate::jobs::actor::Jobs, ApiError> {
    if state.jobs.config.enabled {
        Ok(&state.jobs)
    } else {
        Err(ApiError::NotFound(
            "The jobs API is turned off ([jobs] enabled = false).".to_owned(),
        ))
    }
}

fn storage(e: crate::jobs::StoreError) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// A job the principal may see: its own tenant's, or any for admins.
fn visible(state: &AppState, p: &Principal, id: &str) -> Result<Job, ApiError> {
    let job = jobs_of(state)?.store.get(id).map_err(storage)?;
    match job {
        Some(j) if j.tenant == p.tenant || (p.admin && p.key_id.is_some()) => Ok(j),
        _ => Err(ApiError::NotFound(format!("No job with id `{id}`."))),
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Job options beside the operation.
struct Options {
    priority: u8,
    deadline: Option<u64>,
    idempotency_key: Option<String>,
    webhook: Option<Webhook>,
    generated_secret: bool,
}

fn take_options(
    body: &mut serde_json::Map<String, Value>,
    req: &HttpRequest,
) -> Result<Options, ApiError> {
    let priority = match body.remove("priority") {
        None | Some(Value::Null) => 5,
        Some(v) => v.as_u64().filter(|p| *p <= 9).ok_or_else(|| {
            ApiError::param(
                "priority",
                "'priority' must be an integer from 0 (lowest) to 9 (highest).",
            )
        })? as u8,
    };
    let deadline = match body.remove("deadline") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|d| *d > now_s()).ok_or_else(|| {
            ApiError::param(
                "deadline",
                "'deadline' must be a unix time in seconds, in the future.",
            )
        })?),
    };
    let header_key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let idempotency_key = match body.remove("idempotency_key") {
        None | Some(Value::Null) => header_key,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ApiError::param(
                "idempotency_key",
                "'idempotency_key' must be a string.",
            ))
        }
    };
    if idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 256)
    {
        return Err(ApiError::param(
            "idempotency_key",
            "'idempotency_key' must be 1 to 256 characters.",
        ));
    }
    let (webhook, generated_secret) = match body.remove("webhook") {
        None | Some(Value::Null) => (None, false),
        Some(w) => {
            let url = w["url"].as_str().unwrap_or_default();
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                ApiError::param("webhook.url", format!("'webhook.url' is not a URL: {e}."))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(ApiError::param(
                    "webhook.url",
                    "'webhook.url' must be an http(s) URL with a host.",
                ));
            }
            let (secret, generated) = match w["secret"].as_str() {
                Some(s) => {
                    webhook::key_of(s).map_err(|e| {
                        ApiError::param("webhook.secret", format!("'webhook.secret' {e}."))
                    })?;
                    (s.to_owned(), false)
                }
                None => (webhook::new_secret(), true),
            };
            (
                Some(Webhook {
                    url: url.to_owned(),
                    secret,
                    deliveries: Vec::new(),
                    delivered: false,
                    gave_up: false,
                }),
                generated,
            )
        }
    };
    Ok(Options {
        priority,
        deadline,
        idempotency_key,
        webhook,
        generated_secret,
    })
}

fn validate_operation(op: &Operation, max_units: usize) -> Result<(), ApiError> {
    let units = op.units();
    if units > max_units {
        return Err(ApiError::param(
            "input",
            format!("This job has {units} units; the limit is {max_units} ([jobs] max_units)."),
        ));
    }
    match op {
        Operation::Chat { request } => {
            if !request.is_object() || request["model"].as_str().is_none() {
                return Err(ApiError::param(
                    "request",
                    "'request' must be a chat completion body with a 'model'.",
                ));
            }
        }
        Operation::Embeddings { input, .. } | Operation::Classify { input, .. } => {
            if input.is_empty() {
                return Err(ApiError::param("input", "'input' must not be empty."));
            }
        }
        Operation::Summarize { input, .. } => {
            if input.trim().is_empty() {
                return Err(ApiError::param("input", "'input' must not be empty."));
            }
        }
        Operation::Requests { requests } => {
            if requests.is_empty() {
                return Err(ApiError::param("requests", "'requests' must not be empty."));
            }
            for (i, r) in requests.iter().enumerate() {
                if r.body["stream"] == serde_json::Value::Bool(true) {
                    return Err(ApiError::param(
                        format!("requests[{i}].body.stream"),
                        format!("requests[{i}]: a job's calls cannot stream; progress comes from the job's own events."),
                    ));
                }
                if r.method != "POST" || !batch::ENDPOINTS.contains(&r.url.as_str()) {
                    return Err(ApiError::param(
                        format!("requests[{i}].url"),
                        format!(
                            "requests[{i}]: only POST to {} is supported.",
                            batch::ENDPOINTS.join(" or ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `POST /v1/jobs`: queue a job; `202` with its id and URLs (the same job again, `200`, for a
/// repeated idempotency key).
pub async fn submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let jobs = jobs_of(&state)?;
    let (principal, value): (_, Value) = read_request(&state, &req, payload).await?;
    let Value::Object(mut map) = value else {
        return Err(ApiError::param("body", "The body must be a JSON object."));
    };
    let opts = take_options(&mut map, &req)?;
    let known = ["chat", "embeddings", "summarize", "classify", "requests"];
    match map.get("operation").and_then(Value::as_str) {
        Some(op) if known.contains(&op) => {}
        other => {
            return Err(ApiError::param(
                "operation",
                format!(
                    "'operation' must be one of {}{}.",
                    known.join(", "),
                    other.map(|o| format!(" (got `{o}`)")).unwrap_or_default()
                ),
            ))
        }
    }
    let op: Operation = serde_json::from_value(Value::Object(map))
        .map_err(|e| ApiError::param("operation", format!("Invalid job: {e}.")))?;
    validate_operation(&op, jobs.config.max_units)?;
    let job = new_job(
        &principal.tenant,
        principal.key_id.as_deref(),
        op,
        opts.priority,
        opts.deadline,
        opts.idempotency_key,
        opts.webhook,
    );
    let (job, created) = jobs.store.create(job).map_err(storage)?;
    if created {
        jobs.enqueue(&job.id);
    }
    let mut view = job.view(false);
    if created && opts.generated_secret {
        if let Some(w) = &job.webhook {
            view["webhook"]["secret"] = Value::String(w.secret.clone());
        }
    }
    let mut resp = if created {
        HttpResponse::Accepted()
    } else {
        HttpResponse::Ok()
    };
    Ok(resp
        .insert_header(("location", format!("/v1/jobs/{}", job.id)))
        .json(view))
}

/// `GET /v1/jobs/{id}`.
pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let p = state.auth.authenticate(&req)?;
    let job = visible(&state, &p, &path)?;
    Ok(HttpResponse::Ok().json(job.view(true)))
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<State>,
    /// Most jobs (default 100, at most 1000).
    pub limit: Option<usize>,
}

impl ListQuery {
    /// The page size asked for, checked.
    fn limit(&self) -> Result<usize, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if (1..=1000).contains(&limit) {
            Ok(limit)
        } else {
            Err(ApiError::param(
                "limit",
                "'limit' must be between 1 and 1000.",
            ))
        }
    }
}

/// `GET /v1/jobs`: the caller's jobs, newest first.
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let jobs = jobs_of(&state)?;
    let p = state.auth.authenticate(&req)?;
    let limit = q.limit()?;
    let data: Vec<Value> = jobs
        .store
        .list(Some(&p.tenant), q.state, limit)
        .iter()
        .map(|j| j.view(false))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// `GET /admin/jobs`: every tenant's jobs, newest first, for the control UI (webhook URLs
/// without their query, which may carry a token).
pub async fn admin_list(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let jobs = jobs_of(&state)?;
    super::admin::require_admin(&state, &req)?;
    let limit = q.limit()?;
    let data: Vec<Value> = jobs
        .store
        .list(None, q.state, limit)
        .iter()
        .map(|j| {
            let mut v = j.view(false);
            v["tenant"] = json!(j.tenant);
            if let Some(url) = v.pointer_mut("/webhook/url") {
                *url = json!(url.as_str().map(crate::providers::redact_url));
            }
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

fn cancel_job(state: &AppState, job: &Job) -> Result<Job, ApiError> {
    let now = now_s();
    let updated = jobs_of(state)?
        .store
        .update(&job.id, |j| {
            if !j.state.is_final() {
                j.state = State::Cancelled;
                j.finished_at = Some(now);
                j.lease_until = None;
            }
        })
        .map_err(storage)?
        .ok_or_else(|| ApiError::NotFound(format!("No job with id `{}`.", job.id)))?;
    Ok(updated)
}

/// `DELETE /v1/jobs/{id}`: cancel (a finished job is left as it is, `409`).
pub async fn cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let p = state.auth.authenticate(&req)?;
    let job = visible(&state, &p, &path)?;
    if job.state.is_final() {
        return Err(ApiError::Conflict(format!(
            "Job `{}` already finished ({:?}).",
            job.id, job.state
        )));
    }
    let job = cancel_job(&state, &job)?;
    Ok(HttpResponse::Ok().json(job.view(false)))
}

fn sse(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `GET /v1/jobs/{id}/events`: server-sent `progress` events as the job advances, then `done`
/// with the whole job.
pub async fn events(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let p = state.auth.authenticate(&req)?;
    let job = visible(&state, &p, &path)?;
    let store = jobs_of(&state)?.store.clone();
    let id = job.id.clone();
    let stream = futures_util::stream::unfold(
        (store, id, None::<Value>, false),
        |(store, id, last, finished)| async move {
            if finished {
                return None;
            }
            loop {
                let job = store.get(&id).ok().flatten()?;
                let view = job.view(false);
                let now = json!({"state": view["state"], "progress": view["progress"]});
                if job.state.is_final() {
                    let ev = sse("done", &job.view(true));
                    return Some((Ok::<_, actix_web::Error>(ev), (store, id, Some(now), true)));
                }
                if last.as_ref() != Some(&now) {
                    let ev = sse("progress", &now);
                    return Some((Ok(ev), (store, id, Some(now), false)));
                }
                actix_rt::time::sleep(Duration::from_millis(200)).await;
            }
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(stream.boxed_local()))
}

/// `POST /v1/files` (multipart: `purpose` = `batch`, `file` = JSONL).
pub async fn upload(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let jobs = jobs_of(&state)?;
    let p = state.auth.authenticate(&req)?;
    let limit = jobs.config.max_file_bytes;
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit + 64 * 1024) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut form = actix_multipart::Multipart::new(req.headers(), payload);
    let (mut purpose, mut file, mut filename) =
        (None, None::<Vec<u8>>, String::from("upload.jsonl"));
    while let Some(field) = form.next().await {
        let mut field =
            field.map_err(|e| ApiError::param("file", format!("Invalid multipart body: {e}.")))?;
        let name = field.name().unwrap_or_default().to_owned();
        if let Some(f) = field.content_disposition().and_then(|d| d.get_filename()) {
            if name == "file" {
                filename = f.to_owned();
            }
        }
        let mut data = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::param(name.clone(), format!("Invalid multipart body: {e}."))
            })?;
            if data.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            data.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "purpose" => purpose = Some(String::from_utf8_lossy(&data).trim().to_owned()),
            "file" => file = Some(data),
            _ => {}
        }
    }
    let purpose = purpose.ok_or_else(|| ApiError::param("purpose", "'purpose' is required."))?;
    if purpose != "batch" {
        return Err(ApiError::param(
            "purpose",
            "Only purpose 'batch' is supported.",
        ));
    }
    let data = file.ok_or_else(|| ApiError::param("file", "'file' is required."))?;
    if data.is_empty() {
        return Err(ApiError::param("file", "'file' is empty."));
    }
    let meta =
        batch::put_file(&jobs.store, &p.tenant, &filename, &purpose, &data).map_err(storage)?;
    Ok(HttpResponse::Ok().json(meta.view()))
}

fn own_file(state: &AppState, p: &Principal, id: &str) -> Result<batch::FileMeta, ApiError> {
    batch::get_file(&jobs_of(state)?.store, &p.tenant, id)
        .map_err(storage)?
        .ok_or_else(|| ApiError::NotFound(format!("No such File object: {id}")))
}

/// `GET /v1/files/{id}`.
pub async fn file(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let p = state.auth.authenticate(&req)?;
    Ok(HttpResponse::Ok().json(own_file(&state, &p, &path)?.view()))
}

/// `GET /v1/files/{id}/content`.
pub async fn file_content(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let p = state.auth.authenticate(&req)?;
    let meta = own_file(&state, &p, &path)?;
    let bytes = batch::file_bytes(&jobs_of(&state)?.store, &meta.id)
        .map_err(storage)?
        .unwrap_or_default();
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(bytes))
}

/// Body of `POST /v1/batches`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// The uploaded JSONL.
    pub input_file_id: String,
    /// Endpoint every line calls.
    pub endpoint: String,
    /// `24h`.
    pub completion_window: String,
    /// Caller's metadata.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// `POST /v1/batches`: run every line of an uploaded file as its own routed request.
pub async fn create_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let jobs = jobs_of(&state)?;
    let (p, b): (_, CreateBatch) = read_request(&state, &req, payload).await?;
    if !batch::ENDPOINTS.contains(&b.endpoint.as_str()) {
        return Err(ApiError::param(
            "endpoint",
            format!("'endpoint' must be one of {}.", batch::ENDPOINTS.join(", ")),
        ));
    }
    let window_s = match b.completion_window.as_str() {
        "24h" => 86_400,
        other => {
            return Err(ApiError::param(
                "completion_window",
                format!("'completion_window' must be '24h' (got '{other}')."),
            ))
        }
    };
    let meta = own_file(&state, &p, &b.input_file_id)?;
    let data = batch::file_bytes(&jobs.store, &meta.id)
        .map_err(storage)?
        .unwrap_or_default();
    let (lines, bad) = batch::parse_lines(&data, &b.endpoint);
    if lines.is_empty() && bad.is_empty() {
        return Err(ApiError::param(
            "input_file_id",
            "The input file has no requests.",
        ));
    }
    let op = Operation::Requests { requests: lines };
    if op.units() > jobs.config.max_units {
        return Err(ApiError::param(
            "input_file_id",
            format!(
                "The file has {} requests; the limit is {}.",
                op.units(),
                jobs.config.max_units
            ),
        ));
    }
    let mut job = new_job(
        &p.tenant,
        p.key_id.as_deref(),
        op,
        5,
        Some(now_s() + window_s),
        None,
        None,
    );
    job.batch = Some(BatchInfo {
        input_file_id: meta.id,
        endpoint: b.endpoint,
        completion_window: b.completion_window,
        metadata: b.metadata,
        output_file_id: None,
        error_file_id: None,
        invalid_lines: bad,
    });
    let (job, _) = jobs.store.create(job).map_err(storage)?;
    jobs.enqueue(&job.id);
    Ok(HttpResponse::Ok().json(batch::view(&job)))
}

fn batch_job(state: &AppState, p: &Principal, batch_id: &str) -> Result<Job, ApiError> {
    let id = batch_id.replacen("batch_", "job_", 1);
    match visible(state, p, &id) {
        Ok(j) if j.batch.is_some() => Ok(j),
        _ => Err(ApiError::NotFound(format!(
            "No batch with id `{batch_id}`."
        ))),
    }
}

/// `GET /v1/batches/{id}`.
pub async fn get_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let p = state.auth.authenticate(&req)?;
    Ok(HttpResponse::Ok().json(batch::view(&batch_job(&state, &p, &path)?)))
}

/// `POST /v1/batches/{id}/cancel`.
pub async fn cancel_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let p = state.auth.authenticate(&req)?;
    let job = batch_job(&state, &p, &path)?;
    let job = cancel_job(&state, &job)?;
    Ok(HttpResponse::Ok().json(batch::view(&job)))
}

/// `GET /v1/batches`.
pub async fn list_batches(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let jobs = jobs_of(&state)?;
    let p = state.auth.authenticate(&req)?;
    let data: Vec<Value> = jobs
        .store
        .list(Some(&p.tenant), None, 1000)
        .iter()
        .filter(|j| j.batch.is_some())
        .map(batch::view)
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "first_id": data.first().map(|b| b["id"].clone()),
        "last_id": data.last().map(|b| b["id"].clone()),
        "has_more": false,
        "data": data,
    })))
}
