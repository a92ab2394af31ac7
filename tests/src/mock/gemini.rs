//! Gemini, as the mock speaks it: `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::knobs::RequestKnobs;
use super::plan::{pre_answer, prepare, respond, status_fault, Prepared};
use super::{json_response, Body, Shared};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateIn {
    contents: Vec<ContentIn>,
    #[serde(default)]
    system_instruction: Option<ContentIn>,
    #[serde(default)]
    mock: Option<RequestKnobs>,
}

#[derive(Deserialize)]
struct ContentIn {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Value>,
}

impl ContentIn {
    fn text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A Gemini error answer.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    let s = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    json_response(
        status,
        &json!({"error": {"code": status.as_u16(), "message": message, "status": s}}),
    )
}

fn sse(v: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    out.extend(serde_json::to_vec(v).unwrap_or_default());
    out.extend_from_slice(b"\r\n\r\n");
    Bytes::from(out)
}

/// Handle a `generateContent` or `streamGenerateContent` call for `model`.
pub async fn generate(
    model: &str,
    stream: bool,
    body: &Bytes,
    shared: &Arc<Shared>,
) -> Result<Response<Body>, io::Error> {
    shared.stats.request();
    let req: GenerateIn = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            shared.stats.bad_request();
            return Ok(error(
                StatusCode::BAD_REQUEST,
                &format!("mock: bad request: {e}"),
            ));
        }
    };
    if req.contents.is_empty() {
        shared.stats.bad_request();
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "mock: contents must not be empty",
        ));
    }
    let mut texts: Vec<String> = req.system_instruction.iter().map(ContentIn::text).collect();
    texts.extend(req.contents.iter().map(ContentIn::text));
    let last_user = req
        .contents
        .iter()
        .rev()
        .find(|c| c.role.as_deref().unwrap_or("user") == "user")
        .map(ContentIn::text)
        .unwrap_or_default();
    let Prepared { plan, knobs } = prepare(shared, req.mock.clone(), &texts, &last_user, body);
    pre_answer(&plan, shared).await?;
    if let Some(r) = status_fault(&plan, error) {
        return Ok(r);
    }
    let id = format!("gemini-mock-{}", shared.next_id());
    let output = plan.words.len() as u64;
    let usage = json!({"promptTokenCount": plan.prompt_tokens, "candidatesTokenCount": output,
                       "totalTokenCount": plan.prompt_tokens + output});
    let parts = match &knobs.tool_call {
        Some(tc) => json!([{"functionCall": {"name": tc.name, "args": tc.arguments}}]),
        None => json!([{"text": plan.words.join(" ")}]),
    };
    let whole = json!({
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage, "modelVersion": model, "responseId": id,
    });
    let mut events = Vec::new();
    if stream {
        let piece = |parts: Value, last: bool| {
            let mut v = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
                               "modelVersion": model, "responseId": id});
            if last {
                v["candidates"][0]["finishReason"] = json!("STOP");
                v["usageMetadata"] = usage.clone();
            }
            sse(&v)
        };
        match &knobs.tool_call {
            Some(_) => events.push(piece(parts, true)),
            None => {
                let n = plan.words.len();
                for (i, w) in plan.words.iter().enumerate() {
                    let text = if i == 0 { w.clone() } else { format!(" {w}") };
                    events.push(piece(json!([{"text": text}]), i + 1 == n));
                }
            }
        }
    }
    Ok(respond(shared, &plan, stream, &whole, events))
}
