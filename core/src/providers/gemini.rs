//! Gemini wire format (egress): `POST {base}/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`, authenticated with `x-goog-api-key`.
//!
//! Roles become `user` / `model`, system messages the `systemInstruction`, tool calls
//! `functionCall` parts and tool results `functionResponse` parts (named after the call they
//! answer). `usageMetadata` maps to the internal usage, cached tokens included.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::truncate;
use super::http::{self, send_for_json, send_for_stream, MAX_ERROR_MESSAGE};
use super::{ChunkStream, Lease, ProviderError};
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, Delta, Extra,
    ResponseMessage, Role, Stop, Usage,
};

fn parts_of(content: Option<&Content>) -> Vec<Value> {
    match content {
        None => Vec::new(),
        Some(Content::Text(s)) if s.is_empty() => Vec::new(),
        Some(Content::Text(s)) => vec![json!({"text": s})],
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p.kind.as_str() {
                "text" => Some(json!({"text": p.text.clone().unwrap_or_default()})),
                "image_url" => {
                    let url = p.extra.get("image_url").and_then(|v| v.get("url").or(Some(v))).and_then(Value::as_str)?;
                    if let Some((meta, data)) = url.strip_prefix("data:").and_then(|r| r.split_once(',')) {
                        Some(json!({"inlineData": {"mimeType": meta.trim_end_matches(";base64"), "data": data}}))
                    } else {
                        Some(json!({"fileData": {"fileUri": url}}))
                    }
                }
                _ => None,
            })
            .collect(),
    }
}

fn push_turn(out: &mut Vec<Value>, role: &str, mut parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last["role"] == role {
            if let Some(arr) = last["parts"].as_array_mut() {
                arr.append(&mut parts);
                return;
            }
        }
    }
    out.push(json!({"role": role, "parts": parts}));
}

