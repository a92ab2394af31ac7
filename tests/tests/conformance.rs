//! One conformance suite stamped over every provider wire format: the same client calls, through
//! the gateway, to a mock upstream speaking OpenAI, Anthropic or Gemini.
//!
//! Per-request behaviour is scripted with `#mock{...}` directives in the message text, since
//! only text survives every format conversion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Gateway config with one provider of `kind` in front of `mock`, model name `m`.
fn config(kind: &str, base_url: &str) -> String {
    format!(
        "[server]\nworkers = 2\n[providers.up]\ntype = \"{kind}\"\nbase_url = \"{base_url}\"\napi_key = \"none\"\n\
         max_retries = 0\nlimit_wait_ms = 0\ntimeout_ms = 1000\n\
         [models.m]\ntargets = [{{ provider = \"up\", model = \"mock-model\" }}]\n"
    )
}

fn user(text: &str) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": text}]})
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    gw.chat(body).await
}

fn echoed(body: &Value) -> Value {
    serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap()
}

/// Assemble streamed tool-call deltas: (name, arguments).
fn streamed_tool_call(events: &[Received]) -> (String, String) {
    let mut name = String::new();
    let mut args = String::new();
    for e in events {
        let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
            continue;
        };
        for call in v["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(n) = call["function"]["name"].as_str() {
                name.push_str(n);
            }
            if let Some(a) = call["function"]["arguments"].as_str() {
                args.push_str(a);
            }
        }
    }
    (name, args)
}

