//! Local inference through the daemon, with the real MiniLM weights (fetched by
//! scripts/fetch-models.sh): embeddings, admission control, panic recovery, readiness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// One model-loading gateway at a time in this test binary: they are large, and the memory
/// check below must see only its own traffic.
static SERIAL: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));

fn local_config(extra: &str) -> String {
    // Tests never depend on the hub: weights come from scripts/fetch-models.sh.
    format!("[server]\nworkers = 2\n[local]\nenabled = true\nhub_download = false\n{extra}\n")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
        * b.iter().map(|x| x * x).sum::<f32>().sqrt())
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

async fn embed(gw: &Gateway, body: Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/embeddings"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[actix_rt::test]
async fn embeddings_match_the_reference_in_both_encodings() {
    let _serial = SERIAL.lock().await;
    let gw = Gateway::start(&local_config("")).await;
    gw.wait_ready().await;
    let input = json!(["A man is eating food.", "A man is eating a piece of bread."]);
    let resp = embed(&gw, json!({"model": "local/minilm", "input": input})).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "local/minilm");
    let a = floats(&body["data"][0]["embedding"]);
    let b = floats(&body["data"][1]["embedding"]);
    assert_eq!(a.len(), 384);
    let c = cosine(&a, &b);
    assert!((c - 0.7553).abs() < 0.001, "cosine {c}");
    assert_eq!(body["data"][1]["index"], 1);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() >= 16);

    let resp = embed(
        &gw,
        json!({"model": "local/minilm", "input": input, "encoding_format": "base64"}),
    )
    .await;
    let body: Value = resp.json().await.unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded, a);

    let models: Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "local/minilm"),
        "{models}"
    );
}

