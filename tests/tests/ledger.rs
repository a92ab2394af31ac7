//! The ledger and observability end to end: exact token and cost totals per user and per day
//! after a scripted mixed run, `/metrics` accepted by `promtool`, budget and latency-budget
//! events (stored and delivered to a signed webhook), and a `kill -9` that loses at most one
//! flush window of records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ADMIN_KEY: &str = "sk-acme-admin";
const GLOBEX_KEY: &str = "sk-globex";

/// 1.5 $/M prompt tokens and 2.25 $/M completion tokens, in picodollars per token.
const IN_PUSD: u64 = 1_500_000;
const OUT_PUSD: u64 = 2_250_000;

fn keyed_config(mock: &MockServer, extra: &str) -> String {
    format!(
        r#"{chain}
[[auth.keys]]
id = "acme-admin"
tenant = "acme"
hash = "{admin}"
admin = true
[[auth.keys]]
id = "globex-app"
tenant = "globex"
hash = "{globex}"
[ledger]
flush_ms = 50
[prices.models."m-upstream"]
input = 1.5
output = 2.25
{extra}
"#,
        chain = chain_config("m", &[mock.openai_base_url()]),
        admin = switchyard_core::config::hash_key(ADMIN_KEY),
        globex = switchyard_core::config::hash_key(GLOBEX_KEY),
    )
}

