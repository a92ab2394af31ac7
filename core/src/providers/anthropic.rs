//! Anthropic Messages wire format (egress): `POST {base}/messages` with `x-api-key` and
//! `anthropic-version`, content blocks, tool use, prompt caching, and the event stream
//! (`message_start`, `content_block_*`, `message_delta`, `message_stop`, `ping`, `error`).
//!
//! Requests convert from the internal (OpenAI-shaped) types: system and developer messages
//! become the `system` blocks, tool results become `tool_result` blocks in user turns, and
//! consecutive turns of one role are merged, as the API requires alternation.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::truncate;
use super::http::{self, send_for_json, send_for_stream, MAX_ERROR_MESSAGE};
use super::{ChunkStream, Lease, ProviderError};
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, Delta, Dialect, Extra,
    ResponseMessage, Role, Stop, Usage,
};

/// Completion budget when the request sets none (the API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Fields of another dialect that Anthropic also understands, passed through by name.
const SHARED_FIELDS: &[&str] = &["top_k", "thinking", "service_tier"];

/// The request body.
#[derive(Debug, Serialize)]
pub struct MessagesRequest {
    /// Upstream model.
    pub model: String,
    /// Completion budget.
    pub max_tokens: u32,
    /// Alternating turns.
    pub messages: Vec<WireMessage>,
    /// System prompt blocks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<Value>,
    /// Sampling temperature (0–1 on Anthropic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop sequences.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    /// Stream events.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Tool definitions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
    /// Tool choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// `metadata.user_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Passed-through fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One turn.
#[derive(Debug, Serialize, PartialEq)]
pub struct WireMessage {
    /// `user` or `assistant`.
    pub role: &'static str,
    /// Content blocks.
    pub content: Vec<Value>,
}

fn text_block(text: &str, extra: Option<&Extra>) -> Value {
    let mut b = json!({"type": "text", "text": text});
    if let Some(cc) = extra.and_then(|e| e.get("cache_control")) {
        b["cache_control"] = cc.clone();
    }
    b
}

/// `data:image/png;base64,AAAA` → an Anthropic image source; other URLs by reference.
fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((meta, data)) = rest.split_once(',') {
            let media_type = meta.trim_end_matches(";base64");
            return json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}});
        }
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

fn content_blocks(content: Option<&Content>) -> Vec<Value> {
    match content {
        None => Vec::new(),
        Some(Content::Text(s)) if s.is_empty() => Vec::new(),
        Some(Content::Text(s)) => vec![text_block(s, None)],
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| match p.kind.as_str() {
                "text" => text_block(p.text.as_deref().unwrap_or(""), Some(&p.extra)),
                "image_url" => {
                    let url = p
                        .extra
                        .get("image_url")
                        .and_then(|v| v.get("url").or(Some(v)))
                        .and_then(Value::as_str);
                    image_block(url.unwrap_or(""))
                }
                // Blocks already in Anthropic's shape (documents, images from an Anthropic
                // client) pass as they are.
                _ => {
                    let mut v = Value::Object(p.extra.clone());
                    v["type"] = Value::String(p.kind.clone());
                    if let Some(t) = &p.text {
                        v["text"] = Value::String(t.clone());
                    }
                    v
                }
            })
            .collect(),
    }
}

fn tool_use_blocks(calls: &[Value]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| {
            let args = c["function"]["arguments"].as_str().unwrap_or("{}");
            let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
            json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": input})
        })
        .collect()
}

fn push_turn(out: &mut Vec<WireMessage>, role: &'static str, mut blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(last) if last.role == role => last.content.append(&mut blocks),
        _ => out.push(WireMessage {
            role,
            content: blocks,
        }),
    }
}

fn convert_tool(t: &Value) -> Value {
    if t.get("input_schema").is_some()
        || t.get("type")
            .and_then(Value::as_str)
            .is_some_and(|k| k != "function")
    {
        return t.clone();
    }
    let f = &t["function"];
    let mut out = json!({
        "name": f["name"],
        "input_schema": if f["parameters"].is_object() { f["parameters"].clone() } else { json!({"type": "object"}) },
    });
    if let Some(d) = f["description"].as_str() {
        out["description"] = Value::String(d.to_owned());
    }
    out
}

