//! `POST /v1/responses`: OpenAI's Responses API, so clients written for it (the OpenAI SDKs'
//! `client.responses`, agent frameworks built on it) work against Switchyard. A request converts
//! into a chat request and goes through the same cache, router and failover chain as any other
//! (any upstream format may serve it); answers go back as Response objects, streams as Responses
//! events. Switchyard keeps no conversation state, so `previous_response_id`, `conversation` and
//! stored-item references are refused with a 400 that says to send the whole conversation.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::read_request;
use super::call::Call;
use super::chat::{respond_in, validate};
use super::sse::{named_event, EventEncoder};
use super::AppState;
use crate::error::ApiError;
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, Dialect, Extra, Message, Role,
    Usage,
};

/// `input`: one user message as text, or a list of items.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<Value>),
}

/// A Responses request. Fields that only make sense with stored state are named so they can be
/// refused; unknown fields pass through to the upstream like chat's.
#[derive(Debug, Deserialize)]
struct ResponsesRequest {
    model: String,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    conversation: Option<Value>,
    #[serde(default)]
    prompt: Option<Value>,
    #[serde(default)]
    background: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u32>,
    // Accepted and not acted on: nothing is stored, nothing extra is included, the context is
    // never truncated by us, the stream has no obfuscation padding, and one chat call makes
    // one round of tool calls at most.
    #[serde(default)]
    #[allow(dead_code)]
    max_tool_calls: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    store: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    include: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    truncation: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    stream_options: Option<Value>,
    #[serde(flatten)]
    extra: Extra,
}

/// What a Response object repeats of its request.
#[derive(Debug, Clone, Default)]
struct Echo {
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    tools: Vec<Value>,
    tool_choice: Value,
    parallel_tool_calls: bool,
    text: Value,
    reasoning: Value,
    metadata: Value,
    user: Option<String>,
}

