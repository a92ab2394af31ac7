//! The Anthropic dialect at the edge: errors in Anthropic's shape, prompt caching passed
//! through with cached-token accounting, and mid-stream failures as `error` events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};

fn config(kind: &str, base_url: &str) -> String {
    format!(
        "[server]\nworkers = 2\n[providers.up]\ntype = \"{kind}\"\nbase_url = \"{base_url}\"\nmax_retries = 0\nlimit_wait_ms = 0\n\
         [models.claude]\ntargets = [{{ provider = \"up\", model = \"claude-upstream\" }}]\n"
    )
}

async fn messages(gw: &Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/messages"))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[actix_rt::test]
async fn errors_come_in_anthropic_shape() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&config("anthropic", &mock.anthropic_base_url())).await;
    let cases = [
        (
            json!({"model": "claude", "messages": [{"role": "user", "content": "x"}]}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "claude", "max_tokens": 5, "messages": []}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            404,
            "not_found_error",
        ),
        (
            json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x #mock{\"fault\": \"status503\"}"}]}),
            502,
            "api_error",
        ),
        // last: a 429 cools the upstream, so later calls would be refused with 429 too
        (
            json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x #mock{\"fault\": \"status429\"}"}]}),
            429,
            "rate_limit_error",
        ),
    ];
    for (body, status, kind) in cases {
        let resp = messages(&gw, &body).await;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["type"], "error", "{err}");
        assert_eq!(err["error"]["type"], kind, "{err}");
        assert!(err["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let resp = client()
        .post(gw.url("/v1/messages"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
}

#[actix_rt::test]
async fn count_tokens_asks_an_anthropic_upstream_and_estimates_otherwise() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let body = json!({"model": "claude", "system": "alpha beta",
        "messages": [{"role": "user", "content": "one two three"}, {"role": "assistant", "content": "four"},
                     {"role": "user", "content": [{"type": "text", "text": "five six"}]}]});
    let count = |gw: &Gateway, body: Value| {
        let url = gw.url("/v1/messages/count_tokens");
        async move { client().post(url).json(&body).send().await.unwrap() }
    };
    let gw = Gateway::start(&config("anthropic", &mock.anthropic_base_url())).await;
    let resp = count(&gw, body.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-token-count"], "exact");
    let n: Value = resp.json().await.unwrap();
    assert_eq!(n, json!({"input_tokens": 8}), "the upstream's own count");
    // `max_tokens` and `stream`, which the endpoint refuses, never reach the upstream.
    let mut with_settings = body.clone();
    with_settings["max_tokens"] = json!(100);
    with_settings["stream"] = json!(true);
    assert_eq!(count(&gw, with_settings).await.status(), 200);
    for (bad, status, kind) in [
        (
            json!({"model": "claude", "messages": []}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "not_found_error",
        ),
        (json!([1, 2]), 400, "invalid_request_error"),
    ] {
        let resp = count(&gw, bad.clone()).await;
        assert_eq!(resp.status().as_u16(), status, "{bad}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["type"], "error");
        assert_eq!(err["error"]["type"], kind, "{err}");
    }

    let gw = Gateway::start(&config("openai", &mock.openai_base_url())).await;
    let resp = count(&gw, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-token-count"], "estimate");
    let n: Value = resp.json().await.unwrap();
    assert!(n["input_tokens"].as_u64().unwrap() > 0, "{n}");
}

#[actix_rt::test]
async fn cache_control_passes_through_and_cached_tokens_are_counted() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&config("anthropic", &mock.anthropic_base_url())).await;
    let long_context = "alpha beta gamma delta epsilon";
    let body = json!({
        "model": "claude", "max_tokens": 50,
        "system": [{"type": "text", "text": long_context, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "question #mock{\"reply\": \"ok\"}"}]}]
    });
    let answer: Value = messages(&gw, &body).await.json().await.unwrap();
    assert_eq!(answer["usage"]["cache_read_input_tokens"], 5, "{answer}");
    assert_eq!(answer["usage"]["input_tokens"], 3, "{answer}");

    // the same over the OpenAI dialect: cached tokens inside prompt_tokens
    let oai = json!({"model": "claude", "messages": [
        {"role": "system", "content": [{"type": "text", "text": long_context, "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "question #mock{\"reply\": \"ok\"}"}]});
    let answer: Value = gw.chat(&oai).await.json().await.unwrap();
    assert_eq!(answer["usage"]["prompt_tokens"], 8, "{answer}");
    assert_eq!(
        answer["usage"]["prompt_tokens_details"]["cached_tokens"], 5,
        "{answer}"
    );

    // echoed wire body: the marker reached the upstream on the system block
    let echo = json!({"model": "claude", "max_tokens": 50,
        "system": [{"type": "text", "text": long_context, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "q #mock{\"echo\": true}"}]});
    let answer: Value = messages(&gw, &echo).await.json().await.unwrap();
    let wire: Value = serde_json::from_str(answer["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        wire["system"][0]["cache_control"],
        json!({"type": "ephemeral"}),
        "{wire}"
    );
}

#[actix_rt::test]
async fn anthropic_only_fields_do_not_reach_an_openai_upstream() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&config("openai", &mock.openai_base_url())).await;
    let body = json!({"model": "claude", "max_tokens": 50, "top_k": 5,
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "q #mock{\"echo\": true}"}]});
    let answer: Value = messages(&gw, &body).await.json().await.unwrap();
    let wire: Value = serde_json::from_str(answer["content"][0]["text"].as_str().unwrap()).unwrap();
    assert!(wire.get("top_k").is_none(), "{wire}");
    assert!(
        wire["messages"][0]["content"][0]
            .get("cache_control")
            .is_none(),
        "{wire}"
    );
    assert_eq!(wire["messages"][0]["role"], "system");
    assert_eq!(wire["max_tokens"], 50);
}

#[actix_rt::test]
async fn a_stream_that_breaks_ends_with_an_anthropic_error_event() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    for (kind, url) in [
        ("anthropic", mock.anthropic_base_url()),
        ("openai", mock.openai_base_url()),
    ] {
        let gw = Gateway::start(&config(kind, &url)).await;
        let body = json!({"model": "claude", "max_tokens": 50, "stream": true,
            "messages": [{"role": "user", "content": "x #mock{\"fault\": \"truncate\", \"reply_words\": 20}"}]});
        let resp = messages(&gw, &body).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let events: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(events.first(), Some(&"message_start"), "{kind}");
        assert_eq!(events.last(), Some(&"error"), "{kind}: {events:?}");
        assert!(!events.contains(&"message_stop"));
        let last_data: Value = serde_json::from_str(
            text.lines()
                .rev()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(last_data["type"], "error");
        assert_eq!(last_data["error"]["type"], "api_error");
    }
}