fn convert_tool_choice(c: &Value) -> Option<Value> {
    match c {
        Value::String(s) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            _ => None,
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            Some(json!({"type": "tool", "name": c["function"]["name"]}))
        }
        Value::Object(_) => Some(c.clone()),
        _ => None,
    }
}

/// Convert an internal request into Anthropic's wire body.
pub fn to_wire(req: &ChatRequest, model: &str, stream: bool) -> Result<MessagesRequest, String> {
    if req.n.is_some_and(|n| n > 1) {
        return Err("Anthropic does not support `n` > 1".to_owned());
    }
    let mut system = Vec::new();
    let mut messages: Vec<WireMessage> = Vec::new();
    for m in &req.messages {
        match m.role {
            Role::System | Role::Developer => system.extend(content_blocks(m.content.as_ref())),
            Role::User => push_turn(&mut messages, "user", content_blocks(m.content.as_ref())),
            Role::Assistant => {
                let mut blocks = content_blocks(m.content.as_ref());
                blocks.extend(tool_use_blocks(m.tool_calls.as_deref().unwrap_or(&[])));
                push_turn(&mut messages, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                let id = m
                    .tool_call_id
                    .clone()
                    .or_else(|| m.name.clone())
                    .unwrap_or_default();
                push_turn(
                    &mut messages,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})],
                );
            }
        }
    }
    let stop_sequences = match &req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    let mut extra = Map::new();
    for (k, v) in &req.extra {
        if req.dialect == Dialect::Anthropic || SHARED_FIELDS.contains(&k.as_str()) {
            extra.insert(k.clone(), v.clone());
        }
    }
    let metadata = match (extra.remove("metadata"), &req.user) {
        (Some(m), _) => Some(m),
        (None, Some(u)) => Some(json!({"user_id": u})),
        (None, None) => None,
    };
    Ok(MessagesRequest {
        model: model.to_owned(),
        max_tokens: req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS),
        messages,
        system,
        temperature: req.temperature.map(|t| t.min(1.0)),
        top_p: req.top_p,
        stop_sequences,
        stream,
        tools: req
            .tools
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(convert_tool)
            .collect(),
        tool_choice: req.tool_choice.as_ref().and_then(convert_tool_choice),
        metadata,
        extra,
    })
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Usage as Anthropic reports it.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
pub struct WireUsage {
    /// Uncached input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens written to the cache.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl WireUsage {
    /// Into the internal usage.
    pub fn into_usage(self) -> Usage {
        Usage::from_parts(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
        )
    }

    /// From the internal usage.
    pub fn from_usage(u: &Usage) -> Self {
        let cached = u.cached_tokens();
        Self {
            input_tokens: u
                .prompt_tokens
                .saturating_sub(cached + u.cache_creation_tokens),
            output_tokens: u.completion_tokens,
            cache_creation_input_tokens: u.cache_creation_tokens,
            cache_read_input_tokens: cached,
        }
    }
}

#[derive(Debug, Deserialize)]
struct WireResponse {
    id: String,
    model: String,
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn from_wire(w: WireResponse) -> ChatResponse {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in &w.content {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block["id"], "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()},
            })),
            _ => {}
        }
    }
    ChatResponse {
        id: w.id,
        object: "chat.completion".to_owned(),
        created: now(),
        model: w.model,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content: (!text.is_empty() || calls.is_empty()).then_some(text),
                tool_calls: (!calls.is_empty()).then_some(calls),
                extra: Extra::new(),
            },
            finish_reason: Some(
                finish_reason(w.stop_reason.as_deref().unwrap_or("end_turn")).to_owned(),
            ),
            extra: Extra::new(),
            stop_sequence: w.stop_sequence,
        }],
        usage: Some(w.usage.into_usage()),
        extra: Extra::new(),
    }
}

fn request(lease: &Lease, body: &MessagesRequest) -> reqwest::RequestBuilder {
    request_to(lease, "messages", body)
}

/// A POST to `path` under the upstream's base URL, with Anthropic's version and key headers.
fn request_to(lease: &Lease, path: &str, body: &impl Serialize) -> reqwest::RequestBuilder {
    let spec = lease.spec();
    let mut rb = lease
        .client()
        .post(lease.url(path))
        .header("anthropic-version", &spec.anthropic_version)
        .json(body);
    if let Some(key) = &spec.api_key {
        let mut v = reqwest::header::HeaderValue::from_str(key.expose_secret())
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
        v.set_sensitive(true);
        rb = rb.header("x-api-key", v);
    }
    rb
}