macro_rules! conformance {
    ($name:ident, $kind:literal, $base:ident, system_at: $system:literal, third_turn_at: $third:literal) => {
        mod $name {
            use super::*;

            async fn setup() -> (MockServer, Gateway) {
                let mock = MockServer::start_local(MockConfig::default()).await.unwrap();
                let gw = Gateway::start(&config($kind, &mock.$base())).await;
                (mock, gw)
            }

            #[actix_rt::test]
            async fn simple() {
                let (_mock, gw) = setup().await;
                let resp = post(&gw, &user(r##"hi #mock{"reply": "hello from the mock"}"##)).await;
                assert_eq!(resp.status(), 200);
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["object"], "chat.completion");
                assert_eq!(body["choices"][0]["message"]["role"], "assistant");
                assert_eq!(body["choices"][0]["message"]["content"], "hello from the mock");
                assert_eq!(body["choices"][0]["finish_reason"], "stop");
            }

            #[actix_rt::test]
            async fn streaming() {
                let (_mock, gw) = setup().await;
                let mut body = user(r##"hi #mock{"reply": "one two three four"}"##);
                body["stream"] = json!(true);
                let resp = post(&gw, &body).await;
                assert_eq!(resp.status(), 200);
                let events = read_sse(resp, Instant::now()).await;
                assert_eq!(events.last().unwrap().data, "[DONE]");
                assert_eq!(streamed_text(&events), "one two three four");
                let finishes: Vec<Value> = events
                    .iter()
                    .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
                    .map(|v| v["choices"][0]["finish_reason"].clone())
                    .filter(|f| !f.is_null())
                    .collect();
                assert_eq!(finishes, vec![json!("stop")]);
            }

            #[actix_rt::test]
            async fn system_prompt() {
                let (_mock, gw) = setup().await;
                let body = json!({"model": "m", "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": r##"hi #mock{"echo": true}"##}]});
                let answer: Value = post(&gw, &body).await.json().await.unwrap();
                let wire = echoed(&answer);
                assert_eq!(wire.pointer($system), Some(&json!("be brief")), "{wire}");
            }

            #[actix_rt::test]
            async fn multi_turn() {
                let (_mock, gw) = setup().await;
                let body = json!({"model": "m", "messages": [
                    {"role": "user", "content": "first question"},
                    {"role": "assistant", "content": "first answer"},
                    {"role": "user", "content": r##"second question #mock{"echo": true}"##}]});
                let answer: Value = post(&gw, &body).await.json().await.unwrap();
                let wire = echoed(&answer);
                let third = wire.pointer($third).and_then(Value::as_str).unwrap_or_default();
                assert!(third.starts_with("second question"), "{wire}");
            }

            #[actix_rt::test]
            async fn tool_call() {
                let (_mock, gw) = setup().await;
                let tools = json!([{"type": "function", "function": {"name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
                let text = r##"weather? #mock{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}"##;
                let mut body = user(text);
                body["tools"] = tools;
                let answer: Value = post(&gw, &body).await.json().await.unwrap();
                let call = &answer["choices"][0]["message"]["tool_calls"][0];
                assert_eq!(call["function"]["name"], "get_weather", "{answer}");
                let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
                assert_eq!(args, json!({"city": "Paris"}));
                assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));
                assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");

                body["stream"] = json!(true);
                let events = read_sse(post(&gw, &body).await, Instant::now()).await;
                let (name, args) = streamed_tool_call(&events);
                assert_eq!(name, "get_weather");
                assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Paris"}));
            }

            #[actix_rt::test]
            async fn usage() {
                let (_mock, gw) = setup().await;
                let system = "you are terse";
                let text = r##"count these words #mock{"reply": "five words in this reply"}"##;
                let body = json!({"model": "m", "messages": [
                    {"role": "system", "content": system}, {"role": "user", "content": text}]});
                let answer: Value = post(&gw, &body).await.json().await.unwrap();
                let prompt = (system.split_whitespace().count() + text.split_whitespace().count()) as u64;
                assert_eq!(answer["usage"]["prompt_tokens"], prompt, "{answer}");
                assert_eq!(answer["usage"]["completion_tokens"], 5);
                assert_eq!(answer["usage"]["total_tokens"], prompt + 5);

                let mut body = body;
                body["stream"] = json!(true);
                body["stream_options"] = json!({"include_usage": true});
                let events = read_sse(post(&gw, &body).await, Instant::now()).await;
                let usage = events
                    .iter()
                    .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
                    .find(|v| v["usage"].is_object())
                    .map(|v| v["usage"].clone())
                    .expect("a usage chunk");
                assert_eq!(usage["completion_tokens"], 5);
                assert_eq!(usage["prompt_tokens"], prompt);
            }

            #[actix_rt::test]
            async fn error_mapping() {
                let (_mock, gw) = setup().await;
                for (fault, status) in [("status500", 502), ("status503", 502), ("status400", 400), ("status429", 429)] {
                    let resp = post(&gw, &user(&format!(r##"x #mock{{"fault": "{fault}"}}"##))).await;
                    assert_eq!(resp.status().as_u16(), status, "{fault}");
                    if status == 429 {
                        assert!(resp.headers().contains_key("retry-after"));
                    }
                    let body: Value = resp.json().await.unwrap();
                    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("mock")), "{fault}: {body}");
                }
            }

            #[actix_rt::test]
            async fn truncated_stream() {
                let (_mock, gw) = setup().await;
                let mut body = user(r##"x #mock{"fault": "truncate", "reply_words": 12}"##);
                body["stream"] = json!(true);
                let resp = post(&gw, &body).await;
                assert_eq!(resp.status(), 200);
                let events = tokio::time::timeout(Duration::from_secs(10), read_sse(resp, Instant::now())).await.unwrap();
                let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
                assert!(last["error"]["message"].is_string(), "{last}");
                assert!(!events.iter().any(|e| e.data == "[DONE]"));
            }

            #[actix_rt::test]
            async fn slow_first_token() {
                let (_mock, gw) = setup().await;
                let mut body = user(r##"x #mock{"ttft": 400, "reply": "late but here"}"##);
                body["stream"] = json!(true);
                let start = Instant::now();
                let events = read_sse(post(&gw, &body).await, start).await;
                assert_eq!(streamed_text(&events), "late but here");
                assert!(events[0].at >= Duration::from_millis(380), "first event at {:?}", events[0].at);
                // past the provider's 1 s attempt timeout: a clean 504, promptly
                let mut body = user(r##"x #mock{"ttft": 5000}"##);
                body["stream"] = json!(true);
                let start = Instant::now();
                let resp = post(&gw, &body).await;
                assert_eq!(resp.status(), 504);
                assert!(start.elapsed() < Duration::from_secs(3));
            }

            #[actix_rt::test]
            async fn anthropic_clients_are_served() {
                let (_mock, gw) = setup().await;
                let body = json!({"model": "m", "max_tokens": 100, "system": "be brief",
                    "messages": [{"role": "user", "content": r##"hi #mock{"reply": "hello there"}"##}]});
                let resp = client().post(gw.url("/v1/messages")).json(&body).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                let answer: Value = resp.json().await.unwrap();
                assert_eq!(answer["type"], "message");
                assert_eq!(answer["content"][0]["text"], "hello there");
                assert_eq!(answer["stop_reason"], "end_turn");
                assert_eq!(answer["usage"]["output_tokens"], 2);

                let mut body = body;
                body["stream"] = json!(true);
                let resp = client().post(gw.url("/v1/messages")).json(&body).send().await.unwrap();
                let text = resp.text().await.unwrap();
                let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
                assert_eq!(names.first(), Some(&"message_start"));
                assert_eq!(names.last(), Some(&"message_stop"));
                assert!(names.contains(&"content_block_delta") && names.contains(&"message_delta"), "{names:?}");
                let deltas: String = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
                    .collect();
                assert_eq!(deltas, "hello there");
            }
        }
    };
}

conformance!(openai, "openai", openai_base_url, system_at: "/messages/0/content", third_turn_at: "/messages/2/content");
conformance!(anthropic, "anthropic", anthropic_base_url, system_at: "/system/0/text", third_turn_at: "/messages/2/content/0/text");
conformance!(gemini, "gemini", gemini_base_url, system_at: "/systemInstruction/parts/0/text", third_turn_at: "/contents/2/parts/0/text");
