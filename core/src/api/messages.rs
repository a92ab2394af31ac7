//! `POST /v1/messages`: Anthropic's Messages API, so the Anthropic SDKs work against
//! Switchyard. Requests convert into the internal types and go through the same router and
//! failover chain as OpenAI requests (any upstream format may serve them); answers, streams and
//! errors go back in Anthropic's dialect.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::body::read_request;
use super::call::Call;
use super::chat::{respond_in, validate};
use super::sse::{named_event as sse, EventEncoder};
use super::AppState;
use crate::error::ApiError;
use crate::providers::anthropic::WireUsage;
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, Dialect, Extra, Message, Role,
    Stop, Usage,
};

/// An [`ApiError`] in Anthropic's dialect: `{"type":"error","error":{"type","message"}}`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AnthropicError(#[from] pub ApiError);

/// Anthropic's error type for a status.
pub fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// The Anthropic error body for an error.
pub fn anthropic_body(e: &ApiError) -> Value {
    json!({"type": "error", "error": {"type": anthropic_error_type(e.descriptor().0), "message": e.to_string()}})
}

impl ResponseError for AnthropicError {
    fn status_code(&self) -> StatusCode {
        self.0.descriptor().0
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if let Some(after) = self.0.retry_after() {
            resp.insert_header(("retry-after", after.as_secs_f64().ceil().max(1.0) as u64));
        }
        resp.json(anthropic_body(&self.0))
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Blocks(Vec<Value>),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WireRole {
    User,
    Assistant,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    role: WireRole,
    content: WireContent,
}

/// The Messages request as the client sends it.
#[derive(Debug, Deserialize)]
struct MessagesRequest {
    model: String,
    max_tokens: u32,
    messages: Vec<WireMessage>,
    #[serde(default)]
    system: Option<WireContent>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

fn part_from_block(b: &Value) -> ContentPart {
    let kind = b["type"].as_str().unwrap_or("text").to_owned();
    let mut extra: Extra = b.as_object().cloned().unwrap_or_default();
    extra.remove("type");
    match kind.as_str() {
        "text" => {
            let text = extra
                .remove("text")
                .and_then(|t| t.as_str().map(str::to_owned));
            ContentPart { kind, text, extra }
        }
        "image" => {
            let src = &b["source"];
            let url = match src["type"].as_str() {
                Some("base64") => format!(
                    "data:{};base64,{}",
                    src["media_type"].as_str().unwrap_or("image/png"),
                    src["data"].as_str().unwrap_or("")
                ),
                _ => src["url"].as_str().unwrap_or("").to_owned(),
            };
            let mut extra = Extra::new();
            extra.insert("image_url".to_owned(), json!({"url": url}));
            ContentPart {
                kind: "image_url".to_owned(),
                text: None,
                extra,
            }
        }
        _ => ContentPart {
            kind,
            text: None,
            extra,
        },
    }
}

fn block_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn convert_tool(t: &Value) -> Value {
    if t.get("input_schema").is_none() {
        return t.clone();
    }
    let mut f = json!({"name": t["name"], "parameters": t["input_schema"]});
    if t["description"].is_string() {
        f["description"] = t["description"].clone();
    }
    json!({"type": "function", "function": f})
}

fn convert_tool_choice(c: &Value) -> Option<Value> {
    match c["type"].as_str()? {
        "auto" => Some(json!("auto")),
        "any" => Some(json!("required")),
        "none" => Some(json!("none")),
        "tool" => Some(json!({"type": "function", "function": {"name": c["name"]}})),
        _ => None,
    }
}

fn message(role: Role, content: Option<Content>) -> Message {
    Message {
        role,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Extra::new(),
    }
}

/// Convert an Anthropic request into the internal request.
fn to_internal(r: MessagesRequest) -> Result<ChatRequest, ApiError> {
    if r.max_tokens == 0 {
        return Err(ApiError::param(
            "max_tokens",
            "'max_tokens' must be at least 1.",
        ));
    }
    let mut messages = Vec::new();
    match r.system {
        Some(WireContent::Text(s)) if !s.is_empty() => {
            messages.push(message(Role::System, Some(Content::Text(s))))
        }
        Some(WireContent::Blocks(b)) if !b.is_empty() => {
            messages.push(message(
                Role::System,
                Some(Content::Parts(b.iter().map(part_from_block).collect())),
            ));
        }
        _ => {}
    }
    for (i, m) in r.messages.into_iter().enumerate() {
        match (m.role, m.content) {
            (WireRole::User, WireContent::Text(s)) => {
                messages.push(message(Role::User, Some(Content::Text(s))))
            }
            (WireRole::Assistant, WireContent::Text(s)) => {
                messages.push(message(Role::Assistant, Some(Content::Text(s))));
            }
            (WireRole::User, WireContent::Blocks(blocks)) => {
                let mut parts = Vec::new();
                for b in &blocks {
                    if b["type"] == "tool_result" {
                        let mut m =
                            message(Role::Tool, Some(Content::Text(block_text(&b["content"]))));
                        m.tool_call_id = b["tool_use_id"].as_str().map(str::to_owned);
                        messages.push(m);
                    } else {
                        parts.push(part_from_block(b));
                    }
                }
                if !parts.is_empty() {
                    messages.push(message(Role::User, Some(Content::Parts(parts))));
                }
            }
            (WireRole::Assistant, WireContent::Blocks(blocks)) => {
                let mut parts = Vec::new();
                let mut calls = Vec::new();
                for b in &blocks {
                    match b["type"].as_str() {
                        Some("tool_use") => calls.push(json!({
                            "id": b["id"], "type": "function",
                            "function": {"name": b["name"], "arguments": b["input"].to_string()},
                        })),
                        Some("thinking" | "redacted_thinking") => {}
                        Some(_) => parts.push(part_from_block(b)),
                        None => {
                            return Err(ApiError::param(
                                format!("messages[{i}].content"),
                                "each content block needs a 'type'.",
                            ))
                        }
                    }
                }
                let mut m = message(
                    Role::Assistant,
                    (!parts.is_empty()).then_some(Content::Parts(parts)),
                );
                m.tool_calls = (!calls.is_empty()).then_some(calls);
                messages.push(m);
            }
        }
    }
    let mut extra = r.extra;
    let user = r
        .metadata
        .as_ref()
        .and_then(|m| m["user_id"].as_str())
        .map(str::to_owned);
    if let Some(m) = r.metadata {
        extra.insert("metadata".to_owned(), m);
    }
    Ok(ChatRequest {
        model: r.model,
        messages,
        stream: r.stream,
        temperature: r.temperature,
        top_p: r.top_p,
        max_tokens: Some(r.max_tokens),
        max_completion_tokens: None,
        n: None,
        stop: r.stop_sequences.map(Stop::Many),
        seed: None,
        user,
        tools: r.tools.map(|t| t.iter().map(convert_tool).collect()),
        tool_choice: r.tool_choice.as_ref().and_then(convert_tool_choice),
        stream_options: None,
        max_cost: None,
        extra,
        dialect: Dialect::Anthropic,
    })
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
fn stop_reason(finish: Option<&str>, stop_sequence: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ if stop_sequence.is_some() => "stop_sequence",
        _ => "end_turn",
    }
}

fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{}", id.trim_start_matches("chatcmpl-"))
    }
}

/// Convert an internal answer into Anthropic's.
fn to_wire(resp: &ChatResponse) -> Value {
    let choice = resp.choices.first();
    let mut content = Vec::new();
    if let Some(c) = choice {
        if let Some(text) = c.message.content.as_deref().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": text}));
        }
        for call in c.message.tool_calls.as_deref().unwrap_or(&[]) {
            let input: Value = call["function"]["arguments"]
                .as_str()
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_else(|| json!({}));
            content.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
        }
    }
    let stop_sequence = choice.and_then(|c| c.stop_sequence.clone());
    json!({
        "id": message_id(&resp.id),
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.finish_reason.as_deref()), stop_sequence.as_deref()),
        "stop_sequence": stop_sequence,
        "usage": WireUsage::from_usage(&resp.usage.clone().unwrap_or_default()),
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Block {
    Text,
    Tool(u64),
}

/// Re-encodes internal chunks as Anthropic events.
struct Encoder {
    started: bool,
    block: Option<(usize, Block)>,
    next_index: usize,
    tool_blocks: BTreeMap<u64, usize>,
    finish: Option<String>,
    stop_sequence: Option<String>,
    usage: Usage,
}

impl Encoder {
    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if let Some((index, _)) = self.block.take() {
            out.push(sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn open_block(&mut self, out: &mut Vec<Bytes>, kind: Block, start: Value) -> usize {
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.block = Some((index, kind));
        out.push(sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        index
    }
}

impl EventEncoder for Encoder {
    fn chunk(&mut self, c: &ChatChunk, out: &mut Vec<Bytes>) {
        if !self.started {
            self.started = true;
            out.push(sse(
                "message_start",
                &json!({"type": "message_start", "message": {
                    "id": message_id(&c.id), "type": "message", "role": "assistant", "model": c.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            ));
            out.push(sse("ping", &json!({"type": "ping"})));
        }
        if let Some(u) = &c.usage {
            self.usage = u.clone();
        }
        let Some(choice) = c.choices.first() else {
            return;
        };
        if let Some(text) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
            let index = match self.block {
                Some((i, Block::Text)) => i,
                _ => self.open_block(out, Block::Text, json!({"type": "text", "text": ""})),
            };
            out.push(sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        for call in choice.delta.tool_calls.as_deref().unwrap_or(&[]) {
            let tool = call["index"].as_u64().unwrap_or(0);
            let index = match (self.tool_blocks.get(&tool), call["id"].as_str()) {
                (Some(i), _) if self.block == Some((*i, Block::Tool(tool))) => *i,
                (_, Some(id)) => {
                    let start = json!({"type": "tool_use", "id": id, "name": call["function"]["name"], "input": {}});
                    let i = self.open_block(out, Block::Tool(tool), start);
                    self.tool_blocks.insert(tool, i);
                    i
                }
                (Some(i), None) => *i,
                (None, None) => continue,
            };
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                out.push(sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": args}}),
                ));
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.finish = Some(f.clone());
            self.stop_sequence.clone_from(&choice.stop_sequence);
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        self.close_block(out);
        let usage = WireUsage::from_usage(&self.usage);
        out.push(sse(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(self.finish.as_deref(), self.stop_sequence.as_deref()),
                              "stop_sequence": self.stop_sequence},
                    "usage": usage}),
        ));
        out.push(sse("message_stop", &json!({"type": "message_stop"})));
    }

    fn fail(&mut self, error: &ApiError, out: &mut Vec<Bytes>) {
        out.push(sse("error", &anthropic_body(error)));
    }
}

impl Encoder {
    fn new() -> Self {
        Self {
            started: false,
            block: None,
            next_index: 0,
            tool_blocks: BTreeMap::new(),
            finish: None,
            stop_sequence: None,
            usage: Usage::default(),
        }
    }
}

/// Handle a Messages request.
#[tracing::instrument(skip_all, fields(model, stream, provider))]
pub async fn messages(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AnthropicError> {
    let call = Call::of(&req);
    let (principal, wire): (_, MessagesRequest) = read_request(&state, &req, payload).await?;
    call.principal(&principal);
    if wire.messages.is_empty() {
        return Err(
            ApiError::param("messages", "'messages' must contain at least one message.").into(),
        );
    }
    let chat = to_internal(wire)?;
    call.request(&chat.model, chat.stream, chat.user.as_deref());
    validate(&chat)?;
    Ok(respond_in(
        &state,
        &req,
        &principal,
        chat,
        &call,
        Encoder::new(),
        to_wire,
    )
    .await?)
}

/// Header saying whether a token count is the upstream's (`exact`) or Switchyard's (`estimate`).
pub const TOKEN_COUNT_HEADER: &str = "x-switchyard-token-count";

/// Switchyard's own count: four characters a token over the conversation and the tool
/// definitions (the figure its TPM limits use).
fn estimate_tokens(chat: &ChatRequest) -> u64 {
    let tools: usize = chat
        .tools
        .iter()
        .flatten()
        .map(|t| t.to_string().len())
        .sum();
    u64::from(chat.estimate_prompt_tokens()) + (tools / 4) as u64
}

/// The exact count from the model's first target when it speaks Anthropic's format; `None`
/// when it does not (or the request is routed, or local), or the upstream could not be asked.
async fn upstream_count(
    state: &AppState,
    req: &HttpRequest,
    chat: &ChatRequest,
) -> Result<Option<u64>, ApiError> {
    let routed = state
        .routing
        .load_full()
        .is_some_and(|p| p.applies(&chat.model));
    if routed || super::chat::is_local_chat(&chat.model) {
        return Ok(None);
    }
    let routes = state.models.resolve(&chat.model)?;
    let Some(route) = routes
        .first()
        .filter(|r| r.upstream.spec().kind == crate::config::ProviderKind::Anthropic)
    else {
        return Ok(None);
    };
    let deadline = super::chat::deadline(req, state.config.server.request_timeout)?;
    let lease = match route.upstream.admit(0, deadline).await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::warn!(provider = %route.provider, error = %e, "token count: upstream not available; estimating");
            return Ok(None);
        }
    };
    match crate::providers::anthropic::count_tokens(&lease, &route.model, chat, deadline).await {
        Ok(n) => {
            lease.settle(Ok(()));
            Ok(Some(n))
        }
        Err(e) => {
            lease.settle(Err(&e));
            if e.should_fail_over() {
                tracing::warn!(provider = %route.provider, error = %e, "token count: upstream failed; estimating");
                Ok(None)
            } else {
                // The upstream judged the request itself (e.g. 400): the client should know.
                Err(e.into_api_error())
            }
        }
    }
}

/// Handle `POST /v1/messages/count_tokens`: a Messages request (without `max_tokens`) →
/// `{"input_tokens": n}`, exact from an Anthropic upstream, estimated otherwise.
#[tracing::instrument(skip_all, fields(model))]
pub async fn count_tokens(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AnthropicError> {
    let (_principal, mut body): (_, Value) = read_request(&state, &req, payload).await?;
    let Some(fields) = body.as_object_mut() else {
        return Err(ApiError::InvalidJson("the body must be a JSON object".to_owned()).into());
    };
    // The endpoint takes a Messages request without its generation settings.
    fields.entry("max_tokens").or_insert(json!(1));
    fields.remove("stream");
    let wire: MessagesRequest =
        super::body::parse_json(&serde_json::to_vec(&body).unwrap_or_default())?;
    if wire.messages.is_empty() {
        return Err(
            ApiError::param("messages", "'messages' must contain at least one message.").into(),
        );
    }
    let chat = to_internal(wire)?;
    validate(&chat)?;
    tracing::Span::current().record("model", chat.model.as_str());
    let (n, how) = match upstream_count(&state, &req, &chat).await? {
        Some(n) => (n, "exact"),
        None => (estimate_tokens(&chat), "estimate"),
    };
    Ok(HttpResponse::Ok()
        .insert_header((TOKEN_COUNT_HEADER, how))
        .json(json!({"input_tokens": n})))
}
