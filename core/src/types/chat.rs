//! Chat completion types.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Unknown fields, kept and passed through.
pub type Extra = Map<String, Value>;

/// A chat completion request.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChatRequest {
    /// Public model name (or `provider/model`).
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stream: bool,
    /// Sampling temperature, 0–2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling, 0–1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Completion length limit (legacy name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Completion length limit (current name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Number of choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Seed for reproducible sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// End-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Tool definitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// Tool choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Streaming options (e.g. `include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<Value>,
    /// Switchyard extension: the most this call may cost, in USD (never sent upstream).
    #[serde(default, skip_serializing)]
    pub max_cost: Option<f64>,
    /// Everything else, passed through.
    #[serde(flatten)]
    pub extra: Extra,
    /// The API dialect the request came in (decides which unknown fields may pass through to
    /// an upstream of another format).
    #[serde(skip)]
    pub dialect: Dialect,
}

/// The API dialect of a client request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI chat completions.
    #[default]
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl ChatRequest {
    /// The text of the messages whose role `keep` accepts, one line per message (for token
    /// counts and for routing, which judge the words and not the structure).
    pub fn text_of(&self, keep: impl Fn(Role) -> bool) -> String {
        let mut s = String::new();
        for m in self.messages.iter().filter(|m| keep(m.role)) {
            match &m.content {
                Some(Content::Text(t)) => s.push_str(t),
                Some(Content::Parts(p)) => {
                    for t in p.iter().filter_map(|p| p.text.as_deref()) {
                        s.push_str(t);
                    }
                }
                None => {}
            }
            s.push('\n');
        }
        s
    }

    /// A rough token count for client-side TPM limits: four characters per token for the
    /// prompt, plus the completion budget (or 256 when none is set).
    pub fn estimate_tokens(&self) -> u32 {
        let out = self
            .max_completion_tokens
            .or(self.max_tokens)
            .unwrap_or(256);
        self.estimate_prompt_tokens().saturating_add(out)
    }

    /// A rough prompt token count: four characters per token.
    pub fn estimate_prompt_tokens(&self) -> u32 {
        let chars: usize = self
            .messages
            .iter()
            .filter_map(|m| m.content.as_ref())
            .map(|c| match c {
                Content::Text(s) => s.len(),
                Content::Parts(p) => p
                    .iter()
                    .filter_map(|p| p.text.as_ref())
                    .map(String::len)
                    .sum(),
            })
            .sum();
        u32::try_from(chars / 4).unwrap_or(u32::MAX)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop sequence.
    One(String),
    /// Up to four stop sequences.
    Many(Vec<String>),
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System prompt.
    System,
    /// Developer prompt (newer name for system on OpenAI).
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
    /// A legacy function result.
    Function,
}

/// One message of the conversation.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Message {
    /// Author.
    pub role: Role,
    /// Text or content parts; may be null on assistant messages with tool calls.
    #[serde(default)]
    pub content: Option<Content>,
    /// Optional author name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by the assistant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// Which tool call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Everything else, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Message content.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (text, images, audio, ...).
    Parts(Vec<ContentPart>),
}

/// One typed content part.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ContentPart {
    /// Part type: `text`, `image_url`, `input_audio`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Everything else, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Content {
    /// The text of the content: the string, or the `text` parts joined.
    pub fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Text(s) => s.is_empty(),
            Self::Parts(p) => p.is_empty(),
        }
    }
}

/// Token usage of one call.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Usage {
    /// Input tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Sum of both.
    #[serde(default)]
    pub total_tokens: u64,
    /// Breakdown of prompt tokens (`cached_tokens`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<Value>,
    /// Everything else, passed through.
    #[serde(flatten)]
    pub extra: Extra,
    /// Prompt tokens written to the provider's prompt cache (Anthropic), part of `prompt_tokens`.
    #[serde(skip)]
    pub cache_creation_tokens: u64,
}

impl Usage {
    /// Prompt tokens read from the provider's prompt cache (part of `prompt_tokens`).
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .as_ref()
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// Usage from its parts; `prompt` excludes cache reads and writes (Anthropic's counting).
    pub fn from_parts(prompt: u64, completion: u64, cache_read: u64, cache_creation: u64) -> Self {
        let prompt_tokens = prompt + cache_read + cache_creation;
        Self {
            prompt_tokens,
            completion_tokens: completion,
            total_tokens: prompt_tokens + completion,
            prompt_tokens_details: (cache_read > 0)
                .then(|| serde_json::json!({"cached_tokens": cache_read})),
            extra: Extra::new(),
            cache_creation_tokens: cache_creation,
        }
    }
}

/// A complete (non-streamed) answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChatResponse {
    /// Completion id.
    pub id: String,
    /// Always `chat.completion`.
    #[serde(default = "chat_completion_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The answers.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Everything else, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

fn chat_completion_object() -> String {
    "chat.completion".to_owned()
}

/// One answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Choice {
    /// Index among `n` choices.
    #[serde(default)]
    pub index: u32,
    /// The message.
    pub message: ResponseMessage,
    /// Why generation stopped.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Everything else (logprobs, ...), passed through.
    #[serde(flatten)]
    pub extra: Extra,
    /// Which stop sequence ended generation, when the upstream says (Anthropic).
    #[serde(skip)]
    pub stop_sequence: Option<String>,
}

/// The assistant's message in an answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ResponseMessage {
    /// Always `assistant`.
    pub role: Role,
    /// Text, if any.
    #[serde(default)]
    pub content: Option<String>,
    /// Tool calls, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// Everything else, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One streamed chunk.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChatChunk {
    /// Completion id (same for every chunk).
    #[serde(default)]
    pub id: String,
    /// Always `chat.completion.chunk`.
    #[serde(default = "chunk_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    #[serde(default)]
    pub model: String,
    /// Deltas per choice.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage, on the last chunk when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Everything else, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

/// A delta for one choice.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChunkChoice {
    /// Choice index.
    #[serde(default)]
    pub index: u32,
    /// What is new.
    #[serde(default)]
    pub delta: Delta,
    /// Set on the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Everything else, passed through.
    #[serde(flatten)]
    pub extra: Extra,
    /// Which stop sequence ended generation, when the upstream says (Anthropic).
    #[serde(skip)]
    pub stop_sequence: Option<String>,
}

/// New content in a chunk.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Delta {
    /// Set on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// New text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool-call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// Everything else, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_round_trip_untouched() -> Result<(), serde_json::Error> {
        let body = serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}], "x_msg": 1}],
            "reasoning_effort": "low",
            "response_format": {"type": "json_object"},
            "temperature": 0.5
        });
        let req: ChatRequest = serde_json::from_value(body.clone())?;
        assert_eq!(req.extra.get("reasoning_effort"), Some(&Value::from("low")));
        let back = serde_json::to_value(&req)?;
        assert_eq!(back, body);
        Ok(())
    }

    #[test]
    fn content_text_joins_parts() -> Result<(), serde_json::Error> {
        let c: Content = serde_json::from_value(serde_json::json!([
            {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "b"}
        ]))?;
        assert_eq!(c.text(), "a\nb");
        Ok(())
    }
}