#[actix_rt::test]
async fn bad_embedding_input_is_a_400() {
    let _serial = SERIAL.lock().await;
    let gw = Gateway::start(&local_config("")).await;
    gw.wait_ready().await;
    for (body, param) in [
        (json!({"model": "local/minilm", "input": []}), "input"),
        (
            json!({"model": "local/minilm", "input": ["ok", ""]}),
            "input[1]",
        ),
        (
            json!({"model": "local/minilm", "input": [1, 2, 3]}),
            "input",
        ),
        (
            json!({"model": "local/minilm", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": "local/minilm", "input": "x", "dimensions": 100}),
            "dimensions",
        ),
    ] {
        let resp = embed(&gw, body.clone()).await;
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
    }
    let resp = embed(&gw, json!({"model": "local/nope", "input": "x"})).await;
    assert_eq!(resp.status(), 404);
}

#[actix_rt::test]
async fn a_panicking_worker_fails_one_request_and_is_rebuilt() {
    let _serial = SERIAL.lock().await;
    let gw = Gateway::start(&local_config("fault_injection = true")).await;
    gw.wait_ready().await;
    let resp = embed(
        &gw,
        json!({"model": "local/minilm", "input": "__switchyard_panic__"}),
    )
    .await;
    assert_eq!(resp.status(), 500);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{err}"
    );
    for _ in 0..3 {
        let resp = embed(
            &gw,
            json!({"model": "local/minilm", "input": "still working?"}),
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        client()
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[actix_rt::test]
async fn a_full_queue_answers_429_and_nothing_hangs() {
    let _serial = SERIAL.lock().await;
    let gw = Gateway::start(&local_config("queue = 4")).await;
    gw.wait_ready().await;
    let before = rss_kib();
    let c = client();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (c, url, text) = (c.clone(), gw.url("/v1/embeddings"), text.clone());
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .json(&json!({"model": "local/minilm", "input": text}))
                .send()
                .await
                .unwrap();
            let retry = r.headers().get("retry-after").is_some();
            (r.status().as_u16(), retry)
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        let (status, retry) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("no hang")
            .unwrap();
        if status == 429 {
            assert!(retry, "429 without Retry-After");
        }
        *counts.entry(status).or_insert(0) += 1;
    }
    let after = rss_kib();
    eprintln!(
        "200 concurrent embeddings with queue 4: {counts:?} in {:?}; RSS {before} -> {after} KiB",
        start.elapsed()
    );
    assert!(counts.get(&429).copied().unwrap_or(0) > 0, "{counts:?}");
    assert!(counts.get(&200).copied().unwrap_or(0) >= 4, "{counts:?}");
    assert_eq!(counts.values().sum::<i32>(), 200);
    assert!(
        after < before + 300 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
}

#[actix_rt::test]
async fn missing_weights_leave_the_daemon_up_and_say_why() {
    let _serial = SERIAL.lock().await;
    let empty = tempfile::tempdir().unwrap();
    let cfg = local_config(&format!("models_dir = \"{}\"", empty.path().display()));
    let gw = Gateway::start(&cfg).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready: Value = client()
            .get(gw.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["local"]["local/minilm"]["state"] == "failed" {
            assert_eq!(ready["status"], "degraded");
            assert!(ready["local"]["local/minilm"]["detail"]
                .as_str()
                .unwrap()
                .contains("fetch-models"));
            break;
        }
        assert!(Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = embed(&gw, json!({"model": "local/minilm", "input": "x"})).await;
    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "model_not_ready");
}

#[actix_rt::test]
async fn local_chat_answers_whole_and_streamed() {
    let _serial = SERIAL.lock().await;
    let gw = Gateway::start(&local_config("")).await;
    gw.wait_ready().await;
    let ask = json!({"model": "local/smollm2", "max_tokens": 12,
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]});
    let resp = gw.chat(&ask).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "local");
    assert!(resp.headers().contains_key("x-switchyard-confidence"));
    let body: Value = resp.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("Paris"), "{body}");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 10);

    let mut stream_req = ask.clone();
    stream_req["stream"] = json!(true);
    stream_req["stream_options"] = json!({"include_usage": true});
    let resp = gw.chat(&stream_req).await;
    assert_eq!(resp.status(), 200);
    let events = read_sse(resp, Instant::now()).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert_eq!(
        streamed_text(&events),
        text,
        "greedy: streamed equals whole"
    );
    assert!(events
        .iter()
        .any(|e| e.data.contains("\"finish_reason\":\"stop\"")));
    assert!(events.iter().any(|e| e.data.contains("\"usage\"")));

    // stop sequences end the answer before them
    let mut stop_req = json!({"model": "local/smollm2", "max_tokens": 60, "stop": ["5"],
        "messages": [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]});
    let body: Value = gw.chat(&stop_req).await.json().await.unwrap();
    let counted = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(counted.contains('4') && !counted.contains('5'), "{body}");
    stop_req["stream"] = json!(true);
    let events = read_sse(gw.chat(&stop_req).await, Instant::now()).await;
    assert_eq!(streamed_text(&events), counted);

    // the Anthropic dialect reaches the same model
    let msg = json!({"model": "local/smollm2", "max_tokens": 12,
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]});
    let body: Value = client()
        .post(gw.url("/v1/messages"))
        .json(&msg)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["content"][0]["text"], text.as_str(), "{body}");

    let models: Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "local/smollm2"));

    let tools = json!({"model": "local/smollm2", "tools": [{"type": "function", "function": {"name": "f"}}],
        "messages": [{"role": "user", "content": "x"}]});
    let resp = gw.chat(&tools).await;
    assert_eq!(resp.status(), 400);
}

