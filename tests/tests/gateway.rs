//! End-to-end: the gateway over real HTTP in front of real mock upstreams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[actix_rt::test]
async fn chat_non_streamed_passes_through_with_usage_and_headers() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&chain_config("gpt-test", &[mock.openai_base_url()])).await;
    let resp = gw
        .chat(
            &json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hello there"}],
                      "mock": {"reply": "General Kenobi"}}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "up0");
    assert_eq!(resp.headers()["x-switchyard-model"], "gpt-test-upstream");
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "General Kenobi");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_eq!(body["usage"]["completion_tokens"], 2);
    assert_eq!(
        body["system_fingerprint"], "fp_mock",
        "unknown response fields pass through"
    );
    assert_eq!(mock.stats().ok, 1);
}

#[actix_rt::test]
async fn unknown_request_fields_reach_the_upstream_untouched() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&chain_config("m", &[mock.openai_base_url()])).await;
    let sent = json!({
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
        "reasoning_effort": "low",
        "response_format": {"type": "json_object"},
        "metadata": {"a": "b"},
        "mock": {"echo": true}
    });
    let body: Value = gw.chat(&sent).await.json().await.unwrap();
    let echoed: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(
        echoed["model"], "m-upstream",
        "model is mapped to the upstream's name"
    );
    assert_eq!(echoed["reasoning_effort"], "low");
    assert_eq!(echoed["response_format"], json!({"type": "json_object"}));
    assert_eq!(echoed["metadata"], json!({"a": "b"}));
    assert_eq!(
        echoed["messages"][0]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
}