fn stateless(param: &str) -> ApiError {
    ApiError::param(
        param,
        format!(
            "'{param}' needs stored responses, which Switchyard does not keep; send the whole \
             conversation in 'input' instead."
        ),
    )
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

fn text_part(text: &str) -> ContentPart {
    ContentPart {
        kind: "text".to_owned(),
        text: Some(text.to_owned()),
        extra: Extra::new(),
    }
}

/// One content part of an input message.
fn part(p: &Value, at: &str) -> Result<ContentPart, ApiError> {
    match p["type"].as_str() {
        Some("input_text" | "output_text") => match p["text"].as_str() {
            Some(t) => Ok(text_part(t)),
            None => Err(ApiError::param(
                format!("{at}.text"),
                "a text part needs 'text'.",
            )),
        },
        Some("refusal") => Ok(text_part(p["refusal"].as_str().unwrap_or_default())),
        Some("input_image") => {
            let Some(url) = p["image_url"].as_str() else {
                return Err(ApiError::param(
                    format!("{at}.image_url"),
                    "an image part needs 'image_url' (a URL or a data: URL); uploaded file ids \
                     are not supported.",
                ));
            };
            let mut image = json!({"url": url});
            if let Some(d) = p.get("detail").filter(|d| !d.is_null()) {
                image["detail"] = d.clone();
            }
            let mut extra = Extra::new();
            extra.insert("image_url".to_owned(), image);
            Ok(ContentPart {
                kind: "image_url".to_owned(),
                text: None,
                extra,
            })
        }
        Some(other) => Err(ApiError::param(
            format!("{at}.type"),
            format!("content part type '{other}' is not supported; use input_text or input_image."),
        )),
        None => Err(ApiError::param(
            format!("{at}.type"),
            "each content part needs a 'type'.",
        )),
    }
}

/// The text of a `function_call_output`'s `output` (a string or a list of text parts).
fn output_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The input items as chat messages: messages keep their role, function calls join the
/// assistant turn they follow, function outputs become tool messages.
fn items_to_messages(items: &[Value], messages: &mut Vec<Message>) -> Result<(), ApiError> {
    // Whether the last message is an assistant turn that later function calls extend.
    let mut open_assistant = false;
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = item["type"]
            .as_str()
            .or_else(|| item.get("role").map(|_| "message"));
        match kind {
            Some("message") => {
                let role = match item["role"].as_str() {
                    Some("user") => Role::User,
                    Some("system") => Role::System,
                    Some("developer") => Role::Developer,
                    Some("assistant") => Role::Assistant,
                    _ => {
                        return Err(ApiError::param(
                            format!("{at}.role"),
                            "a message's 'role' must be user, system, developer or assistant.",
                        ))
                    }
                };
                let content = match &item["content"] {
                    Value::String(s) => Content::Text(s.clone()),
                    Value::Array(parts) => {
                        let parts = parts
                            .iter()
                            .enumerate()
                            .map(|(j, p)| part(p, &format!("{at}.content[{j}]")))
                            .collect::<Result<Vec<_>, _>>()?;
                        if role == Role::Assistant {
                            // Chat upstreams take an assistant's history as text.
                            Content::Text(
                                parts
                                    .iter()
                                    .filter_map(|p| p.text.as_deref())
                                    .collect::<String>(),
                            )
                        } else {
                            Content::Parts(parts)
                        }
                    }
                    _ => {
                        return Err(ApiError::param(
                            format!("{at}.content"),
                            "a message's 'content' must be a string or a list of parts.",
                        ))
                    }
                };
                messages.push(message(role, Some(content)));
                open_assistant = role == Role::Assistant;
            }
            Some("function_call") => {
                let (Some(call_id), Some(name)) = (item["call_id"].as_str(), item["name"].as_str())
                else {
                    return Err(ApiError::param(
                        at,
                        "a function_call item needs 'call_id' and 'name'.",
                    ));
                };
                let arguments = match &item["arguments"] {
                    Value::String(s) => s.clone(),
                    Value::Null => "{}".to_owned(),
                    other => other.to_string(),
                };
                let call = json!({"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": arguments}});
                match messages.last_mut() {
                    Some(m) if open_assistant => {
                        m.tool_calls.get_or_insert_with(Vec::new).push(call)
                    }
                    _ => {
                        let mut m = message(Role::Assistant, None);
                        m.tool_calls = Some(vec![call]);
                        messages.push(m);
                        open_assistant = true;
                    }
                }
            }
            Some("function_call_output") => {
                let Some(call_id) = item["call_id"].as_str() else {
                    return Err(ApiError::param(
                        format!("{at}.call_id"),
                        "a function_call_output item needs 'call_id'.",
                    ));
                };
                let mut m = message(
                    Role::Tool,
                    Some(Content::Text(output_text(&item["output"]))),
                );
                m.tool_call_id = Some(call_id.to_owned());
                messages.push(m);
                open_assistant = false;
            }
            // Reasoning items carry the model's own state between turns; chat upstreams
            // have no place for them.
            Some("reasoning") => {}
            Some("item_reference") => return Err(stateless(&format!("{at}.id"))),
            Some(other) => {
                return Err(ApiError::param(
                    format!("{at}.type"),
                    format!(
                        "input item type '{other}' is not supported; use message, \
                         function_call or function_call_output."
                    ),
                ))
            }
            None => {
                return Err(ApiError::param(
                    format!("{at}.type"),
                    "each input item needs a 'type' (or a 'role' for a message).",
                ))
            }
        }
    }
    Ok(())
}

/// A Responses function tool as a chat tool; hosted tools cannot be served by arbitrary
/// upstreams, so they are refused.
fn chat_tool(t: &Value, i: usize) -> Result<Value, ApiError> {
    match t["type"].as_str() {
        Some("function") => {
            let Some(name) = t["name"].as_str() else {
                return Err(ApiError::param(
                    format!("tools[{i}].name"),
                    "a function tool needs 'name'.",
                ));
            };
            let mut f = json!({"name": name});
            for k in ["description", "parameters", "strict"] {
                if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                    f[k] = v.clone();
                }
            }
            Ok(json!({"type": "function", "function": f}))
        }
        Some(other) => Err(ApiError::param(
            format!("tools[{i}].type"),
            format!("hosted tool '{other}' is not available through Switchyard; only function tools are."),
        )),
        None => Err(ApiError::param(
            format!("tools[{i}].type"),
            "each tool needs a 'type'.",
        )),
    }
}

