//! Resilience end to end: client-side RPM limits, circuit breakers, 429 cool-downs, and a fault
//! run against two upstreams that each fail 30% of calls in mixed ways.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn two_upstreams(a: &str, a_extra: &str, b: &str, b_extra: &str) -> String {
    format!(
        "[server]\nworkers = 2\n\
         [providers.up0]\ntype = \"openai\"\nbase_url = \"{a}\"\n{a_extra}\n\
         [providers.up1]\ntype = \"openai\"\nbase_url = \"{b}\"\n{b_extra}\n\
         [models.m]\ntargets = [{{ provider = \"up0\", model = \"x\" }}, {{ provider = \"up1\", model = \"x\" }}]\n"
    )
}

async fn provider_health(gw: &Gateway, name: &str) -> Value {
    let ready: Value = client()
        .get(gw.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ready["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap()
}

#[actix_rt::test]
async fn an_rpm_limit_holds_under_a_burst_and_the_rest_fail_over() {
    let limited = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let spare = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&two_upstreams(
        &limited.openai_base_url(),
        "rpm = 600\nlimit_wait_ms = 0",
        &spare.openai_base_url(),
        "",
    ))
    .await;
    let c = client();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let (c, url) = (c.clone(), gw.url("/v1/chat/completions"));
        tasks.push(tokio::spawn(async move {
            // spread the burst over one second
            tokio::time::sleep(Duration::from_millis(i * 9)).await;
            c.post(url)
                .json(&chat_body("m", "hi"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    let elapsed = start.elapsed();
    let sent_to_limited = limited.stats().requests;
    eprintln!(
        "burst of 100 in {elapsed:?}: {sent_to_limited} to the 600 RPM upstream, {} to the spare",
        spare.stats().requests
    );
    assert_eq!(ok, 100, "every request is served");
    // 600 RPM is one every 100 ms: at most 10 in the burst's second.
    assert!(
        sent_to_limited <= 10,
        "the limited upstream got {sent_to_limited}"
    );
    assert!(
        sent_to_limited >= 5,
        "the limited upstream was used ({sent_to_limited})"
    );
    assert_eq!(limited.stats().requests + spare.stats().requests, 100);
}

#[actix_rt::test]
async fn an_rpm_limit_without_a_fallback_answers_429_with_retry_after() {
    let limited = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let cfg = format!(
        "[server]\nworkers = 2\n[providers.up0]\ntype = \"openai\"\nbase_url = \"{}\"\nrpm = 60\nlimit_wait_ms = 50\n\
         [models.m]\ntargets = [{{ provider = \"up0\", model = \"x\" }}]\n",
        limited.openai_base_url()
    );
    let gw = Gateway::start(&cfg).await;
    let first = gw.chat(&chat_body("m", "a")).await;
    assert_eq!(first.status(), 200);
    let second = gw.chat(&chat_body("m", "b")).await;
    assert_eq!(second.status(), 429);
    let after: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&after), "retry-after {after}");
    assert_eq!(limited.stats().requests, 1);
}

#[actix_rt::test]
async fn a_down_upstream_gets_only_probes_and_comes_back() {
    let flaky = MockServer::start_local(MockConfig {
        faults: FaultRates {
            status_503: 1.0,
            ..FaultRates::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let spare = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let breaker = "max_retries = 0\n[providers.up0.breaker]\nconsecutive_failures = 3\ncooldown_ms = 300\nmax_cooldown_ms = 300";
    let gw = Gateway::start(&two_upstreams(
        &flaky.openai_base_url(),
        breaker,
        &spare.openai_base_url(),
        "",
    ))
    .await;
    let c = client();
    let start = Instant::now();
    let mut served = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        let resp = c
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("m", "hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed();
    let to_down = flaky.stats().requests;
    // three failures open the breaker; then one probe per 300 ms cool-down
    let allowed = 3 + (elapsed.as_millis() / 300) as u64 + 1;
    eprintln!(
        "{served} requests in {elapsed:?}; the down upstream got {to_down} (allowed {allowed})"
    );
    assert!(
        to_down <= allowed,
        "down upstream got {to_down} calls, allowed {allowed}"
    );
    assert!(served > 50);
    let h = provider_health(&gw, "up0").await;
    assert_ne!(h["breaker"], "closed", "{h}");
    assert_eq!(h["healthy"], false);

    flaky.set_config(MockConfig::default());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut back = false;
    while Instant::now() < deadline {
        let resp = c
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("m", "hi"))
            .send()
            .await
            .unwrap();
        if resp.headers()["x-switchyard-provider"] == "up0" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "the recovered upstream never got traffic again");
    let h = provider_health(&gw, "up0").await;
    assert_eq!(h["breaker"], "closed", "{h}");
}

#[actix_rt::test]
async fn a_429_cools_the_upstream_for_its_retry_after() {
    let limited = MockServer::start_local(MockConfig {
        faults: FaultRates {
            status_429: 1.0,
            ..FaultRates::default()
        },
        retry_after_secs: 3,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let spare = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&two_upstreams(
        &limited.openai_base_url(),
        "",
        &spare.openai_base_url(),
        "",
    ))
    .await;
    for _ in 0..10 {
        let resp = gw.chat(&chat_body("m", "hi")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-switchyard-provider"], "up1");
    }
    assert_eq!(limited.stats().requests, 1, "no calls while cooling");
    let h = provider_health(&gw, "up0").await;
    assert!(h["cooling_ms"].as_u64().is_some_and(|ms| ms > 1000), "{h}");
}

/// Two upstreams, each failing 30% of calls: 500, 429 with Retry-After, reset, hang (timeout)
/// and truncated body in equal parts. Non-streamed requests: a truncated body is still before
/// the first byte to the client, so it can be retried.
#[actix_rt::test]
async fn fault_run_two_flaky_upstreams() {
    let faults = FaultRates {
        status_500: 0.06,
        status_429: 0.06,
        reset: 0.06,
        hang: 0.06,
        truncate: 0.06,
        ..FaultRates::default()
    };
    let flaky = || MockConfig {
        faults: faults.clone(),
        retry_after_secs: 1,
        latency: Latency::Uniform(1, 20),
        ..MockConfig::default()
    };
    let a = MockServer::start_local(flaky()).await.unwrap();
    let b = MockServer::start_local(flaky()).await.unwrap();
    let opts = "timeout_ms = 400\nmax_retries = 2\nretry_base_ms = 20\nretry_max_ms = 200\nlimit_wait_ms = 1500";
    let gw = Gateway::start(&two_upstreams(
        &a.openai_base_url(),
        opts,
        &b.openai_base_url(),
        opts,
    ))
    .await;
    let total: usize = std::env::var("FAULT_RUN_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let concurrency = 16;
    // A client timeout in the range real SDKs use; the run checks none is exceeded.
    let deadline = Duration::from_millis(15_000);
    let c = client();
    let start = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (c, url, next) = (c.clone(), gw.url("/v1/chat/completions"), next.clone());
        workers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                let status = c
                    .post(&url)
                    .header("x-switchyard-timeout-ms", deadline.as_millis().to_string())
                    .json(
                        &json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}),
                    )
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                results.push((status, t.elapsed()));
            }
            results
        }));
    }
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.unwrap());
    }
    let elapsed = start.elapsed();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let mut statuses = std::collections::BTreeMap::new();
    for (s, _) in &results {
        *statuses.entry(*s).or_insert(0) += 1;
    }
    let slowest = results.iter().map(|(_, d)| *d).max().unwrap_or_default();
    eprintln!(
        "fault run: {ok}/{total} ok ({:.2}%) in {elapsed:?}; statuses {statuses:?}; slowest {slowest:?} (deadline {deadline:?})",
        100.0 * ok as f64 / total as f64
    );
    eprintln!("upstream a: {:?}", a.stats());
    eprintln!("upstream b: {:?}", b.stats());
    assert_eq!(results.len(), total);
    assert!(
        ok * 1000 >= total * 999,
        "success {ok}/{total} is under 99.9%"
    );
    assert!(
        slowest <= deadline + Duration::from_millis(250),
        "a request took {slowest:?}, past its deadline"
    );
}

#[actix_rt::test]
async fn a_tpm_limit_counts_prompt_and_completion_budget() {
    let limited = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    // 6,000 tokens a minute: 100 a second, at most 1,000 at once.
    let cfg = format!(
        "[server]\nworkers = 2\n[providers.up0]\ntype = \"openai\"\nbase_url = \"{}\"\ntpm = 6000\nlimit_wait_ms = 100\n\
         [models.m]\ntargets = [{{ provider = \"up0\", model = \"x\" }}]\n",
        limited.openai_base_url()
    );
    let gw = Gateway::start(&cfg).await;
    let ask = |max_tokens: u32| json!({"model": "m", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]});
    let small = gw.chat(&ask(100)).await;
    assert_eq!(small.status(), 200);
    // 900 more tokens fit what is left of the burst; the next large request does not.
    let fits = gw.chat(&ask(890)).await;
    assert_eq!(fits.status(), 200);
    let over = gw.chat(&ask(900)).await;
    assert_eq!(over.status(), 429);
    assert!(over.headers().contains_key("retry-after"));
    assert_eq!(
        limited.stats().requests,
        2,
        "the refused request never reached the upstream"
    );
}
