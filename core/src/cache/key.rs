//! What a cached answer is keyed on.
//!
//! The exact key is a SHA-256 of the request normalised to canonical JSON (keys sorted): the
//! public model name asked for, every message (role, content, name, tool calls and ids) and
//! every parameter that changes the output (temperature, top_p, max_tokens,
//! max_completion_tokens, n, stop, seed, tools, tool_choice, response_format and any other
//! field passed through to the upstream). Ignored, because they do not change the answer:
//! `stream` and `stream_options` (a hit replays in either form), `user`, `metadata`, the
//! Switchyard extension `max_cost`, and the API dialect (an OpenAI and an Anthropic request for
//! the same thing share an entry; each is answered in its own dialect).
//!
//! The semantic partition is the same hash without the last user message: model, parameters,
//! system prompt and earlier turns must be identical, and only the last question may be a
//! paraphrase. The tenant is never part of a key: each tenant has its own tree and indexes.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::types::{ChatRequest, Content, Role};

/// Fields that never change the answer.
const IGNORED: &[&str] = &["stream", "stream_options", "user", "metadata", "max_cost"];

fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn normalised(req: &ChatRequest) -> Value {
    let mut v = serde_json::to_value(req).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        for k in IGNORED {
            map.remove(*k);
        }
    }
    v
}

fn digest(tag: &[u8], v: &Value) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(1024);
    canonical(v, &mut bytes);
    let mut h = Sha256::new();
    h.update(tag);
    h.update(&bytes);
    h.finalize().into()
}

/// The exact-match key of a request.
pub fn exact_key(req: &ChatRequest) -> [u8; 32] {
    digest(b"switchyard-cache-v1\0exact\0", &normalised(req))
}

/// The last message's text when it is the user's (a text-only question), else nothing: only
/// such requests may be answered semantically.
pub fn question(req: &ChatRequest) -> Option<String> {
    let last = req.messages.last()?;
    if last.role != Role::User || last.tool_calls.is_some() {
        return None;
    }
    let text = match last.content.as_ref()? {
        Content::Text(s) => s.clone(),
        Content::Parts(parts) => {
            if parts.iter().any(|p| p.kind != "text") {
                return None;
            }
            parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    (!text.trim().is_empty()).then_some(text)
}

/// The semantic partition of a request with a [`question`]: everything but that question.
pub fn partition(req: &ChatRequest) -> String {
    let mut v = normalised(req);
    if let Some(Value::Array(msgs)) = v.get_mut("messages") {
        msgs.pop();
    }
    hex::encode(&digest(b"switchyard-cache-v1\0partition\0", &v)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn keys_ignore_order_streaming_and_user_but_not_parameters() {
        let a = req(
            serde_json::json!({"model": "m", "temperature": 0, "stream": true, "user": "u1",
            "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text", "x": 1}}),
        );
        let b = req(
            serde_json::json!({"response_format": {"x": 1, "type": "text"}, "temperature": 0,
            "messages": [{"content": "hi", "role": "user"}], "model": "m"}),
        );
        assert_eq!(exact_key(&a), exact_key(&b));
        let c = req(
            serde_json::json!({"model": "m", "temperature": 0, "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text", "x": 1}}),
        );
        assert_ne!(exact_key(&a), exact_key(&c));
    }

    #[test]
    fn the_partition_holds_the_context_but_not_the_question() {
        let a = req(serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "what is rust?"}]}));
        let b = req(serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "what's rust"}]}));
        let c = req(serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "be verbose"}, {"role": "user", "content": "what is rust?"}]}));
        assert_eq!(partition(&a), partition(&b));
        assert_ne!(partition(&a), partition(&c));
        assert_eq!(question(&a).as_deref(), Some("what is rust?"));
    }
}