fn invalid(provider: &str, message: String) -> ProviderError {
    ProviderError::Status {
        provider: provider.to_owned(),
        status: 400,
        message,
        retry_after: None,
    }
}

/// One non-streamed call.
pub async fn chat(
    lease: &Lease,
    model: &str,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<ChatResponse, ProviderError> {
    let body = to_wire(req, model, false).map_err(|m| invalid(&lease.spec().name, m))?;
    let wire: WireResponse = send_for_json(lease, request(lease, &body), deadline).await?;
    Ok(from_wire(wire))
}

/// The upstream's exact input-token count for a request (`POST /v1/messages/count_tokens`),
/// sent without the generation settings that endpoint does not take.
pub async fn count_tokens(
    lease: &Lease,
    model: &str,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<u64, ProviderError> {
    #[derive(Deserialize)]
    struct Count {
        input_tokens: u64,
    }
    let body = to_wire(req, model, false).map_err(|m| invalid(&lease.spec().name, m))?;
    let mut body =
        serde_json::to_value(&body).map_err(|e| invalid(&lease.spec().name, e.to_string()))?;
    if let Some(fields) = body.as_object_mut() {
        for k in [
            "max_tokens",
            "stream",
            "metadata",
            "temperature",
            "top_p",
            "top_k",
            "stop_sequences",
            "service_tier",
        ] {
            fields.remove(k);
        }
    }
    let count: Count = send_for_json(
        lease,
        request_to(lease, "messages/count_tokens", &body),
        deadline,
    )
    .await?;
    Ok(count.input_tokens)
}

/// Start a streamed call.
pub async fn chat_stream(
    lease: &Lease,
    model: &str,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<ChunkStream, ProviderError> {
    let body = to_wire(req, model, true).map_err(|m| invalid(&lease.spec().name, m))?;
    let resp = send_for_stream(lease, request(lease, &body), deadline).await?;
    Ok(http::decode_events(
        lease.spec().name.clone(),
        resp,
        EventDecoder::default(),
    ))
}

/// Decoder state for one event stream.
#[derive(Default)]
pub struct EventDecoder {
    id: String,
    model: String,
    created: u64,
    usage: WireUsage,
    /// Content block index → tool call index.
    tool_index: HashMap<u64, u32>,
    finished: bool,
}

impl EventDecoder {
    fn chunk(
        &self,
        delta: Delta,
        finish: Option<String>,
        stop_sequence: Option<String>,
    ) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
                extra: Extra::new(),
                stop_sequence,
            }],
            usage: None,
            extra: Extra::new(),
        }
    }

    /// Turn one event into zero or more chunks; `Err` for an error event or a bad payload.
    pub fn decode(
        &mut self,
        provider: &str,
        event: &str,
        data: &str,
    ) -> Result<Vec<ChatChunk>, ProviderError> {
        let v: Value = serde_json::from_str(data).map_err(|e| ProviderError::Decode {
            provider: provider.to_owned(),
            message: truncate(&format!("bad event `{event}`: {e}"), MAX_ERROR_MESSAGE),
        })?;
        let kind = v["type"].as_str().unwrap_or(event);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let m = &v["message"];
                self.id = m["id"].as_str().unwrap_or_default().to_owned();
                self.model = m["model"].as_str().unwrap_or_default().to_owned();
                self.created = now();
                self.usage = serde_json::from_value(m["usage"].clone()).unwrap_or_default();
                out.push(self.chunk(
                    Delta {
                        role: Some(Role::Assistant),
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    None,
                    None,
                ));
            }
            "content_block_start" => {
                let block = &v["content_block"];
                match block["type"].as_str() {
                    Some("tool_use") => {
                        let index = self.tool_index.len() as u32;
                        self.tool_index
                            .insert(v["index"].as_u64().unwrap_or(0), index);
                        out.push(self.chunk(
                            Delta {
                                tool_calls: Some(vec![json!({
                                    "index": index, "id": block["id"], "type": "function",
                                    "function": {"name": block["name"], "arguments": ""},
                                })]),
                                ..Delta::default()
                            },
                            None,
                            None,
                        ));
                    }
                    Some("text") => {
                        if let Some(t) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(self.chunk(
                                Delta {
                                    content: Some(t.to_owned()),
                                    ..Delta::default()
                                },
                                None,
                                None,
                            ));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => out.push(self.chunk(
                        Delta {
                            content: Some(d["text"].as_str().unwrap_or_default().to_owned()),
                            ..Delta::default()
                        },
                        None,
                        None,
                    )),
                    Some("input_json_delta") => {
                        let index = self
                            .tool_index
                            .get(&v["index"].as_u64().unwrap_or(0))
                            .copied()
                            .unwrap_or(0);
                        out.push(self.chunk(
                            Delta {
                                tool_calls: Some(vec![json!({
                                    "index": index,
                                    "function": {"arguments": d["partial_json"].as_str().unwrap_or_default()},
                                })]),
                                ..Delta::default()
                            },
                            None,
                            None,
                        ));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Ok(u) = serde_json::from_value::<WireUsage>(v["usage"].clone()) {
                    self.usage.output_tokens = u.output_tokens;
                    if u.input_tokens > 0 {
                        self.usage.input_tokens = u.input_tokens;
                    }
                }
                let reason = v["delta"]["stop_reason"]
                    .as_str()
                    .map(|r| finish_reason(r).to_owned());
                let stop_sequence = v["delta"]["stop_sequence"].as_str().map(str::to_owned);
                out.push(self.chunk(Delta::default(), reason, stop_sequence));
                let mut usage_chunk = self.chunk(Delta::default(), None, None);
                usage_chunk.choices.clear();
                usage_chunk.usage = Some(self.usage.clone().into_usage());
                out.push(usage_chunk);
            }
            "message_stop" => self.finished = true,
            "error" => {
                return Err(ProviderError::Stream {
                    provider: provider.to_owned(),
                    message: truncate(
                        v["error"]["message"]
                            .as_str()
                            .unwrap_or("upstream sent an error event"),
                        MAX_ERROR_MESSAGE,
                    ),
                })
            }
            // ping, content_block_stop and future event types carry nothing we forward.
            _ => {}
        }
        Ok(out)
    }
}

impl http::EventDecoder for EventDecoder {
    fn event(
        &mut self,
        provider: &str,
        event: &str,
        data: &str,
    ) -> Result<Vec<ChatChunk>, ProviderError> {
        self.decode(provider, event, data)
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn end(&mut self, provider: &str) -> Result<Vec<ChatChunk>, ProviderError> {
        Err(ProviderError::Stream {
            provider: provider.to_owned(),
            message: "stream ended before message_stop".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn converts_system_tools_and_tool_results() {
        let r = req(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "stop": "END",
            "max_tokens": 100,
            "logprobs": true
        }));
        let w = serde_json::to_value(to_wire(&r, "claude", false).unwrap()).unwrap();
        assert_eq!(w["system"][0]["text"], "be brief");
        assert_eq!(w["messages"][1]["content"][0]["type"], "tool_use");
        assert_eq!(w["messages"][1]["content"][0]["input"]["city"], "Paris");
        // tool result and the next user text merge into one user turn
        assert_eq!(w["messages"][2]["role"], "user");
        assert_eq!(w["messages"][2]["content"][0]["type"], "tool_result");
        assert_eq!(w["messages"][2]["content"][1]["text"], "thanks");
        assert_eq!(
            w["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(w["tool_choice"], json!({"type": "any"}));
        assert_eq!(w["stop_sequences"], json!(["END"]));
        assert!(
            w.get("logprobs").is_none(),
            "OpenAI-only fields do not reach Anthropic"
        );
    }

    #[test]
    fn usage_round_trips_with_cache_counts() {
        let w = WireUsage {
            input_tokens: 10,
            output_tokens: 5,
            cache_creation_input_tokens: 100,
            cache_read_input_tokens: 1000,
        };
        let u = w.clone().into_usage();
        assert_eq!(u.prompt_tokens, 1110);
        assert_eq!(u.cached_tokens(), 1000);
        assert_eq!(WireUsage::from_usage(&u), w);
    }
}
