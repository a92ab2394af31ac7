//! Async jobs through the daemon: chat and embeddings jobs with progress and a signed webhook,
//! idempotency, cancellation, bad input, the Batch API over HTTP, and a kill -9 with 1,000 jobs
//! queued or running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn submit(gw: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{gw}/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A batch once it has completed (fails the test after 30 s).
async fn wait_batch(base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = get_json(format!("{base}/v1/batches/{id}")).await;
        if b["status"] == "completed" {
            return b;
        }
        assert!(Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_final(gw: &str, id: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let j = get_json(format!("{gw}/v1/jobs/{id}")).await;
        let s = j["state"].as_str().unwrap_or_default().to_owned();
        if !matches!(s.as_str(), "queued" | "running") {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} not done in {secs} s: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Verify a Standard Webhooks signature the way a receiver does.
fn verify(c: &Captured) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let (id, ts) = (&c.headers["webhook-id"], &c.headers["webhook-timestamp"]);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&c.body);
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    c.headers["webhook-signature"]
        .split(' ')
        .any(|s| s == format!("v1,{want}"))
}

#[actix_rt::test]
async fn jobs_run_report_progress_call_back_and_refuse_bad_input() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let hook = capture_server(json!({"ok": true})).await;
    let gw = Gateway::start(&format!(
        "{}\n[local]\nenabled = true\nhub_download = false\n",
        chain_config("m", &[mock.openai_base_url()])
    ))
    .await;
    gw.wait_ready().await;
    let base = gw.url("");

    // A chat job with a webhook.
    let r = submit(
        &base,
        json!({"operation": "chat",
        "request": {"model": "m", "messages": [{"role": "user", "content": "hello there"}]},
        "webhook": {"url": format!("{}/hook", hook.url), "secret": SECRET}, "priority": 7}),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/v1/jobs/job_"));
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["state"], "queued");
    assert!(
        job["webhook"].get("secret").is_none(),
        "a given secret is never echoed"
    );
    let id = job["id"].as_str().unwrap().to_owned();
    let done = wait_final(&base, &id, 30).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        done["result"]["choices"][0]["message"]["content"].is_string(),
        "{done}"
    );
    assert_eq!(done["progress"]["done"], 1);
    let got = hook
        .wait_for("webhook", |c| {
            c.headers
                .get("webhook-id")
                .is_some_and(|h| h == &format!("msg_{id}"))
        })
        .await;
    assert!(verify(&got), "signature: {:?}", got.headers);
    let payload: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(payload["type"], "job.succeeded");
    assert_eq!(payload["data"]["id"], id.as_str());
    let seen = wait_final(&base, &id, 5).await;
    assert_eq!(seen["webhook"]["delivered"], true, "{seen}");

    // Embeddings over 150 inputs: 3 units, progress events, one result in input order.
    let inputs: Vec<String> = (0..150).map(|i| format!("sentence number {i}")).collect();
    let r = submit(&base, json!({"operation": "embeddings", "input": inputs})).await;
    assert_eq!(r.status(), 202);
    let id2 = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = client()
        .get(format!("{base}/v1/jobs/{id2}/events"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("event: progress"), "{events}");
    assert!(events.contains("event: done"), "{events}");
    let done = wait_final(&base, &id2, 60).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let data = done["result"]["data"].as_array().unwrap();
    assert_eq!(data.len(), 150);
    assert!(data.iter().enumerate().all(|(i, d)| d["index"] == i));
    assert_eq!(done["progress"]["total"], 3);

    // Idempotency: the same key gives the same job.
    let body = json!({"operation": "chat", "idempotency_key": "order-42",
        "request": {"model": "m", "messages": [{"role": "user", "content": "once"}]}});
    let a = submit(&base, body.clone()).await;
    assert_eq!(a.status(), 202);
    let b = submit(&base, body).await;
    assert_eq!(b.status(), 200);
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_eq!(a["id"], b["id"]);

    // Bad input: each a clear 4xx naming the parameter.
    for (body, param) in [
        (json!({"operation": "translate", "input": "x"}), "operation"),
        (json!({"input": "x"}), "operation"),
        (
            json!({"operation": "chat", "request": {"model": "m", "messages": []},
            "webhook": {"url": "not a url"}}),
            "webhook.url",
        ),
        (
            json!({"operation": "chat", "request": {"model": "m", "messages": []},
            "webhook": {"url": "http://x.test/h", "secret": "hunter2"}}),
            "webhook.secret",
        ),
        (json!({"operation": "embeddings", "input": []}), "input"),
        (
            json!({"operation": "requests", "requests": [{"url": "/v1/models", "body": {}}]}),
            "requests[0].url",
        ),
        (
            json!({"operation": "chat", "request": {"messages": []}}),
            "request",
        ),
        (
            json!({"operation": "chat", "request": {"model": "m"}, "priority": 12}),
            "priority",
        ),
        (
            json!({"operation": "chat", "request": {"model": "m"}, "deadline": 5}),
            "deadline",
        ),
    ] {
        let r = submit(&base, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
    }
    let r = client()
        .post(format!("{base}/v1/jobs"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .get(format!("{base}/v1/jobs/job_nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Cancel: a slow job is cancelled; cancelling again is a conflict. The queue keeps working.
    mock.set_config(MockConfig {
        latency: Latency::Fixed(3000),
        ..MockConfig::default()
    });
    let r = submit(
        &base,
        json!({"operation": "chat",
        "request": {"model": "m", "messages": [{"role": "user", "content": "slow"}]}}),
    )
    .await;
    let slow = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client()
        .delete(format!("{base}/v1/jobs/{slow}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "cancelled");
    let r = client()
        .delete(format!("{base}/v1/jobs/{slow}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    mock.set_config(MockConfig::default());
    let r = submit(
        &base,
        json!({"operation": "chat",
        "request": {"model": "m", "messages": [{"role": "user", "content": "after"}]}}),
    )
    .await;
    let after = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait_final(&base, &after, 30).await["state"], "succeeded");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(wait_final(&base, &slow, 5).await["state"], "cancelled");
    let list = get_json(format!("{base}/v1/jobs?state=cancelled")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");

    // The command line: submit and watch to the end, then list.
    let file = gw.dir.path().join("job.json");
    std::fs::write(
        &file,
        json!({"operation": "chat", "request": {"model": "m",
            "messages": [{"role": "user", "content": "from the terminal"}]}})
        .to_string(),
    )
    .unwrap();
    // Off this thread: the mock upstream is served by this test's runtime.
    let (b, f) = (base.clone(), file.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(daemon_binary())
            .args(["jobs", "submit", "--watch", "--url", &b])
            .arg(&f)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(": succeeded"), "{text}");
    assert!(text.contains("chat.completion"), "{text}");
    let out = std::process::Command::new(daemon_binary())
        .args(["jobs", "list", "--state", "cancelled", "--url", &base])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&slow), "{text}");
}

fn multipart(purpose: &str, name: &str, data: &str) -> (String, Vec<u8>) {
    let boundary = "switchyardtestboundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{data}\r\n--{boundary}--\r\n"
    );
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

#[actix_rt::test]
async fn batches_run_every_line_and_report_bad_lines_in_the_error_file() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&format!(
        "{}\n[jobs]\nmax_file_bytes = 4096\n",
        chain_config("m", &[mock.openai_base_url()])
    ))
    .await;
    let base = gw.url("");
    let line = |id: &str, text: &str| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": text}]}})
        .to_string()
    };
    let file = [
        line("a", "first"),
        line("b", "second"),
        "{\"custom_id\": \"broken\", \"method\": \"POST\"".to_owned(),
        line("c", "third"),
    ]
    .join("\n");
    let (ct, body) = multipart("batch", "in.jsonl", &file);
    let r = client()
        .post(format!("{base}/v1/files"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let f: Value = r.json().await.unwrap();
    assert_eq!(f["object"], "file");
    let r = client()
        .post(format!("{base}/v1/batches"))
        .json(
            &json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h", "metadata": {"run": "t"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    let id = b["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("batch_"));
    let b = wait_batch(&base, &id).await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 4, "completed": 3, "failed": 1})
    );
    let out = client()
        .get(format!(
            "{base}/v1/files/{}/content",
            b["output_file_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ids: BTreeSet<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            assert_eq!(v["response"]["status_code"], 200);
            v["custom_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids, ["a", "b", "c"].iter().map(|s| s.to_string()).collect());
    let err = client()
        .get(format!(
            "{base}/v1/files/{}/content",
            b["error_file_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(err.contains("line 3"), "{err}");

    // Bad input: wrong purpose, too large, unknown file, bad endpoint.
    let (ct, body) = multipart("fine-tune", "in.jsonl", &line("a", "x"));
    let r = client()
        .post(format!("{base}/v1/files"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let big = (0..100)
        .map(|i| line(&i.to_string(), "padding padding padding"))
        .collect::<Vec<_>>()
        .join("\n");
    let (ct, body) = multipart("batch", "big.jsonl", &big);
    let r = client()
        .post(format!("{base}/v1/files"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = client()
        .post(format!("{base}/v1/batches"))
        .json(&json!({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .post(format!("{base}/v1/batches"))
        .json(&json!({"input_file_id": f["id"], "endpoint": "/v1/moderations", "completion_window": "24h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// A Batch API file of Responses calls: each line answered as a Response object, a streamed line
/// refused into the error file.
#[actix_rt::test]
async fn a_batch_of_responses_lines_runs_and_streamed_lines_are_refused() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&chain_config("m", &[mock.openai_base_url()])).await;
    let base = gw.url("");
    let line = |id: &str, stream: bool| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/responses",
            "body": {"model": "m", "input": format!("say {id} #mock{{\"reply\": \"answer {id}\"}}"), "stream": stream}})
        .to_string()
    };
    let file = [line("a", false), line("b", false), line("s", true)].join("\n");
    let (ct, body) = multipart("batch", "in.jsonl", &file);
    let f: Value = client()
        .post(format!("{base}/v1/files"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = client()
        .post(format!("{base}/v1/batches"))
        .json(&json!({"input_file_id": f["id"], "endpoint": "/v1/responses", "completion_window": "24h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = wait_batch(&base, &id).await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 3, "completed": 2, "failed": 1})
    );
    let out = get_text(format!(
        "{base}/v1/files/{}/content",
        b["output_file_id"].as_str().unwrap()
    ))
    .await;
    for l in out.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let body = &v["response"]["body"];
        assert_eq!(body["object"], "response", "{v}");
        let want = format!("answer {}", v["custom_id"].as_str().unwrap());
        assert_eq!(body["output"][0]["content"][0]["text"], want.as_str());
    }
    let err = get_text(format!(
        "{base}/v1/files/{}/content",
        b["error_file_id"].as_str().unwrap()
    ))
    .await;
    assert!(err.contains("cannot stream"), "{err}");
}

/// kill -9 while 1,000 small jobs are queued or running: after a restart every job finishes,
/// none is lost, and every webhook arrives (at least once) under its stable id.
#[actix_rt::test]
async fn a_kill_during_a_thousand_jobs_loses_none() {
    let mock = MockServer::start_local(MockConfig {
        latency: Latency::Fixed(20),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let hook = capture_server(json!({"ok": true})).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("switchyard.toml");
    let cfg = chain_config("m", &[mock.openai_base_url()]).replace(
        "[server]\n",
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    ) + "[local]\nenabled = false\n[jobs]\nconcurrency = 16\n";
    std::fs::write(&file, cfg).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_daemon(&file, &[]);
    wait_healthy(&base).await;
    let mut ids = Vec::new();
    for i in 0..1000 {
        let r = submit(&base, json!({"operation": "chat",
            "request": {"model": "m", "messages": [{"role": "user", "content": format!("job {i}")}]},
            "webhook": {"url": format!("{}/hook", hook.url), "secret": SECRET}})).await;
        assert_eq!(r.status(), 202);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let before = get_json(format!("{base}/v1/jobs?state=succeeded&limit=1000")).await["data"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        before < 1000,
        "the kill must land while work is left ({before} done)"
    );
    child.kill().unwrap();
    let _ = child.wait();
    let mut child = spawn_daemon(&file, &[]);
    wait_healthy(&base).await;
    let mut states = BTreeMap::<String, u64>::new();
    for id in &ids {
        let j = wait_final(&base, id, 120).await;
        *states
            .entry(j["state"].as_str().unwrap().to_owned())
            .or_default() += 1;
        assert!(
            j["result"]["choices"][0]["message"]["content"].is_string(),
            "{j}"
        );
    }
    assert_eq!(states.get("succeeded"), Some(&1000), "{states:?}");
    // Every webhook under its job's stable id.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: BTreeSet<String> = hook
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|c| verify(c))
            .map(|c| c.headers["webhook-id"].clone())
            .collect();
        let missing = ids
            .iter()
            .filter(|id| !seen.contains(&format!("msg_{id}")))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} webhooks never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
}