#[actix_rt::test]
async fn a_panicking_generation_worker_is_rebuilt() {
    let _serial = SERIAL.lock().await;
    let gw = Gateway::start(&local_config("fault_injection = true")).await;
    gw.wait_ready().await;
    let bad = json!({"model": "local/smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "__switchyard_panic__"}]});
    let resp = gw.chat(&bad).await;
    assert_eq!(resp.status(), 500);
    let good = json!({"model": "local/smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]});
    let resp = gw.chat(&good).await;
    assert_eq!(resp.status(), 200);
}

#[actix_rt::test]
async fn the_local_model_is_the_last_resort_when_every_upstream_fails() {
    let _serial = SERIAL.lock().await;
    let cfg = format!(
        "[server]\nworkers = 2\n[providers.down]\ntype = \"openai\"\nbase_url = \"{}\"\nmax_retries = 0\n\
         [models.m]\ntargets = [{{ provider = \"down\", model = \"x\" }}]\nlocal_fallback = true\n\
         [models.strict]\ntargets = [{{ provider = \"down\", model = \"x\" }}]\n[local]\nenabled = true\nhub_download = false\n",
        dead_url()
    );
    let gw = Gateway::start(&cfg).await;
    gw.wait_ready().await;
    let ask = |model: &str| json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello."}]});
    let resp = gw.chat(&ask("m")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "local");
    let mut streamed = ask("m");
    streamed["stream"] = json!(true);
    let resp = gw.chat(&streamed).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        read_sse(resp, Instant::now()).await.last().unwrap().data,
        "[DONE]"
    );
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-switchyard-local-fallback", "off")
        .json(&ask("m"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "the request opted out");
    let resp = gw.chat(&ask("strict")).await;
    assert_eq!(resp.status(), 503, "not configured for this model");
}

#[actix_rt::test]
async fn classify_and_summarize_over_http() {
    let _serial = SERIAL.lock().await;
    let gw = Gateway::start(&local_config("")).await;
    gw.wait_ready().await;
    let rows: Vec<Value> = include_str!("../../models/tests/data/support_tickets.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let labels = json!([
        {"name": "billing", "description": "payments, charges, invoices, refunds and prices"},
        {"name": "technical", "description": "software bugs, errors, crashes and performance problems"},
        {"name": "shipping", "description": "delivery of orders, parcels, couriers and tracking"},
        {"name": "account", "description": "login, passwords, profile settings and account security"}
    ]);
    let input: Vec<&str> = rows.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let resp = client()
        .post(gw.url("/v1/classify"))
        .json(&json!({"input": input, "labels": labels}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let correct = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&rows)
        .filter(|(d, r)| d["label"] == r["label"])
        .count();
    eprintln!("/v1/classify accuracy: {correct}/{}", rows.len());
    assert!(correct * 4 >= rows.len() * 3, "{correct}/{}", rows.len());
    assert!(body["data"][0]["margin"].as_f64().unwrap() > 0.0);

    let bad = client()
        .post(gw.url("/v1/classify"))
        .json(&json!({"input": "x", "labels": ["only-one"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let text =
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was built between \
                1887 and 1889 as the entrance to the 1889 World's Fair and is 330 metres tall.";
    let resp = client()
        .post(gw.url("/v1/summarize"))
        .json(&json!({"input": text, "max_tokens": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let summary = body["summary"].as_str().unwrap();
    assert!(
        summary.contains("Eiffel") && summary.contains("Paris"),
        "{body}"
    );

    let resp = client()
        .post(gw.url("/v1/summarize"))
        .json(&json!({"input": text, "max_tokens": 60, "stream": true}))
        .send()
        .await
        .unwrap();
    let sse = resp.text().await.unwrap();
    let names: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names, vec!["progress", "summary"], "{sse}");

    let empty = client()
        .post(gw.url("/v1/summarize"))
        .json(&json!({"input": "  "}))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 400);
}

/// A long summary runs chunk by chunk at the back of the model's queue: a chat request sent
/// while it runs is answered long before the summary ends, instead of waiting for all of it.
#[actix_rt::test]
async fn a_long_summary_does_not_starve_chat() {
    let _serial = SERIAL.lock().await;
    let gw = Gateway::start(&local_config("")).await;
    gw.wait_ready().await;
    let doc: String = (0..80)
        .map(|i| {
            format!(
                "Entry {i}: the harbour master logged {} ships and {} storms that week. ",
                i * 7 % 31,
                i % 5
            )
        })
        .collect();
    let slow = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let resp = slow
        .post(gw.url("/v1/summarize"))
        .json(&json!({"input": doc, "max_tokens": 32, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    // Wait for the first chunk to finish, then ask a short chat question.
    while !seen.contains("event: progress") {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    let url = gw.url("/v1/chat/completions");
    let chat = tokio::spawn(async move {
        let r = slow
            .post(url)
            .json(&json!({"model": "local/smollm2", "max_tokens": 4,
                "messages": [{"role": "user", "content": "Say hi."}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
        Instant::now()
    });
    while let Some(chunk) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let summary_done = Instant::now();
    let chat_done = chat.await.unwrap();
    assert!(seen.contains("event: summary"), "{seen}");
    let chunks = seen.matches("event: progress").count();
    assert!(chunks >= 3, "the document spans several chunks: {chunks}");
    assert!(
        chat_done < summary_done,
        "the chat answer waited for the whole summary"
    );
}