fn chat_tool_choice(c: &Value) -> Result<Value, ApiError> {
    match c {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Ok(c.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o.get("name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
                None => Err(ApiError::param(
                    "tool_choice.name",
                    "a function tool choice needs 'name'.",
                )),
            }
        }
        _ => Err(ApiError::param(
            "tool_choice",
            "'tool_choice' must be auto, none, required or {\"type\":\"function\",\"name\":...}.",
        )),
    }
}

/// `text.format` as chat's `response_format` (none for plain text).
fn response_format(text: &Value) -> Result<Option<Value>, ApiError> {
    let format = &text["format"];
    match format["type"].as_str() {
        None if format.is_null() => Ok(None),
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let (Some(name), Some(schema)) = (format["name"].as_str(), format.get("schema")) else {
                return Err(ApiError::param(
                    "text.format",
                    "a json_schema format needs 'name' and 'schema'.",
                ));
            };
            let mut js = json!({"name": name, "schema": schema});
            for k in ["strict", "description"] {
                if let Some(v) = format.get(k).filter(|v| !v.is_null()) {
                    js[k] = v.clone();
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": js})))
        }
        _ => Err(ApiError::param(
            "text.format.type",
            "'text.format.type' must be text, json_object or json_schema.",
        )),
    }
}

/// Convert a Responses request into the internal request, and what its answer repeats.
fn to_internal(r: ResponsesRequest) -> Result<(ChatRequest, Echo), ApiError> {
    if r.previous_response_id.is_some() {
        return Err(stateless("previous_response_id"));
    }
    if r.conversation.is_some() {
        return Err(stateless("conversation"));
    }
    if r.prompt.is_some() {
        return Err(ApiError::param(
            "prompt",
            "stored prompt templates are not available through Switchyard; send 'instructions' \
             and 'input' instead.",
        ));
    }
    if r.background == Some(true) {
        return Err(ApiError::param(
            "background",
            "background responses are not supported; submit long work to /v1/jobs instead.",
        ));
    }
    let mut messages = Vec::new();
    if let Some(s) = r.instructions.as_deref().filter(|s| !s.is_empty()) {
        messages.push(message(Role::System, Some(Content::Text(s.to_owned()))));
    }
    match &r.input {
        None => return Err(ApiError::param("input", "'input' is required.")),
        Some(Input::Text(s)) => messages.push(message(Role::User, Some(Content::Text(s.clone())))),
        Some(Input::Items(items)) => {
            if items.is_empty() {
                return Err(ApiError::param(
                    "input",
                    "'input' must contain at least one item.",
                ));
            }
            items_to_messages(items, &mut messages)?;
        }
    }
    if r.max_output_tokens == Some(0) {
        return Err(ApiError::param(
            "max_output_tokens",
            "'max_output_tokens' must be at least 1.",
        ));
    }
    let tools = r
        .tools
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, t)| chat_tool(t, i))
        .collect::<Result<Vec<_>, _>>()?;
    let tool_choice = r.tool_choice.as_ref().map(chat_tool_choice).transpose()?;
    let text = r
        .text
        .clone()
        .unwrap_or_else(|| json!({"format": {"type": "text"}}));
    let mut extra = r.extra;
    if let Some(f) = response_format(&text)? {
        extra.insert("response_format".to_owned(), f);
    }
    if let Some(v) = text.get("verbosity").filter(|v| !v.is_null()) {
        extra.insert("verbosity".to_owned(), v.clone());
    }
    if let Some(e) = r
        .reasoning
        .as_ref()
        .and_then(|r| r.get("effort"))
        .filter(|e| !e.is_null())
    {
        extra.insert("reasoning_effort".to_owned(), e.clone());
    }
    if let Some(n) = r.top_logprobs {
        extra.insert("logprobs".to_owned(), Value::Bool(true));
        extra.insert("top_logprobs".to_owned(), json!(n));
    }
    if let Some(p) = r.parallel_tool_calls.filter(|_| !tools.is_empty()) {
        extra.insert("parallel_tool_calls".to_owned(), Value::Bool(p));
    }
    let echo = Echo {
        instructions: r.instructions,
        max_output_tokens: r.max_output_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        tools: r.tools.unwrap_or_default(),
        tool_choice: r.tool_choice.unwrap_or_else(|| json!("auto")),
        parallel_tool_calls: r.parallel_tool_calls.unwrap_or(true),
        text,
        reasoning: r
            .reasoning
            .unwrap_or_else(|| json!({"effort": null, "summary": null})),
        metadata: r.metadata.unwrap_or_else(|| json!({})),
        user: r.user.clone(),
    };
    let chat = ChatRequest {
        model: r.model,
        messages,
        stream: r.stream,
        temperature: r.temperature,
        top_p: r.top_p,
        max_tokens: r.max_output_tokens,
        max_completion_tokens: None,
        n: None,
        stop: None,
        seed: None,
        user: r.user,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        stream_options: None,
        max_cost: None,
        extra,
        // What goes upstream is now a well-formed chat request.
        dialect: Dialect::OpenAi,
    };
    Ok((chat, echo))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The id suffix shared by a response and its items.