/// Convert an internal request into Gemini's wire body.
pub fn to_wire(req: &ChatRequest) -> Value {
    let mut system = Vec::new();
    let mut contents = Vec::new();
    let mut call_names: HashMap<String, String> = HashMap::new();
    for m in &req.messages {
        match m.role {
            Role::System | Role::Developer => system.extend(parts_of(m.content.as_ref())),
            Role::User => push_turn(&mut contents, "user", parts_of(m.content.as_ref())),
            Role::Assistant => {
                let mut parts = parts_of(m.content.as_ref());
                for c in m.tool_calls.as_deref().unwrap_or(&[]) {
                    let name = c["function"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(id) = c["id"].as_str() {
                        call_names.insert(id.to_owned(), name.clone());
                    }
                    let args: Value = c["function"]["arguments"]
                        .as_str()
                        .and_then(|a| serde_json::from_str(a).ok())
                        .unwrap_or_else(|| json!({}));
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                push_turn(&mut contents, "model", parts);
            }
            Role::Tool | Role::Function => {
                let name = m
                    .tool_call_id
                    .as_ref()
                    .and_then(|id| call_names.get(id).cloned())
                    .or_else(|| m.name.clone())
                    .unwrap_or_default();
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": text}),
                };
                push_turn(
                    &mut contents,
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
        }
    }
    let mut gen = serde_json::Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            gen.insert(k.to_owned(), v);
        }
    };
    put("temperature", req.temperature.map(Value::from));
    put("topP", req.top_p.map(Value::from));
    put(
        "maxOutputTokens",
        req.max_completion_tokens
            .or(req.max_tokens)
            .map(Value::from),
    );
    put("candidateCount", req.n.map(Value::from));
    put("seed", req.seed.map(Value::from));
    put(
        "stopSequences",
        req.stop.as_ref().map(|s| match s {
            Stop::One(x) => json!([x]),
            Stop::Many(v) => json!(v),
        }),
    );
    if req
        .extra
        .get("response_format")
        .and_then(|f| f["type"].as_str())
        == Some("json_object")
    {
        put("responseMimeType", Some(json!("application/json")));
    }
    let mut body = json!({"contents": contents});
    if !system.is_empty() {
        body["systemInstruction"] = json!({"parts": system});
    }
    if !gen.is_empty() {
        body["generationConfig"] = Value::Object(gen);
    }
    let decls: Vec<Value> = req
        .tools
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter(|t| t["type"] == "function")
        .map(|t| {
            let f = &t["function"];
            let mut d = json!({"name": f["name"]});
            if f["description"].is_string() {
                d["description"] = f["description"].clone();
            }
            if f["parameters"].is_object() {
                d["parameters"] = f["parameters"].clone();
            }
            d
        })
        .collect();
    if !decls.is_empty() {
        body["tools"] = json!([{"functionDeclarations": decls}]);
    }
    if let Some(choice) = &req.tool_choice {
        let cfg = match choice {
            Value::String(s) if s == "required" => Some(json!({"mode": "ANY"})),
            Value::String(s) if s == "none" => Some(json!({"mode": "NONE"})),
            Value::String(s) if s == "auto" => Some(json!({"mode": "AUTO"})),
            Value::Object(_) => {
                Some(json!({"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}))
            }
            _ => None,
        };
        if let Some(c) = cfg {
            body["toolConfig"] = json!({"functionCallingConfig": c});
        }
    }
    body
}

/// Gemini `finishReason` → OpenAI `finish_reason`.
pub fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
}

impl WireUsage {
    fn into_usage(self) -> Usage {
        // Gemini's prompt count already includes cached content.
        let mut u = Usage::from_parts(
            self.prompt_token_count
                .saturating_sub(self.cached_content_token_count),
            self.candidates_token_count + self.thoughts_token_count,
            self.cached_content_token_count,
            0,
        );
        u.total_tokens = u.prompt_tokens + u.completion_tokens;
        u
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    candidates: Vec<WireCandidate>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Text and tool calls of one candidate's parts; `next_call` numbers the calls.
fn read_parts(content: Option<&Value>, next_call: &mut u32) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in content
        .and_then(|c| c["parts"].as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p["text"].as_str() {
            text.push_str(t);
        }
        if p["functionCall"].is_object() {
            let fc = &p["functionCall"];
            let id = fc["id"]
                .as_str()
                .map_or_else(|| format!("call_{next_call}"), str::to_owned);
            calls.push(json!({
                "index": *next_call, "id": id, "type": "function",
                "function": {"name": fc["name"], "arguments": fc["args"].to_string()},
            }));
            *next_call += 1;
        }
    }
    (text, calls)
}

fn from_wire(w: WireResponse, model: &str) -> ChatResponse {
    let choices = w
        .candidates
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let mut n = 0;
            let (text, mut calls) = read_parts(c.content.as_ref(), &mut n);
            for call in &mut calls {
                if let Some(o) = call.as_object_mut() {
                    o.remove("index");
                }
            }
            let reason = finish_reason(
                c.finish_reason.as_deref().unwrap_or("STOP"),
                !calls.is_empty(),
            );
            Choice {
                index: c.index.unwrap_or(i as u32),
                message: ResponseMessage {
                    role: Role::Assistant,
                    content: (!text.is_empty() || calls.is_empty()).then_some(text),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    extra: Extra::new(),
                },
                finish_reason: Some(reason.to_owned()),
                extra: Extra::new(),
                stop_sequence: None,
            }
        })
        .collect();
    ChatResponse {
        id: w
            .response_id
            .unwrap_or_else(|| format!("gemini-{}", uuid::Uuid::new_v4())),
        object: "chat.completion".to_owned(),
        created: now(),
        model: w.model_version.unwrap_or_else(|| model.to_owned()),
        choices,
        usage: w.usage_metadata.map(WireUsage::into_usage),
        extra: Extra::new(),
    }
}

fn request(lease: &Lease, model: &str, body: &Value, stream: bool) -> reqwest::RequestBuilder {
    let spec = lease.spec();
    let url = if stream {
        let mut url = lease.url(&format!("models/{model}:streamGenerateContent"));
        url.query_pairs_mut().append_pair("alt", "sse");
        url
    } else {
        lease.url(&format!("models/{model}:generateContent"))
    };
    let mut rb = lease.client().post(url).json(body);
    if let Some(key) = &spec.api_key {
        let mut v = reqwest::header::HeaderValue::from_str(key.expose_secret())
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
        v.set_sensitive(true);
        rb = rb.header("x-goog-api-key", v);
    }
    rb
}

/// One non-streamed call.
pub async fn chat(
    lease: &Lease,
    model: &str,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<ChatResponse, ProviderError> {
    let wire: WireResponse =
        send_for_json(lease, request(lease, model, &to_wire(req), false), deadline).await?;
    Ok(from_wire(wire, model))
}

/// Start a streamed call.
pub async fn chat_stream(
    lease: &Lease,
    model: &str,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<ChunkStream, ProviderError> {
    let resp = send_for_stream(lease, request(lease, model, &to_wire(req), true), deadline).await?;
    Ok(decode_stream(
        lease.spec().name.clone(),
        model.to_owned(),
        resp,
    ))
}

struct StreamState {
    id: String,
    model: String,
    created: u64,
    started: bool,
    finished: bool,
    next_call: u32,
    usage: Option<Usage>,
}

impl StreamState {
    fn chunk(&self, choices: Vec<ChunkChoice>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: None,
            extra: Extra::new(),
        }
    }

    fn decode(&mut self, provider: &str, data: &str) -> Result<Vec<ChatChunk>, ProviderError> {
        let w: WireResponse = serde_json::from_str(data).map_err(|e| ProviderError::Decode {
            provider: provider.to_owned(),
            message: truncate(&format!("bad stream event: {e}"), MAX_ERROR_MESSAGE),
        })?;
        if let Some(id) = &w.response_id {
            self.id.clone_from(id);
        }
        if let Some(m) = &w.model_version {
            self.model.clone_from(m);
        }
        if let Some(u) = w.usage_metadata {
            self.usage = Some(u.into_usage());
        }
        let mut out = Vec::new();
        for (i, c) in w.candidates.into_iter().enumerate() {
            let (text, calls) = read_parts(c.content.as_ref(), &mut self.next_call);
            let delta = Delta {
                role: (!self.started).then_some(Role::Assistant),
                content: (!text.is_empty() || !self.started).then_some(text),
                tool_calls: (!calls.is_empty()).then_some(calls),
                extra: Extra::new(),
            };
            self.started = true;
            let finish = c
                .finish_reason
                .as_deref()
                .map(|r| finish_reason(r, self.next_call > 0).to_owned());
            if finish.is_some() {
                self.finished = true;
            }
            out.push(self.chunk(vec![ChunkChoice {
                index: c.index.unwrap_or(i as u32),
                delta,
                finish_reason: finish,
                extra: Extra::new(),
                stop_sequence: None,
            }]));
        }
        Ok(out)
    }
}

fn decode_stream(provider: String, model: String, resp: reqwest::Response) -> ChunkStream {
    let st = StreamState {
        id: format!("gemini-{}", uuid::Uuid::new_v4()),
        model,
        created: now(),
        started: false,
        finished: false,
        next_call: 0,
        usage: None,
    };
    http::decode_events(provider, resp, st)
}

/// Gemini streams have no end marker: the body ends after the event with a `finishReason`.
impl http::EventDecoder for StreamState {
    fn event(
        &mut self,
        provider: &str,
        _event: &str,
        data: &str,
    ) -> Result<Vec<ChatChunk>, ProviderError> {
        self.decode(provider, data)
    }

    fn finished(&self) -> bool {
        false
    }

    fn end(&mut self, provider: &str) -> Result<Vec<ChatChunk>, ProviderError> {
        if !self.finished {
            return Err(ProviderError::Stream {
                provider: provider.to_owned(),
                message: "stream ended without a finishReason".to_owned(),
            });
        }
        // Usage comes with the last event; give it a chunk of its own.
        Ok(self
            .usage
            .take()
            .map(|u| {
                let mut c = self.chunk(Vec::new());
                c.usage = Some(u);
                c
            })
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_roles_system_and_tools() {
        let r: ChatRequest = serde_json::from_value(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 3}"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "max_tokens": 50, "temperature": 0.2, "stop": ["x"]
        }))
        .unwrap();
        let w = to_wire(&r);
        assert_eq!(w["systemInstruction"]["parts"][0]["text"], "be brief");
        assert_eq!(w["contents"][0]["role"], "user");
        assert_eq!(w["contents"][1]["role"], "model");
        assert_eq!(
            w["contents"][1]["parts"][0]["functionCall"]["args"]["city"],
            "Oslo"
        );
        assert_eq!(
            w["contents"][2]["parts"][0]["functionResponse"]["name"],
            "get_weather"
        );
        assert_eq!(
            w["contents"][2]["parts"][0]["functionResponse"]["response"]["temp"],
            3
        );
        assert_eq!(w["generationConfig"]["maxOutputTokens"], 50);
        assert_eq!(w["generationConfig"]["stopSequences"], json!(["x"]));
        assert_eq!(
            w["tools"][0]["functionDeclarations"][0]["name"],
            "get_weather"
        );
    }
}