async fn post(
    gw: &Gateway,
    key: &str,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut rb = client().post(gw.url(path)).bearer_auth(key).json(&body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

async fn admin_get(gw: &Gateway, path: &str) -> Value {
    let r = client()
        .get(gw.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

#[derive(Default, Clone, Copy, Debug, PartialEq)]
struct Expect {
    requests: u64,
    errors: u64,
    prompt: u64,
    completion: u64,
    cost: u64,
}

impl Expect {
    fn add(&mut self, prompt: u64, completion: u64, ok: bool) {
        self.requests += 1;
        self.errors += u64::from(!ok);
        self.prompt += prompt;
        self.completion += completion;
        self.cost += prompt * IN_PUSD + completion * OUT_PUSD;
    }
}

fn check(totals: &Value, want: &Expect, what: &str) {
    let got = Expect {
        requests: totals["requests"].as_u64().unwrap(),
        errors: totals["errors"].as_u64().unwrap(),
        prompt: totals["prompt_tokens"].as_u64().unwrap(),
        completion: totals["completion_tokens"].as_u64().unwrap(),
        cost: totals["cost_pusd"].as_u64().unwrap(),
    };
    assert_eq!(&got, want, "{what}: {totals}");
}

/// Must-show 1: a scripted mixed run (both dialects, streamed and not, usage asked for or not,
/// users from the body and the header, tags, two tenants, failures) against the mock, whose
/// usage is known: word counts of the prompt, and 12 reply words.
#[actix_rt::test]
async fn totals_per_user_and_day_equal_the_expected_values_exactly() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&keyed_config(&mock, "")).await;
    let mut by_user: BTreeMap<&str, Expect> = BTreeMap::new();
    let mut by_tenant: BTreeMap<&str, Expect> = BTreeMap::new();
    let mut by_tag: BTreeMap<&str, Expect> = BTreeMap::new();
    let mut all = Expect::default();
    let mut note = |tenant, user, tag: Option<&'static str>, p, c, ok| {
        by_user.entry(user).or_default().add(p, c, ok);
        by_tenant.entry(tenant).or_default().add(p, c, ok);
        if let Some(t) = tag {
            by_tag.entry(t).or_default().add(p, c, ok);
        }
        all.add(p, c, ok);
    };

    // alice: three non-streamed calls, `user` in the body, one with a known request id.
    for i in 0..3 {
        let id = format!("ledger-alice-{i}");
        let r = post(
            &gw,
            ADMIN_KEY,
            "/v1/chat/completions",
            json!({"model": "m", "user": "alice", "messages": [{"role": "user", "content": "one two three"}]}),
            &[("x-request-id", id.as_str()), ("x-switchyard-tag", "search")],
        )
        .await;
        assert_eq!(r.status(), 200);
        // 3 x 1.5 + 12 x 2.25 micro-dollars, known before the body goes.
        assert_eq!(r.headers()["x-switchyard-cost-usd"], "0.00003150");
        assert_eq!(r.headers()["x-switchyard-cache"], "bypass");
        note("acme", "alice", Some("search"), 3, 12, true);
    }
    // alice again, by header, streamed with the usage chunk asked for.
    let r = post(
        &gw,
        ADMIN_KEY,
        "/v1/chat/completions",
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "four five"}]}),
        &[("x-switchyard-user", "alice")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let generated_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let events = read_sse(r, Instant::now()).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
    note("acme", "alice", None, 4, 12, true);
    // bob: streamed without asking for usage (the gateway still accounts it).
    let r = post(
        &gw,
        ADMIN_KEY,
        "/v1/chat/completions",
        json!({"model": "m", "stream": true, "user": "bob",
               "messages": [{"role": "user", "content": "a b c d e"}]}),
        &[("x-switchyard-tag", "chat")],
    )
    .await;
    let events = read_sse(r, Instant::now()).await;
    assert!(
        !events.iter().any(|e| e.data.contains("\"usage\"")),
        "usage not shown when not asked for"
    );
    note("acme", "bob", Some("chat"), 5, 12, true);
    // bob through the Anthropic dialect, whole and streamed.
    for stream in [false, true] {
        let r = post(
            &gw,
            ADMIN_KEY,
            "/v1/messages",
            json!({"model": "m", "max_tokens": 64, "stream": stream, "system": "you are terse",
                   "messages": [{"role": "user", "content": "hello from anthropic"}]}),
            &[("x-switchyard-user", "bob")],
        )
        .await;
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
        note("acme", "bob", None, 6, 12, true);
    }
    // carol (globex): an unknown model and an invalid request count as calls with no tokens.
    let r = post(
        &gw,
        GLOBEX_KEY,
        "/v1/chat/completions",
        json!({"model": "nope", "user": "carol", "messages": [{"role": "user", "content": "x"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 404);
    note("globex", "carol", None, 0, 0, false);
    let r = post(
        &gw,
        GLOBEX_KEY,
        "/v1/chat/completions",
        json!({"model": "m", "user": "carol", "temperature": 9, "messages": [{"role": "user", "content": "x"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);
    note("globex", "carol", None, 0, 0, false);
    // dave (globex): ten calls at once.
    let calls = (0..10).map(|_| {
        post(
            &gw,
            GLOBEX_KEY,
            "/v1/chat/completions",
            json!({"model": "m", "user": "dave", "messages": [{"role": "user", "content": "six seven eight nine"}]}),
            &[("x-switchyard-tag", "search")],
        )
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status(), 200);
        note("globex", "dave", Some("search"), 4, 12, true);
    }

    // Streams close their record when the body ends, a moment after the client read it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let s = admin_get(&gw, "/admin/stats").await;
        if s["days"][0]["totals"]["requests"] == all.requests || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let day = &stats["days"][0];
    assert_eq!(
        day["day"].as_str().unwrap(),
        chrono_today(),
        "totals are kept per UTC day"
    );
    check(&day["totals"], &all, "all");
    for (user, want) in &by_user {
        check(&day["by"]["user"][*user], want, user);
    }
    for (tenant, want) in &by_tenant {
        check(&day["by"]["tenant"][*tenant], want, tenant);
    }
    for (tag, want) in &by_tag {
        check(&day["by"]["tag"][*tag], want, tag);
    }
    assert_eq!(stats["ledger"]["dropped"], 0);
    assert_eq!(stats["ledger"]["records"], all.requests);
    let p = &stats["latency"]["latency"]["endpoint"]["/v1/chat/completions"]["60s"];
    assert!(p["count"].as_u64().unwrap() >= 15, "{p}");
    assert!(p["p99_ms"].as_f64().unwrap() >= p["p50_ms"].as_f64().unwrap());
    assert!(
        stats["latency"]["overhead"]["all"][""]["60s"]["count"]
            .as_u64()
            .unwrap()
            >= 15
    );

    // One call's full record.
    let r = admin_get(&gw, "/admin/requests/ledger-alice-1").await;
    assert_eq!(r["tenant"], "acme");
    assert_eq!(r["key_id"], "acme-admin");
    assert_eq!(r["user"], "alice");
    assert_eq!(r["tag"], "search");
    assert_eq!(r["endpoint"], "/v1/chat/completions");
    assert_eq!(r["model_requested"], "m");
    assert_eq!(r["model_resolved"], "up0/m-upstream");
    assert_eq!(r["provider"], "up0");
    assert_eq!(r["tier"], "cloud");
    assert_eq!(r["route_reason"], "model_map");
    assert_eq!(r["cache"], "bypass");
    assert_eq!(r["streamed"], false);
    assert_eq!(r["usage_source"], "reported");
    assert_eq!(r["prompt_tokens"], 3);
    assert_eq!(r["completion_tokens"], 12);
    assert_eq!(r["cost_pusd"], 3 * IN_PUSD + 12 * OUT_PUSD);
    assert_eq!(r["status"], 200);
    assert_eq!(r["outcome"], "ok");
    assert!(r["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(r["overhead_ms"].as_f64().unwrap() >= 0.0);
    assert!(r["upstream_ms"].as_f64().unwrap() > 0.0);

    // A gateway-made id (UUIDv7) is found by its time, without an index entry.
    let r = admin_get(&gw, &format!("/admin/requests/{generated_id}")).await;
    assert_eq!(r["streamed"], true);
    assert_eq!(r["prompt_tokens"], 4);

    // Filters.
    let list = admin_get(&gw, "/admin/requests?user=alice").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 4);
    let list = admin_get(&gw, "/admin/requests?status=error").await;
    let errors = list["data"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().any(|e| e["error"] == "model_not_found"));
    let list = admin_get(&gw, "/admin/requests?tenant=globex&status=200&limit=3").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    let list = admin_get(&gw, "/admin/requests?since=2999-01-01T00:00:00Z").await;
    assert!(list["data"].as_array().unwrap().is_empty());

    // A non-admin key may call the API but not read the ledger; bad filters are 400s.
    let r = client()
        .get(gw.url("/admin/stats"))
        .bearer_auth(GLOBEX_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    for bad in [
        "/admin/requests?limit=0",
        "/admin/requests?since=yesterday",
        "/admin/requests?status=maybe",
        "/admin/stats?days=0",
        "/admin/stats?bogus=1",
    ] {
        let r = client()
            .get(gw.url(bad))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{bad}: {body}");
    }
    let r = client()
        .get(gw.url("/admin/requests/no-such-id"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

fn chrono_today() -> String {
    switchyard_core::ledger::today()
}

/// Upstreams that leave `usage` out are still accounted, by counting tokens locally.
#[actix_rt::test]
async fn calls_without_upstream_usage_are_counted_locally() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&keyed_config(&mock, "")).await;
    let r = post(
        &gw,
        ADMIN_KEY,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "count these words please"}],
               "mock": {"omit_usage": true, "reply": "a reply of several words"}}),
        &[("x-request-id", "no-usage")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let rec = admin_get(&gw, "/admin/requests/no-usage").await;
    assert_eq!(
        rec["usage_source"], "estimate",
        "no tokenizer is loaded in this test"
    );
    assert!(rec["prompt_tokens"].as_u64().unwrap() >= 4, "{rec}");
    assert!(rec["completion_tokens"].as_u64().unwrap() >= 4, "{rec}");
    assert!(rec["cost_pusd"].as_u64().unwrap() > 0);
}

/// Must-show 2: `promtool check metrics` accepts `/metrics`.
#[actix_rt::test]
async fn metrics_pass_promtool() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&keyed_config(&mock, "")).await;
    for stream in [false, true] {
        let r = post(
            &gw,
            ADMIN_KEY,
            "/v1/chat/completions",
            json!({"model": "m", "stream": stream, "user": "u", "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await;
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
    }
    let _ = post(
        &gw,
        ADMIN_KEY,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        &[],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for name in [
        "switchyard_requests_total",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "gen_ai_client_token_usage_bucket",
        "switchyard_tokens_total",
        "switchyard_cost_usd_total",
        "switchyard_gateway_overhead_seconds_bucket",
        "switchyard_upstream_breaker_state",
        "switchyard_queue_depth",
        "switchyard_ledger_records_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert!(
        text.contains(r#"model="unknown""#) && !text.contains(r#"model="nope""#),
        "unknown model names do not become label values"
    );
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/setup.sh (Debian package `prometheus`)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected /metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn hook_event(hook: &Capture, kind: &str) -> (Option<String>, Vec<u8>, Value) {
    let c = hook
        .wait_for(&format!("`{kind}` webhook"), |c| {
            serde_json::from_slice::<Value>(&c.body).is_ok_and(|v| v["type"] == kind)
        })
        .await;
    let v = serde_json::from_slice(&c.body).unwrap();
    (c.headers.get("x-switchyard-signature").cloned(), c.body, v)
}

async fn wait_event(gw: &Gateway, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = admin_get(gw, "/admin/events").await;
        if let Some(e) = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == kind)
        {
            return e.clone();
        }
        assert!(Instant::now() < deadline, "no `{kind}` event in 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Must-show 5a: spend budgets warn, then reject (tenant) or downgrade (key); each level
/// crossed is an event, stored and delivered to the signed webhook.
#[actix_rt::test]
async fn budget_levels_raise_events_and_are_enforced() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let hook = capture_server(json!({})).await;
    // Each call: 3 prompt + 12 completion tokens = 4.5 + 27 = 31.5 µ$.
    let extra = format!(
        r#"
[models."cheap"]
targets = [{{ provider = "up0", model = "cheap-upstream" }}]
[budgets.tenants.globex]
soft_usd = 0.00005
hard_usd = 0.00009
[budgets.keys.acme-admin]
hard_usd = 0.00003
on_hard = "downgrade"
downgrade_to = "cheap"
[observability]
webhook_url = "{}/hook"
webhook_secret = "env::SWITCHYARD_TEST_WEBHOOK_SECRET"
"#,
        hook.url
    );
    std::env::set_var("SWITCHYARD_TEST_WEBHOOK_SECRET", "whsec-test");
    let gw = Gateway::start(&keyed_config(&mock, &extra)).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "one two three"}]});
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = post(&gw, GLOBEX_KEY, "/v1/chat/completions", body.clone(), &[]).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let e: Value = r.json().await.unwrap();
            assert_eq!(e["error"]["code"], "budget_exceeded");
            assert_eq!(e["error"]["type"], "insufficient_quota");
        } else {
            let _ = r.bytes().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 31.5, 63 (soft), 94.5 (hard) µ$: the fourth call is refused.
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    let soft = wait_event(&gw, "budget.soft_limit_reached").await;
    assert_eq!(soft["data"]["scope"], "tenant");
    assert_eq!(soft["data"]["name"], "globex");
    let hard = wait_event(&gw, "budget.hard_limit_reached").await;
    assert_eq!(hard["data"]["action"], "reject");
    let (sig, raw, delivered) = hook_event(&hook, "budget.hard_limit_reached").await;
    assert_eq!(delivered["data"]["name"], "globex");
    let sig = sig.expect("webhooks are signed");
    let t: u64 = sig
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap();
    let secret = secrecy::SecretString::from("whsec-test".to_owned());
    assert_eq!(
        sig,
        switchyard_core::ledger::events::sign(&secret, t, &raw),
        "signature verifies"
    );

    // The admin key's budget downgrades instead: after 31.5 µ$, `m` is served by `cheap`.
    let r = post(&gw, ADMIN_KEY, "/v1/chat/completions", body.clone(), &[]).await;
    assert_eq!(r.headers()["x-switchyard-model"], "m-upstream");
    let _ = r.bytes().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = post(
        &gw,
        ADMIN_KEY,
        "/v1/chat/completions",
        body.clone(),
        &[("x-request-id", "downgraded")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-model"], "cheap-upstream");
    let rec = admin_get(&gw, "/admin/requests/downgraded").await;
    assert_eq!(rec["route_reason"], "budget_downgrade");
    assert_eq!(rec["model_requested"], "m");
    let stats = admin_get(&gw, "/admin/stats").await;
    let budgets = stats["budgets"].as_array().unwrap();
    assert!(budgets
        .iter()
        .any(|b| b["name"] == "globex" && b["over_hard"] == true));
    let metrics = get_text(gw.url("/metrics")).await;
    assert!(metrics.contains(r#"switchyard_budget_actions_total{action="reject"} 1"#));
    assert!(metrics.contains(r#"switchyard_budget_actions_total{action="downgrade"} 1"#));

    // Spend survives a restart: globex is still refused.
    let dir = gw.stop().await;
    let gw = Gateway::start_in(&keyed_config(&mock, &extra), dir).await;
    let r = post(&gw, GLOBEX_KEY, "/v1/chat/completions", body, &[]).await;
    assert_eq!(r.status(), 429);
}

/// Must-show 5b: a latency budget breached raises its event (once), its metric and the webhook.
#[actix_rt::test]
async fn latency_budget_breach_raises_an_event() {
    let mock = MockServer::start_local(MockConfig {
        latency: Latency::Fixed(120),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let hook = capture_server(json!({})).await;
    let extra = format!(
        r#"
[[latency_budgets]]
name = "chat-p95"
endpoint = "/v1/chat/completions"
p95_ms = 50
window_s = 60
min_samples = 5
[observability]
evaluate_every_ms = 50
webhook_url = "{}/hook"
"#,
        hook.url
    );
    let gw = Gateway::start(&keyed_config(&mock, &extra)).await;
    let calls = (0..6).map(|_| {
        post(
            &gw,
            ADMIN_KEY,
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "slow one"}]}),
            &[],
        )
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status(), 200);
    }
    let e = wait_event(&gw, "latency_budget.breached").await;
    assert_eq!(e["data"]["budget"], "chat-p95");
    assert_eq!(e["data"]["percentile"], "p95");
    assert!(e["data"]["observed_ms"].as_f64().unwrap() > 100.0);
    assert_eq!(e["data"]["target_ms"], 50.0);
    let (sig, _, _) = hook_event(&hook, "latency_budget.breached").await;
    assert!(sig.is_none(), "no secret configured, no signature");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = admin_get(&gw, "/admin/events").await;
    let breaches = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "latency_budget.breached")
        .count();
    assert_eq!(breaches, 1, "a breach that persists is reported once");
    let metrics = get_text(gw.url("/metrics")).await;
    assert!(
        metrics.contains(
            r#"switchyard_latency_budget_breached{budget="chat-p95",percentile="p95"} 1"#
        ),
        "{metrics}"
    );
}

fn canned_chat() -> Value {
    json!({"id": "chatcmpl-cap", "object": "chat.completion", "created": 0, "model": "cap",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
}

/// W3C trace context: the caller's trace continues to the upstream (with the gateway's span as
/// parent) and is kept in the call's record; without one, a new trace starts.
#[actix_rt::test]
async fn trace_context_reaches_the_upstream_and_the_record() {
    let upstream = capture_server(canned_chat()).await;
    let gw = Gateway::start(&chain_config("m", &[format!("{}/v1", upstream.url)])).await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("traceparent", caller)
        .header("x-request-id", "traced")
        .json(&chat_body("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.got.lock().unwrap()[0].headers["traceparent"].clone();
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the gateway's own span is the parent"
    );
    assert_eq!(parts[2].len(), 16);
    assert_eq!(parts[3], "01");
    let r = client()
        .get(gw.url("/admin/requests/traced"))
        .send()
        .await
        .unwrap();
    let rec: Value = r.json().await.unwrap();
    assert_eq!(rec["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    // No traceparent: a fresh trace, the same in the upstream call and the record.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "untraced")
        .json(&chat_body("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.got.lock().unwrap()[1].headers["traceparent"].clone();
    let trace = seen.split('-').nth(1).unwrap().to_owned();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    let rec: Value = get_json(gw.url("/admin/requests/untraced")).await;
    assert_eq!(rec["trace_id"], trace);
}