fn suffix(id: &str) -> &str {
    id.trim_start_matches("chatcmpl-")
        .trim_start_matches("resp_")
        .trim_start_matches("msg_")
}

/// `status` and `incomplete_details` for a chat finish reason.
fn status(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

fn wire_usage(u: &Usage) -> Value {
    let reasoning = u
        .extra
        .get("completion_tokens_details")
        .and_then(|d| d.get("reasoning_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens()},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": u.total_tokens,
    })
}

/// A Response object around `output`.
#[allow(clippy::too_many_arguments)]
fn response_object(
    id: &str,
    created_at: u64,
    model: &str,
    status: &str,
    incomplete: Value,
    output: Vec<Value>,
    usage: Option<&Usage>,
    echo: &Echo,
) -> Value {
    json!({
        "id": format!("resp_{}", suffix(id)),
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": echo.parallel_tool_calls,
        "previous_response_id": null,
        "reasoning": echo.reasoning,
        "store": false,
        "temperature": echo.temperature,
        "text": echo.text,
        "tool_choice": echo.tool_choice,
        "tools": echo.tools,
        "top_p": echo.top_p,
        "truncation": "disabled",
        "usage": usage.map(wire_usage),
        "user": echo.user,
        "metadata": echo.metadata,
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": format!("msg_{}", suffix(id)),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

fn call_item(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "id": format!("fc_{}", call_id.trim_start_matches("call_")),
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    })
}

/// Convert an internal answer into a Response object.
fn to_wire(resp: &ChatResponse, echo: &Echo) -> Value {
    let choice = resp.choices.first();
    let mut output = Vec::new();
    if let Some(c) = choice {
        if let Some(text) = c.message.content.as_deref().filter(|t| !t.is_empty()) {
            output.push(message_item(&resp.id, text, "completed"));
        }
        for call in c.message.tool_calls.as_deref().unwrap_or(&[]) {
            output.push(call_item(
                call["id"].as_str().unwrap_or_default(),
                call["function"]["name"].as_str().unwrap_or_default(),
                call["function"]["arguments"].as_str().unwrap_or("{}"),
                "completed",
            ));
        }
    }
    let (status, incomplete) = status(choice.and_then(|c| c.finish_reason.as_deref()));
    if status == "incomplete" {
        // The last item is the one that was cut short.
        if let Some(last) = output.last_mut() {
            last["status"] = json!("incomplete");
        }
    }
    let created = if resp.created > 0 {
        resp.created
    } else {
        unix_now()
    };
    response_object(
        &resp.id,
        created,
        &resp.model,
        status,
        incomplete,
        output,
        Some(&resp.usage.clone().unwrap_or_default()),
        echo,
    )
}

/// An output item being streamed.
enum Item {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Re-encodes internal chunks as Responses events.
struct Encoder {
    echo: Echo,
    seq: u64,
    started: bool,
    id: String,
    model: String,
    created: u64,
    /// Every item by output index; `open` is the one still receiving deltas.
    items: Vec<Item>,
    open: Option<usize>,
    /// Upstream tool-call index → output index.
    calls: BTreeMap<u64, usize>,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl Encoder {
    fn new(echo: Echo) -> Self {
        Self {
            echo,
            seq: 0,
            started: false,
            id: String::new(),
            model: String::new(),
            created: 0,
            items: Vec::new(),
            open: None,
            calls: BTreeMap::new(),
            finish: None,
            usage: None,
        }
    }

    fn event(&mut self, out: &mut Vec<Bytes>, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push(named_event(kind, &data));
    }

    fn item_json(&self, index: usize, status: &str) -> Value {
        match &self.items[index] {
            Item::Text { id, text } => message_item(id, text, status),
            Item::Call {
                call_id,
                name,
                arguments,
                ..
            } => call_item(call_id, name, arguments, status),
        }
    }

    /// How the item at `index` ended: the last one is cut short when the response is.
    fn item_status(&self, index: usize) -> &'static str {
        let cut = status(self.finish.as_deref()).0 == "incomplete";
        if cut && index + 1 == self.items.len() {
            "incomplete"
        } else {
            "completed"
        }
    }

    fn snapshot(&self, status: &str, incomplete: Value, with_usage: bool) -> Value {
        let output = (0..self.items.len())
            .map(|i| self.item_json(i, self.item_status(i)))
            .collect();
        let usage = with_usage.then(|| self.usage.clone().unwrap_or_default());
        response_object(
            &self.id,
            self.created,
            &self.model,
            status,
            incomplete,
            output,
            usage.as_ref(),
            &self.echo,
        )
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        let Some(index) = self.open.take() else {
            return;
        };
        match &self.items[index] {
            Item::Text { id, text } => {
                let (item_id, text) = (format!("msg_{}", suffix(id)), text.clone());
                let base = json!({"item_id": item_id, "output_index": index, "content_index": 0});
                let mut done = base.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                self.event(out, "response.output_text.done", done);
                let mut part = base;
                part["part"] =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                self.event(out, "response.content_part.done", part);
            }
            Item::Call {
                id,
                name,
                arguments,
                ..
            } => {
                let data = json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments});
                self.event(out, "response.function_call_arguments.done", data);
            }
        }
        let item = self.item_json(index, self.item_status(index));
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
    }

    fn open(&mut self, out: &mut Vec<Bytes>, item: Item) -> usize {
        self.close(out);
        let index = self.items.len();
        self.items.push(item);
        self.open = Some(index);
        let added = self.item_json(index, "in_progress");
        let added = match &self.items[index] {
            // An item starts empty; its text arrives as deltas.
            Item::Text { .. } => {
                let mut a = added;
                a["content"] = json!([]);
                a
            }
            Item::Call { .. } => added,
        };
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        if let Item::Text { id, .. } = &self.items[index] {
            let data = json!({"item_id": format!("msg_{}", suffix(id)), "output_index": index, "content_index": 0,
                              "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}});
            self.event(out, "response.content_part.added", data);
        }
        index
    }
}

impl EventEncoder for Encoder {
    fn chunk(&mut self, c: &ChatChunk, out: &mut Vec<Bytes>) {
        if !self.started {
            self.started = true;
            self.id = c.id.clone();
            self.model = c.model.clone();
            self.created = if c.created > 0 { c.created } else { unix_now() };
            let created = self.snapshot("in_progress", Value::Null, false);
            self.event(out, "response.created", json!({"response": created}));
            let progress = self.snapshot("in_progress", Value::Null, false);
            self.event(out, "response.in_progress", json!({"response": progress}));
        }
        if let Some(u) = &c.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = c.choices.iter().find(|ch| ch.index == 0) else {
            return;
        };
        if let Some(delta) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
            let index = match self.open {
                Some(i) if matches!(self.items[i], Item::Text { .. }) => i,
                _ => self.open(
                    out,
                    Item::Text {
                        id: self.id.clone(),
                        text: String::new(),
                    },
                ),
            };
            if let Item::Text { id, text } = &mut self.items[index] {
                text.push_str(delta);
                let data = json!({"item_id": format!("msg_{}", suffix(id)), "output_index": index,
                                  "content_index": 0, "delta": delta, "logprobs": []});
                self.event(out, "response.output_text.delta", data);
            }
        }
        for call in choice.delta.tool_calls.as_deref().unwrap_or(&[]) {
            let tool = call["index"].as_u64().unwrap_or(0);
            let index = match (self.calls.get(&tool), call["id"].as_str()) {
                (Some(i), _) => *i,
                (None, Some(call_id)) => {
                    let item = Item::Call {
                        id: format!("fc_{}", call_id.trim_start_matches("call_")),
                        call_id: call_id.to_owned(),
                        name: call["function"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        arguments: String::new(),
                    };
                    let i = self.open(out, item);
                    self.calls.insert(tool, i);
                    i
                }
                (None, None) => continue,
            };
            let Some(delta) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            else {
                continue;
            };
            if let Item::Call { id, arguments, .. } = &mut self.items[index] {
                arguments.push_str(delta);
                let data = json!({"item_id": id, "output_index": index, "delta": delta});
                self.event(out, "response.function_call_arguments.delta", data);
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.finish = Some(f.clone());
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        self.close(out);
        let (status, incomplete) = status(self.finish.as_deref());
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        let response = self.snapshot(status, incomplete, true);
        self.event(out, kind, json!({"response": response}));
    }

    fn fail(&mut self, e: &ApiError, out: &mut Vec<Bytes>) {
        let body = e.openai_body();
        let err = &body["error"];
        let code = err["code"].as_str().unwrap_or(e.class()).to_owned();
        let message = err["message"].clone();
        self.event(
            out,
            "error",
            json!({"code": code, "message": message, "param": err["param"]}),
        );
        let mut response = self.snapshot("failed", Value::Null, true);
        response["error"] = json!({"code": code, "message": message});
        self.event(out, "response.failed", json!({"response": response}));
    }
}

/// `GET`/`DELETE /v1/responses/{id}` and the other stored-response routes: Switchyard keeps no
/// responses, so say so plainly instead of a bare unknown-route error.
pub async fn stored(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "{} {}: Switchyard does not store responses, so none can be retrieved, cancelled, \
         deleted or listed; keep the response you received and send the whole conversation \
         in 'input'.",
        req.method(),
        req.path()
    )))
}

/// Handle a Responses request.
#[tracing::instrument(skip_all, fields(model, stream, provider))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let call = Call::of(&req);
    let (principal, wire): (_, ResponsesRequest) = read_request(&state, &req, payload).await?;
    call.principal(&principal);
    let (chat, echo) = to_internal(wire)?;
    call.request(&chat.model, chat.stream, chat.user.as_deref());
    validate(&chat)?;
    let whole = |answer: &ChatResponse| to_wire(answer, &echo);
    let encoder = Encoder::new(echo.clone());
    respond_in(&state, &req, &principal, chat, &call, encoder, whole).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChunkChoice, Delta};

    fn parse(v: Value) -> Result<(ChatRequest, Echo), ApiError> {
        let r: ResponsesRequest =
            serde_json::from_value(v).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        to_internal(r)
    }

    #[test]
    fn items_become_a_chat_conversation() -> Result<(), ApiError> {
        let (chat, _) = parse(json!({
            "model": "m",
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": "weather in Paris?"},
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "noon"}]},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "and this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
                ]}
            ],
            "max_output_tokens": 50,
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "reasoning": {"effort": "low"},
            "store": true,
            "x_custom": 1
        }))?;
        let roles: Vec<Role> = chat.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Tool,
                Role::User
            ]
        );
        let calls = chat.messages[2].tool_calls.as_deref().unwrap_or_default();
        assert_eq!(calls.len(), 2, "consecutive calls join one assistant turn");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(chat.messages[4].tool_call_id.as_deref(), Some("call_2"));
        assert_eq!(
            chat.messages[4]
                .content
                .as_ref()
                .map(Content::text)
                .as_deref(),
            Some("noon")
        );
        let Some(Content::Parts(parts)) = &chat.messages[5].content else {
            panic!("the last message keeps its parts");
        };
        assert_eq!(parts[1].kind, "image_url");
        assert_eq!(parts[1].extra["image_url"]["detail"], "low");
        assert_eq!(chat.max_tokens, Some(50));
        assert_eq!(chat.tools.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            chat.tools.as_ref().unwrap_or(&Vec::new())[0]["function"]["name"],
            "weather"
        );
        assert_eq!(
            chat.tool_choice,
            Some(json!({"type": "function", "function": {"name": "weather"}}))
        );
        assert_eq!(chat.extra["response_format"]["json_schema"]["strict"], true);
        assert_eq!(chat.extra["reasoning_effort"], "low");
        assert_eq!(chat.extra["x_custom"], 1, "unknown fields pass through");
        assert!(
            !chat.extra.contains_key("store"),
            "Responses-only fields stay here"
        );
        Ok(())
    }

    #[test]
    fn stateful_and_hosted_features_are_refused_by_name() {
        for (body, param) in [
            (
                json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"model": "m", "input": "hi", "prompt": {"id": "pmpt_1"}}),
                "prompt",
            ),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
                "input[0].id",
            ),
            (
                json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "input": [{"type": "message", "role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
                "input[0].content[0].type",
            ),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": []}), "input"),
            (
                json!({"model": "m", "input": "hi", "max_output_tokens": 0}),
                "max_output_tokens",
            ),
        ] {
            match parse(body) {
                Err(ApiError::InvalidParam { param: Some(p), .. }) => assert_eq!(p, param),
                other => panic!("{param}: {:?}", other.map(|_| ())),
            }
        }
    }

    fn chunk(content: Option<&str>, calls: Option<Value>, finish: Option<&str>) -> ChatChunk {
        ChatChunk {
            id: "chatcmpl-abc".to_owned(),
            object: "chat.completion.chunk".to_owned(),
            created: 7,
            model: "up".to_owned(),
            choices: vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    role: None,
                    content: content.map(str::to_owned),
                    tool_calls: calls.and_then(|c| serde_json::from_value(c).ok()),
                    extra: Extra::new(),
                },
                finish_reason: finish.map(str::to_owned),
                extra: Extra::new(),
                stop_sequence: None,
            }],
            usage: None,
            extra: Extra::new(),
        }
    }

    fn events(out: &[Bytes]) -> Vec<Value> {
        out.iter()
            .map(|b| {
                let s = std::str::from_utf8(b).unwrap_or_default();
                let (head, data) = s.split_once("\ndata: ").unwrap_or_default();
                let v: Value = serde_json::from_str(data.trim()).unwrap_or_default();
                assert_eq!(head.trim_start_matches("event: "), v["type"]);
                v
            })
            .collect()
    }

    #[test]
    fn a_stream_is_a_well_formed_event_sequence() {
        let mut enc = Encoder::new(Echo::default());
        let mut out = Vec::new();
        enc.chunk(&chunk(Some("Hel"), None, None), &mut out);
        enc.chunk(&chunk(Some("lo"), None, None), &mut out);
        let call = json!([{"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]);
        enc.chunk(&chunk(None, Some(call), None), &mut out);
        let more = json!([{"index": 0, "function": {"arguments": ":1}"}}]);
        enc.chunk(&chunk(None, Some(more), Some("tool_calls")), &mut out);
        let mut last = chunk(None, None, None);
        last.choices.clear();
        last.usage = Some(Usage::from_parts(3, 4, 0, 0));
        enc.chunk(&last, &mut out);
        enc.finish(&mut out);
        let ev = events(&out);
        let kinds: Vec<&str> = ev.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seq: Vec<u64> = ev
            .iter()
            .filter_map(|e| e["sequence_number"].as_u64())
            .collect();
        assert_eq!(seq, (0..15).collect::<Vec<_>>());
        assert_eq!(ev[6]["text"], "Hello");
        assert_eq!(ev[12]["arguments"], "{\"a\":1}");
        let done = &ev[14]["response"];
        assert_eq!(done["id"], "resp_abc");
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][1]["call_id"], "call_9");
        assert_eq!(done["usage"]["output_tokens"], 4);
        assert_eq!(done["usage"]["total_tokens"], 7);
    }

    #[test]
    fn a_length_stop_is_an_incomplete_response() {
        let mut enc = Encoder::new(Echo::default());
        let mut out = Vec::new();
        enc.chunk(&chunk(Some("cut"), None, Some("length")), &mut out);
        enc.finish(&mut out);
        let ev = events(&out);
        let last = ev.last().cloned().unwrap_or_default();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
        let item_done = &ev[ev.len() - 2];
        assert_eq!(item_done["type"], "response.output_item.done");
        assert_eq!(item_done["item"]["status"], "incomplete");
    }
}
