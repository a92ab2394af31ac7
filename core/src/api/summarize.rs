//! `POST /v1/summarize`: summarise a text with the local LLM (map-reduce over token chunks).
//! With `"stream": true` the answer is server-sent events: `progress` per chunk, then `summary`.

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::read_request;
use super::AppState;
use crate::error::ApiError;
use crate::local::generate::{SummaryEvent, CHAT_MODEL};

/// Default summary budget in tokens.
pub const DEFAULT_SUMMARY_TOKENS: u32 = 150;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SummarizeRequest {
    #[serde(default)]
    model: Option<String>,
    input: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    stream: bool,
}

fn event(name: &str, data: &Value) -> Bytes {
    let mut out = format!("event: {name}\ndata: ").into_bytes();
    let _ = serde_json::to_writer(&mut out, data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Handle a summarisation request.
pub async fn summarize(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let call = super::call::Call::of(&req);
    let (principal, r): (_, SummarizeRequest) = read_request(&state, &req, payload).await?;
    call.principal(&principal);
    call.request(r.model.as_deref().unwrap_or(CHAT_MODEL), r.stream, None);
    if let Some(m) = r
        .model
        .as_deref()
        .filter(|m| *m != CHAT_MODEL && *m != "smollm2")
    {
        return Err(ApiError::ModelNotFound(m.to_owned()));
    }
    let service = state
        .local
        .chat
        .as_ref()
        .ok_or_else(|| ApiError::ModelNotFound(CHAT_MODEL.to_owned()))?;
    if r.input.trim().is_empty() {
        return Err(ApiError::param("input", "'input' must not be empty."));
    }
    let max_tokens = r
        .max_tokens
        .unwrap_or(DEFAULT_SUMMARY_TOKENS)
        .clamp(1, 1024) as usize;
    let began = std::time::Instant::now();
    let mut events = service.summarize(r.input, max_tokens)?;
    if !r.stream {
        while let Some(ev) = events.recv().await {
            match ev {
                SummaryEvent::Progress(_) => {}
                SummaryEvent::Done(s) => {
                    call.local(CHAT_MODEL, began.elapsed());
                    call.tokens(s.prompt_tokens as u64, s.completion_tokens as u64);
                    return Ok(HttpResponse::Ok().json(summary_body(&s)));
                }
                SummaryEvent::Failed(e) => return Err(e.into()),
            }
        }
        return Err(ApiError::Internal(
            "the summariser stopped without an answer".to_owned(),
        ));
    }
    let stream = futures_util::stream::unfold(events, |mut rx| async move {
        rx.recv().await.map(|ev| (ev, rx))
    })
    .map(move |ev| {
        Ok::<_, actix_web::Error>(match ev {
            SummaryEvent::Progress(p) => {
                event("progress", &json!({"done": p.done, "total": p.total}))
            }
            SummaryEvent::Done(s) => {
                call.local(CHAT_MODEL, began.elapsed());
                call.tokens(s.prompt_tokens as u64, s.completion_tokens as u64);
                event("summary", &summary_body(&s))
            }
            SummaryEvent::Failed(e) => {
                let api: ApiError = e.into();
                event("error", &api.openai_body())
            }
        })
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-switchyard-provider", "local"))
        .streaming(stream))
}

fn summary_body(s: &switchyard_models::summarize::Summary) -> Value {
    json!({
        "object": "summary",
        "model": CHAT_MODEL,
        "summary": s.text,
        "chunks": s.chunks,
        "usage": {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
                  "total_tokens": s.prompt_tokens + s.completion_tokens},
    })
}
