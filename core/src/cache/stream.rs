//! Streams and the cache: a streamed answer is assembled as it passes and stored once complete;
//! a hit on a streamed request is replayed as chunks, which each dialect's SSE writer turns
//! into an ordinary event stream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::StreamExt;
use serde_json::Value;

use crate::providers::chain::{Served, StreamStart};
use crate::providers::ProviderError;
use crate::types::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, Delta, Extra, ResponseMessage, Role, Usage,
};

#[derive(Default)]
struct Building {
    content: String,
    tool_calls: BTreeMap<u64, Value>,
    finish_reason: Option<String>,
}

/// Chunks put back together into the whole answer.
#[derive(Default)]
pub struct Assembler {
    id: String,
    created: u64,
    model: String,
    choices: BTreeMap<u32, Building>,
    usage: Option<Usage>,
}

impl Assembler {
    /// Take one chunk in.
    pub fn feed(&mut self, chunk: &ChatChunk) {
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.created = chunk.created;
            self.model.clone_from(&chunk.model);
        }
        if chunk.usage.is_some() {
            self.usage.clone_from(&chunk.usage);
        }
        for c in &chunk.choices {
            let b = self.choices.entry(c.index).or_default();
            if let Some(t) = &c.delta.content {
                b.content.push_str(t);
            }
            for (pos, frag) in c.delta.tool_calls.iter().flatten().enumerate() {
                let idx = frag["index"].as_u64().unwrap_or(pos as u64);
                let call = b
                    .tool_calls
                    .entry(idx)
                    .or_insert_with(|| serde_json::json!({"type": "function", "function": {"name": "", "arguments": ""}}));
                for k in ["id", "type"] {
                    if let Some(v) = frag.get(k).filter(|v| !v.is_null()) {
                        call[k] = v.clone();
                    }
                }
                if let Some(name) = frag["function"]["name"].as_str() {
                    call["function"]["name"] = Value::String(name.to_owned());
                }
                if let Some(args) = frag["function"]["arguments"].as_str() {
                    let joined = format!(
                        "{}{args}",
                        call["function"]["arguments"].as_str().unwrap_or_default()
                    );
                    call["function"]["arguments"] = Value::String(joined);
                }
            }
            if c.finish_reason.is_some() {
                b.finish_reason.clone_from(&c.finish_reason);
            }
        }
    }

    /// The whole answer, when every choice finished.
    pub fn finish(self) -> Option<ChatResponse> {
        if self.choices.is_empty() || self.choices.values().any(|b| b.finish_reason.is_none()) {
            return None;
        }
        let choices = self
            .choices
            .into_iter()
            .map(|(index, b)| {
                let tool_calls: Vec<Value> = b.tool_calls.into_values().collect();
                Choice {
                    index,
                    message: ResponseMessage {
                        role: Role::Assistant,
                        content: (!b.content.is_empty() || tool_calls.is_empty())
                            .then_some(b.content),
                        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                        extra: Extra::default(),
                    },
                    finish_reason: b.finish_reason,
                    extra: Extra::default(),
                    stop_sequence: None,
                }
            })
            .collect();
        Some(ChatResponse {
            id: self.id,
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model,
            choices,
            usage: self.usage,
            extra: Extra::default(),
        })
    }
}

/// Pass a stream through unchanged and hand its assembled answer to `done` when it ends
/// complete (never after a failure or when the client goes away early).
pub fn tee(
    mut start: StreamStart,
    done: impl FnOnce(ChatResponse) + Send + 'static,
) -> StreamStart {
    let asm = Arc::new(Mutex::new((Assembler::default(), false)));
    if let Ok(mut a) = asm.lock() {
        a.0.feed(&start.first);
    }
    let watch = Arc::clone(&asm);
    let rest = std::mem::replace(&mut start.rest, futures_util::stream::empty().boxed());
    let passed = rest.inspect(move |item| {
        if let Ok(mut a) = watch.lock() {
            match item {
                Ok(chunk) => a.0.feed(chunk),
                Err(_) => a.1 = true,
            }
        }
    });
    let end = futures_util::stream::once(async move {
        let taken = asm.lock().ok().map(|mut a| (std::mem::take(&mut a.0), a.1));
        if let Some((built, false)) = taken {
            if let Some(resp) = built.finish() {
                done(resp);
            }
        }
        None::<Result<ChatChunk, ProviderError>>
    })
    .filter_map(futures_util::future::ready);
    start.rest = passed.chain(end).boxed();
    start
}

fn chunk(resp: &ChatResponse, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> ChatChunk {
    ChatChunk {
        id: resp.id.clone(),
        object: "chat.completion.chunk".to_owned(),
        created: resp.created,
        model: resp.model.clone(),
        choices,
        usage,
        extra: Extra::default(),
    }
}

fn delta_choice(index: u32, delta: Delta, finish: Option<String>) -> ChunkChoice {
    ChunkChoice {
        index,
        delta,
        finish_reason: finish,
        extra: Extra::default(),
        stop_sequence: None,
    }
}

/// A stored answer as a stream: the role, the text, tool calls, the finish reason and usage.
pub fn replay(resp: ChatResponse, served: Served) -> StreamStart {
    let first = chunk(
        &resp,
        resp.choices
            .iter()
            .map(|c| {
                delta_choice(
                    c.index,
                    Delta {
                        role: Some(Role::Assistant),
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    None,
                )
            })
            .collect(),
        None,
    );
    let mut rest = Vec::new();
    for c in &resp.choices {
        if let Some(text) = c.message.content.as_ref().filter(|t| !t.is_empty()) {
            rest.push(chunk(
                &resp,
                vec![delta_choice(
                    c.index,
                    Delta {
                        content: Some(text.clone()),
                        ..Delta::default()
                    },
                    None,
                )],
                None,
            ));
        }
        if let Some(calls) = &c.message.tool_calls {
            let indexed = calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let mut call = call.clone();
                    call["index"] = Value::from(i);
                    call
                })
                .collect();
            rest.push(chunk(
                &resp,
                vec![delta_choice(
                    c.index,
                    Delta {
                        tool_calls: Some(indexed),
                        ..Delta::default()
                    },
                    None,
                )],
                None,
            ));
        }
        rest.push(chunk(
            &resp,
            vec![delta_choice(
                c.index,
                Delta::default(),
                Some(c.finish_reason.clone().unwrap_or_else(|| "stop".to_owned())),
            )],
            None,
        ));
    }
    if resp.usage.is_some() {
        rest.push(chunk(&resp, Vec::new(), resp.usage.clone()));
    }
    StreamStart {
        first,
        rest: futures_util::stream::iter(rest.into_iter().map(Ok)).boxed(),
        served,
    }
}

/// Who answers a hit.
pub fn served_by_cache(upstream_model: &str) -> Served {
    Served {
        provider: "cache".to_owned(),
        model: upstream_model.to_owned(),
        attempts: 0,
        upstream: Duration::ZERO,
        waited: Duration::ZERO,
    }
}