#[actix_rt::test]
async fn streamed_chunks_arrive_as_the_upstream_sends_them() {
    let mock = MockServer::start_local(MockConfig {
        ttft: Latency::Fixed(100),
        itl: Latency::Fixed(150),
        reply_words: 8,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(&chain_config("m", &[mock.openai_base_url()])).await;
    let start = Instant::now();
    let resp = gw.chat(&json!({"model": "m", "messages": [{"role": "user", "content": "count"}], "stream": true,
                      "stream_options": {"include_usage": true}})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = read_sse(resp, start).await;
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let text = streamed_text(&events);
    assert_eq!(text.split(' ').count(), 8, "{text}");
    let first_content = events
        .iter()
        .find(|e| e.data.contains("\"content\":\"Mock\""))
        .unwrap()
        .at;
    let last = events.last().unwrap().at;
    // 8 words at 150 ms each: the whole stream takes >= 1.15 s; the first word must not wait for it.
    assert!(last >= Duration::from_millis(1100), "stream took {last:?}");
    assert!(
        first_content < Duration::from_millis(450),
        "first token after {first_content:?}"
    );
    // Each chunk arrives near its own send time, not in a burst at the end.
    let gaps: Vec<Duration> = events
        .windows(2)
        .map(|w| w[1].at.saturating_sub(w[0].at))
        .collect();
    assert!(
        gaps.iter()
            .filter(|g| **g >= Duration::from_millis(100))
            .count()
            >= 6,
        "{gaps:?}"
    );
    let usage: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 8);
}

#[actix_rt::test]
async fn fails_over_to_the_next_target_before_the_first_byte() {
    let bad = MockServer::start_local(MockConfig {
        faults: FaultRates {
            status_500: 1.0,
            ..FaultRates::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let good = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    // refused connections, then 500s, then a working upstream
    let gw = Gateway::start(&chain_config(
        "m",
        &[dead_url(), bad.openai_base_url(), good.openai_base_url()],
    ))
    .await;
    for stream in [false, true] {
        let resp = gw.chat(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream})).await;
        assert_eq!(resp.status(), 200, "stream={stream}");
        assert_eq!(resp.headers()["x-switchyard-provider"], "up2");
        // Two retries each on the refusing and the failing upstream, then the one that works.
        assert_eq!(resp.headers()["x-switchyard-attempts"], "7");
        if stream {
            let events = read_sse(resp, Instant::now()).await;
            assert_eq!(events.last().unwrap().data, "[DONE]");
        }
    }
    assert_eq!(bad.stats().faults.get("status500"), Some(&6));
    assert_eq!(good.stats().ok, 2);
}

#[actix_rt::test]
async fn all_upstreams_down_is_a_clean_5xx_in_openai_format() {
    let gw = Gateway::start(&chain_config("m", &[dead_url(), dead_url()])).await;
    let resp = gw.chat(&chat_body("m", "hi")).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("all 2 upstreams failed"),
        "{body}"
    );

    let bad = MockServer::start_local(MockConfig {
        faults: FaultRates {
            status_500: 1.0,
            ..FaultRates::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw2 = Gateway::start(&chain_config("m", &[bad.openai_base_url(), dead_url()])).await;
    let resp = client()
        .post(gw2.url("/v1/chat/completions"))
        .json(&chat_body("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream returned 500"),
        "{body}"
    );
}

#[actix_rt::test]
async fn rate_limits_everywhere_become_429_with_retry_after() {
    let limited = MockServer::start_local(MockConfig {
        faults: FaultRates {
            status_429: 1.0,
            ..FaultRates::default()
        },
        retry_after_secs: 7,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(&chain_config(
        "m",
        &[limited.openai_base_url(), limited.openai_base_url()],
    ))
    .await;
    let resp = gw.chat(&chat_body("m", "hi")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}

#[actix_rt::test]
async fn upstream_rejections_are_returned_not_failed_over() {
    let first = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let second = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&chain_config(
        "m",
        &[first.openai_base_url(), second.openai_base_url()],
    ))
    .await;
    let resp = gw.chat(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "mock": {"fault": "status400"}})).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mock: invalid request"),
        "{body}"
    );
    assert_eq!(second.stats().requests, 0);
}

#[actix_rt::test]
async fn a_stream_that_breaks_midway_ends_with_an_error_event() {
    let mock = MockServer::start_local(MockConfig {
        reply_words: 10,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(&chain_config("m", &[mock.openai_base_url()])).await;
    for fault in ["truncate", "malformed"] {
        let resp = gw.chat(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true, "mock": {"fault": fault}})).await;
        assert_eq!(
            resp.status(),
            200,
            "{fault}: the first chunk was fine, so the stream started"
        );
        let events = tokio::time::timeout(Duration::from_secs(10), read_sse(resp, Instant::now()))
            .await
            .expect("no hang");
        let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
        assert!(last["error"]["message"].is_string(), "{fault}: {last}");
        assert!(!events.iter().any(|e| e.data == "[DONE]"));
    }
}

#[actix_rt::test]
async fn a_client_that_disconnects_cancels_the_upstream_stream() {
    let mock = MockServer::start_local(MockConfig {
        itl: Latency::Fixed(100),
        reply_words: 50,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(&chain_config("m", &[mock.openai_base_url()])).await;
    let resp = gw
        .chat(
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}),
        )
        .await;
    let mut body = resp.bytes_stream();
    use futures_util::StreamExt;
    let _ = body.next().await;
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(3);
    while mock.stats().cancelled == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mock.stats().cancelled, 1, "upstream stream was not dropped");
    assert_eq!(mock.stats().ok, 1);
}

#[actix_rt::test]
async fn the_deadline_header_bounds_the_wait() {
    let slow = MockServer::start_local(MockConfig {
        latency: Latency::Fixed(3000),
        ttft: Latency::Fixed(3000),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(&chain_config(
        "m",
        &[slow.openai_base_url(), slow.openai_base_url()],
    ))
    .await;
    for stream in [false, true] {
        let t = Instant::now();
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-switchyard-timeout-ms", "300")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 504, "stream={stream}");
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            t.elapsed()
        );
    }
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-switchyard-timeout-ms", "soon")
        .json(&chat_body("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[actix_rt::test]
async fn bad_input_gets_the_right_4xx_and_the_daemon_keeps_serving() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let key = "sk-test-123";
    let config = format!(
        "{}[[auth.keys]]\nid = \"app1\"\nhash = \"{}\"\n",
        chain_config("m", &[mock.openai_base_url()]),
        switchyard_core::config::hash_key(key)
    );
    let gw = Gateway::start(&config).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let auth = format!("Bearer {key}");

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("malformed json", c.post(&url).header("authorization", &auth).body("{\"model\": \"m\", "), 400, "invalid_json"),
        ("empty body", c.post(&url).header("authorization", &auth), 400, "invalid_json"),
        ("wrong type", c.post(&url).header("authorization", &auth).json(&json!({"model": "m", "messages": "hi"})), 400, "invalid_value"),
        ("bad role", c.post(&url).header("authorization", &auth).json(&json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]})), 400, "invalid_value"),
        ("empty messages", c.post(&url).header("authorization", &auth).json(&json!({"model": "m", "messages": []})), 400, "invalid_value"),
        ("missing model", c.post(&url).header("authorization", &auth).json(&json!({"messages": [{"role": "user", "content": "x"}]})), 400, "invalid_value"),
        ("temperature out of range", c.post(&url).header("authorization", &auth).json(&json!({"model": "m", "temperature": 9, "messages": [{"role": "user", "content": "x"}]})), 400, "invalid_value"),
        ("unknown model", c.post(&url).header("authorization", &auth).json(&chat_body("nope", "x")), 404, "model_not_found"),
        ("missing key", c.post(&url).json(&chat_body("m", "x")), 401, "invalid_api_key"),
        ("wrong key", c.post(&url).header("authorization", "Bearer sk-wrong").json(&chat_body("m", "x")), 401, "invalid_api_key"),
        ("50 MB body", c.post(&url).header("authorization", &auth).body(vec![b' '; 50 * 1024 * 1024]), 413, "payload_too_large"),
        ("unknown route", c.get(gw.url("/v1/nothing")).header("authorization", &auth), 404, "unknown_url"),
        ("wrong method", c.get(&url).header("authorization", &auth), 405, "method_not_allowed"),
    ];
    for (name, rb, status, code) in cases {
        let resp = rb.send().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp.status().as_u16(), status, "{name}");
        let body: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        assert!(
            !body.to_string().contains(key),
            "{name}: the key must never be echoed"
        );
    }
    let resp = c
        .post(&url)
        .header("authorization", &auth)
        .json(&chat_body("m", "still there?"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .post(&url)
        .header("x-api-key", key)
        .json(&chat_body("m", "anthropic-style key header"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[actix_rt::test]
async fn models_health_and_readiness() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&chain_config("gpt-test", &[mock.openai_base_url()])).await;
    let c = client();
    let list: Value = c
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], "gpt-test");
    let one = c.get(gw.url("/v1/models/gpt-test")).send().await.unwrap();
    assert_eq!(one.status(), 200);
    let direct = c
        .get(gw.url("/v1/models/up0/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        direct.status(),
        200,
        "provider/model addresses a provider directly"
    );
    let missing = c.get(gw.url("/v1/models/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        c.get(gw.url("/healthz")).send().await.unwrap().status(),
        200
    );
    let ready = c.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["providers"][0]["name"], "up0");

    let direct_chat = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("up0/raw-model", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(direct_chat.status(), 200);
    let body: Value = direct_chat.json().await.unwrap();
    assert_eq!(body["model"], "raw-model");
}

#[actix_rt::test]
async fn the_supervisor_restarts_a_provider_actor_that_stops() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&chain_config("m", &[mock.openai_base_url()])).await;
    let addr = gw.state.models.resolve("m").unwrap()[0].addr.clone();
    addr.do_send(switchyard_core::providers::Restart);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = gw.chat(&chat_body("m", "after restart")).await;
    assert_eq!(resp.status(), 200);
    let ready: Value = client()
        .get(gw.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["providers"][0]["restarts"], 1, "{ready}");
}

#[actix_rt::test]
async fn sled_data_survives_a_restart_and_is_locked_while_open() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let cfg = chain_config("m", &[mock.openai_base_url()]);
    let gw = Gateway::start(&cfg).await;
    let data = gw.dir.path().join("data");
    assert!(
        data.join("conf").exists() || data.join("db").exists(),
        "sled files are on disk"
    );
    // A second daemon on the same folder is refused with a clear error, not corruption.
    let second = switchyard_core::config::Config::load(
        None,
        &switchyard_core::config::Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data.clone()),
        },
    )
    .unwrap();
    let err = switchyard_core::server::start(second)
        .await
        .err()
        .expect("second open must fail");
    assert!(err.to_string().contains("storage at"), "{err}");
    let dir = gw.stop().await;
    let gw = Gateway::start_in(&cfg, dir).await;
    let resp = gw.chat(&chat_body("m", "hi")).await;
    assert_eq!(resp.status(), 200);
}

