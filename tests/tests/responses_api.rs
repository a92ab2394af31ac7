//! OpenAI's Responses API at the edge (`POST /v1/responses`): served through every upstream wire
//! format, streamed as Responses events as the upstream sends them, replayed from the cache as
//! the same events, and refused in OpenAI's error shape where it needs state we do not keep.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

fn config(kind: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[server]\nworkers = 2\n[providers.up]\ntype = \"{kind}\"\nbase_url = \"{base_url}\"\nmax_retries = 0\nlimit_wait_ms = 0\n\
         [models.m]\ntargets = [{{ provider = \"up\", model = \"upstream-model\" }}]\n{extra}"
    )
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/responses"))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// `(event name, data, arrival)` of each event of a Responses stream.
async fn events(resp: reqwest::Response, start: Instant) -> Vec<(String, Value, Duration)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(bytes) = body.next().await {
        buf.push_str(std::str::from_utf8(&bytes.unwrap()).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_owned();
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap();
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name.as_str(), "event name and type agree");
            out.push((name, data, start.elapsed()));
        }
    }
    out
}

fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap().iter())
        .filter_map(|p| p["text"].as_str())
        .collect()
}

#[actix_rt::test]
async fn a_response_is_served_through_every_upstream_format() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    for (kind, url) in [
        ("openai", mock.openai_base_url()),
        ("anthropic", mock.anthropic_base_url()),
        ("gemini", mock.gemini_base_url()),
    ] {
        let gw = Gateway::start(&config(kind, &url, "")).await;
        let body = json!({"model": "m", "instructions": "be kind",
            "input": "say something #mock{\"reply\": \"You are doing great\"}", "max_output_tokens": 20});
        let resp = post(&gw, &body).await;
        assert_eq!(resp.status(), 200, "{kind}");
        assert_eq!(resp.headers()["x-switchyard-provider"], "up");
        let r: Value = resp.json().await.unwrap();
        assert_eq!(r["object"], "response", "{kind}: {r}");
        assert!(r["id"].as_str().unwrap().starts_with("resp_"), "{r}");
        assert_eq!(r["status"], "completed", "{kind}: {r}");
        assert_eq!(output_text(&r), "You are doing great", "{kind}");
        assert_eq!(r["usage"]["output_tokens"], 4, "{kind}: {r}");
        assert_eq!(
            r["usage"]["total_tokens"].as_u64(),
            Some(
                r["usage"]["input_tokens"].as_u64().unwrap()
                    + r["usage"]["output_tokens"].as_u64().unwrap()
            )
        );
        assert_eq!(r["instructions"], "be kind");
        assert_eq!(r["max_output_tokens"], 20);
    }
}

#[actix_rt::test]
async fn the_upstream_receives_an_ordinary_chat_request() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&config("openai", &mock.openai_base_url(), "")).await;
    let body = json!({"model": "m", "instructions": "sys",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"role": "user", "content": "thanks #mock{\"echo\": true}"}
        ],
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}],
        "text": {"format": {"type": "json_object"}},
        "store": true, "truncation": "auto", "max_output_tokens": 30, "max_tool_calls": 3,
        "top_logprobs": 2});
    let r: Value = post(&gw, &body).await.json().await.unwrap();
    let wire: Value = serde_json::from_str(&output_text(&r)).unwrap();
    let roles: Vec<&str> = wire["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "user"],
        "{wire}"
    );
    assert_eq!(
        wire["messages"][2]["tool_calls"][0]["function"]["name"],
        "weather"
    );
    assert_eq!(wire["messages"][3]["tool_call_id"], "call_1");
    assert_eq!(wire["tools"][0]["function"]["name"], "weather");
    assert_eq!(wire["response_format"]["type"], "json_object");
    assert_eq!(wire["max_tokens"], 30);
    assert_eq!(
        (&wire["logprobs"], &wire["top_logprobs"]),
        (&json!(true), &json!(2))
    );
    for field in [
        "input",
        "instructions",
        "store",
        "truncation",
        "text",
        "max_output_tokens",
        "max_tool_calls",
    ] {
        assert!(
            wire.get(field).is_none(),
            "{field} reached the upstream: {wire}"
        );
    }
}