/// Time to the first streamed event, direct from the mock and through the gateway, for the same
/// scripted upstream (first token after 200 ms): the gateway adds next to nothing.
#[actix_rt::test]
async fn the_first_token_is_not_held_back() {
    let mock = MockServer::start_local(MockConfig {
        ttft: Latency::Fixed(200),
        itl: Latency::Fixed(50),
        reply_words: 5,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(&chain_config("m", &[mock.openai_base_url()])).await;
    let c = client();
    async fn first_event(c: &reqwest::Client, url: String, model: &str) -> Duration {
        let start = Instant::now();
        let resp = c
            .post(url)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": true}))
            .send()
            .await
            .unwrap();
        let events = read_sse(resp, start).await;
        events[0].at
    }
    let mut direct = Vec::new();
    let mut via = Vec::new();
    for _ in 0..5 {
        direct.push(
            first_event(
                &c,
                format!("{}/chat/completions", mock.openai_base_url()),
                "x",
            )
            .await,
        );
        via.push(first_event(&c, gw.url("/v1/chat/completions"), "m").await);
    }
    direct.sort();
    via.sort();
    let added = via[2].saturating_sub(direct[2]);
    eprintln!(
        "time to first event: direct {:?}, through the gateway {:?} (median added {added:?})",
        direct[2], via[2]
    );
    assert!(
        added < Duration::from_millis(25),
        "gateway added {added:?} to the first token"
    );
}