#[actix_rt::test]
async fn a_tool_call_comes_back_as_a_function_call_item() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&config("openai", &mock.openai_base_url(), "")).await;
    let knob = r##"#mock{"tool_call": {"name": "weather", "arguments": {"city": "Oslo"}}}"##;
    let tools = json!([{"type": "function", "name": "weather", "parameters": {"type": "object"}}]);
    let r: Value = post(
        &gw,
        &json!({"model": "m", "input": format!("weather in Oslo {knob}"), "tools": tools}),
    )
    .await
    .json()
    .await
    .unwrap();
    let call = &r["output"][0];
    assert_eq!(call["type"], "function_call", "{r}");
    assert_eq!(call["name"], "weather");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Oslo"}));
    assert!(call["call_id"].as_str().is_some_and(|c| !c.is_empty()));

    let body = json!({"model": "m", "input": format!("weather in Oslo {knob}"), "tools": tools, "stream": true});
    let ev = events(post(&gw, &body).await, Instant::now()).await;
    let args: String = ev
        .iter()
        .filter(|(n, ..)| n == "response.function_call_arguments.delta")
        .map(|(_, d, _)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Oslo"})
    );
    let done = &ev.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["arguments"].as_str(), Some(args.as_str()));
}

#[actix_rt::test]
async fn a_stream_arrives_as_the_upstream_sends_it_and_a_cache_hit_replays_it() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&config(
        "openai",
        &mock.openai_base_url(),
        "[cache]\nsemantic = false\n",
    ))
    .await;
    let body = json!({"model": "m", "stream": true, "temperature": 0,
        "input": "tell me #mock{\"reply_words\": 6, \"ttft\": 50, \"itl\": 150}"});
    let start = Instant::now();
    let resp = post(&gw, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-cache"], "miss");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let ev = events(resp, start).await;
    let deltas: Vec<&(String, Value, Duration)> = ev
        .iter()
        .filter(|(n, ..)| n == "response.output_text.delta")
        .collect();
    assert_eq!(deltas.len(), 6, "{ev:?}");
    // Deltas arrive as the upstream sends them, ~150 ms apart, not all at the end.
    let spread = deltas[5].2 - deltas[0].2;
    assert!(spread >= Duration::from_millis(500), "spread {spread:?}");
    let text: String = deltas
        .iter()
        .map(|(_, d, _)| d["delta"].as_str().unwrap())
        .collect();
    let (last, done, _) = ev.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(output_text(&done["response"]), text);
    let seq: Vec<u64> = ev
        .iter()
        .map(|(_, d, _)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seq, (0..ev.len() as u64).collect::<Vec<_>>());

    let resp = post(&gw, &body).await;
    assert_eq!(resp.headers()["x-switchyard-cache"], "hit_exact");
    let replay = events(resp, Instant::now()).await;
    // The same sequence of events; the stored answer replays in one delta.
    let names = |e: &[(String, Value, Duration)]| {
        let mut v: Vec<String> = e.iter().map(|(n, ..)| n.clone()).collect();
        v.dedup();
        v
    };
    assert_eq!(names(&replay), names(&ev));
    assert_eq!(output_text(&replay.last().unwrap().1["response"]), text);
}

#[actix_rt::test]
async fn errors_come_in_openai_shape() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&config("openai", &mock.openai_base_url(), "")).await;
    let cases = [
        (json!({"model": "m"}), 400, Some("input")),
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
            400,
            Some("previous_response_id"),
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
            400,
            Some("tools[0].type"),
        ),
        (
            json!({"model": "m", "input": [{"role": "wizard", "content": "x"}]}),
            400,
            Some("input[0].role"),
        ),
        (
            json!({"model": "m", "input": "x", "temperature": 7}),
            400,
            Some("temperature"),
        ),
        (json!({"model": "m", "input": 5}), 400, Some("input")),
        (json!({"model": "nope", "input": "x"}), 404, None),
        (
            json!({"model": "m", "input": "x #mock{\"fault\": \"status503\"}"}),
            502,
            None,
        ),
    ];
    for (body, status, param) in cases {
        let resp = post(&gw, &body).await;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{err}"
        );
        if let Some(p) = param {
            assert_eq!(err["error"]["param"], p, "{err}");
            assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
        }
    }
    let resp = client().get(gw.url("/v1/responses")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let resp = client()
        .get(gw.url("/v1/responses/resp_123/input_items"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not store responses"),
        "{err}"
    );
}
