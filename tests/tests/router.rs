//! The router: the scorer's training and evaluation pipeline on real MiniLM embeddings, and
//! routing through the daemon (rules, the learned score, a policy swapped at run time).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;

use common::*;
use serde_json::{json, Value};
use switchyard_core::router::learn::{evaluate, EvalOptions};

const HARD: &str = "Compute the integral of x^3 times sin(x) from 0 to 2 and simplify.";
const EASY: &str = "Which city is the capital of country number 4 on the list of European states?";

/// Labelled prompts where the topic decides the outcome: maths only the strong tier gets
/// right, capitals both get right.
fn write_synthetic(data: &std::path::Path) {
    let mut f = std::fs::File::create(data).unwrap();
    // Topic decides the outcome; lengths overlap, so length alone cannot tell them apart.
    for i in 0..160 {
        let (prompt, weak, strong) = if i % 2 == 0 {
            (
                format!(
                    "Compute the integral of x^{} times sin(x) from 0 to {} and simplify.",
                    i % 7 + 2,
                    i % 5 + 1
                ),
                false,
                true,
            )
        } else {
            (
                format!("Which city is the capital of country number {} on the list of European states?", i % 9 + 1),
                true,
                true,
            )
        };
        writeln!(
            f,
            "{}",
            serde_json::json!({"prompt": prompt, "weak_correct": weak, "strong_correct": strong})
        )
        .unwrap();
    }
}

/// Train and evaluate on `data` (25% held out), with the real MiniLM weights.
fn eval_on(
    data: &std::path::Path,
    seed: u64,
    out: Option<&std::path::Path>,
) -> anyhow::Result<Vec<switchyard_core::router::learn::Measured>> {
    evaluate(
        &EvalOptions {
            data: data.to_path_buf(),
            holdout: 0.25,
            seed,
            models_dir: switchyard_models::ModelStore::default_dir(),
            out: out.map(std::path::Path::to_path_buf),
            window: switchyard_models::router::PROMPT_WINDOW,
        },
        &mut std::io::sink(),
    )
}

#[test]
fn a_learnable_split_is_learnt_and_beats_the_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir
        .path()
        .join(format!("synthetic-{}.jsonl", std::process::id()));
    write_synthetic(&data);
    let out = dir.path().join("scorer.json");
    let report = eval_on(&data, 3, Some(&out)).unwrap();
    let apgr = |prefix: &str| {
        report
            .iter()
            .find(|m| m.name.starts_with(prefix))
            .map(|m| m.quality.apgr)
            .unwrap()
    };
    // Perfect ordering here (45% of the held-out prompts gain) has APGR 1 - 0.45/2 = 0.775.
    assert!(apgr("logistic") > 0.76, "{report:?}");
    assert!(apgr("knn") > 0.76, "{report:?}");
    assert!(apgr("baseline: prompt length") < 0.6, "{report:?}");
    let random = apgr("baseline: random");
    assert!((random - 0.5).abs() < 0.1, "{report:?}");
    let scorer = switchyard_models::router::Scorer::load(&out).unwrap();
    assert_eq!(
        scorer.weights.len(),
        384 + switchyard_models::router::CHEAP_FEATURES
    );
    assert_eq!(scorer.window, switchyard_models::router::PROMPT_WINDOW);

    // `router train` on labelled prompts alone writes a gain scorer (two heads) that rates the
    // prompts only the strong tier gets right above those both get right.
    let trained = dir.path().join("trained.json");
    let s = switchyard_core::router::learn::train(
        &switchyard_core::router::learn::TrainSources {
            data: Some(data.clone()),
            models_dir: switchyard_models::ModelStore::default_dir(),
            outcomes: Vec::new(),
            out: trained.clone(),
        },
        &mut std::io::sink(),
    )
    .unwrap();
    assert_eq!(
        switchyard_models::router::Scorer::load(&trained).unwrap(),
        s
    );
    assert!(s.minus.is_some(), "{:?}", s.trained);
    assert!(s.trained.as_deref().unwrap_or("").contains("gain scorer"));
    let files = switchyard_models::ModelStore::new(switchyard_models::ModelStore::default_dir())
        .resolve("minilm")
        .unwrap();
    let cpu = switchyard_models::select_device(switchyard_models::DeviceChoice::Cpu).unwrap();
    let embedder = switchyard_models::Embedder::load(&files, &cpu).unwrap();
    let rate = |text: &str| {
        let (v, _) = embedder.embed_head(&[text], s.window).unwrap();
        s.score(&switchyard_models::router::features(&v[0], text))
    };
    let (hard, easy) = (rate(HARD), rate(EASY));
    assert!(hard > 0.75 && easy < 0.65, "hard {hard}, easy {easy}");
    // Bad input is an error, not a panic.
    std::fs::write(&data, "{\"prompt\": 1}\n").unwrap();
    let err = eval_on(&data, 3, None).err().unwrap();
    assert!(err.to_string().contains(":1:"), "{err}");
}

async fn ask(gw: &Gateway, prompt: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": prompt}]}));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Through the daemon: a task rule sends classification to the local model, the learned score
/// sends hard prompts to the large tier and easy ones to the small one, and a policy replaced
/// by the admin API applies to the next request; an invalid one is refused with its key path.
/// A daemon over a mock upstream with `small` and `large` models (priced), the local model,
/// and a routing policy with a scorer trained on the synthetic split; returns the policy's JSON.
async fn routed_gateway() -> (tempfile::TempDir, MockServer, Gateway, Value) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("routing.jsonl");
    write_synthetic(&data);
    let scorer = dir.path().join("scorer.json");
    eval_on(&data, 5, Some(&scorer)).unwrap();
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let policy = json!({
        "model": "auto",
        "tiers": {"local": "local/smollm2", "small": "small", "large": "large"},
        "weak": "small",
        "strong": "large",
        "threshold": 0.75,
        "scorer": scorer,
        "rules": [{"task": "classify", "tier": "local"}],
    });
    let config = format!(
        "[server]\nworkers = 2\n[local]\nenabled = true\nhub_download = false\n\
         [providers.up]\ntype = \"openai\"\nbase_url = \"{}\"\n\
         [models.\"small\"]\ntargets = [{{ provider = \"up\", model = \"small-upstream\" }}]\n\
         [models.\"large\"]\ntargets = [{{ provider = \"up\", model = \"large-upstream\" }}]\n\
         [routing]\nmodel = \"auto\"\nweak = \"small\"\nstrong = \"large\"\nthreshold = 0.75\n\
         scorer = \"{}\"\n[routing.tiers]\nlocal = \"local/smollm2\"\nsmall = \"small\"\nlarge = \"large\"\n\
         [[routing.rules]]\ntask = \"classify\"\ntier = \"local\"\n\
         [prices.models.\"small-upstream\"]\ninput = 0.1\noutput = 0.4\n\
         [prices.models.\"large-upstream\"]\ninput = 10.0\noutput = 30.0\n",
        mock.openai_base_url(),
        scorer.display()
    );
    let gw = Gateway::start(&config).await;
    gw.wait_ready().await;
    (dir, mock, gw, policy)
}

#[actix_rt::test]
async fn requests_are_routed_by_rules_and_score_and_the_policy_swaps_live() {
    let (dir, _mock, gw, policy) = routed_gateway().await;
    let scorer = dir.path().join("scorer.json");

    let r = ask(&gw, HARD, &[]).await;
    assert_eq!(header(&r, "x-switchyard-model"), "large-upstream");
    assert!(
        header(&r, "x-switchyard-route").starts_with("large; reason=score; score="),
        "{}",
        header(&r, "x-switchyard-route")
    );
    let r = ask(&gw, EASY, &[]).await;
    assert_eq!(header(&r, "x-switchyard-model"), "small-upstream");
    assert!(header(&r, "x-switchyard-route").starts_with("small; reason=score"));
    let r = ask(
        &gw,
        "Is this ticket about billing or shipping: my card was charged twice",
        &[("x-switchyard-task", "classify")],
    )
    .await;
    assert_eq!(header(&r, "x-switchyard-provider"), "local");
    assert_eq!(header(&r, "x-switchyard-route"), "local; reason=rule:0");
    // An explicit model is never routed.
    let r = gw.chat(&chat_body("small", EASY)).await;
    assert_eq!(header(&r, "x-switchyard-route"), "");

    // A new policy applies to the next request, without a restart.
    let mut lowered = policy.clone();
    lowered["threshold"] = json!(0.0);
    let put = client()
        .put(gw.url("/admin/routing/policy"))
        .json(&lowered)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let r = ask(&gw, EASY, &[]).await;
    assert_eq!(header(&r, "x-switchyard-model"), "large-upstream");

    // Invalid policies are refused with the key path, and change nothing.
    for (bad, param) in [
        (
            json!({"tiers": {"a": "small"}, "weak": "a", "strong": "a", "rules": [{"tier": "nope"}]}),
            "routing.rules[0].tier",
        ),
        (
            json!({"tiers": {"a": "no-such-model"}, "weak": "a", "strong": "a"}),
            "routing.tiers.a",
        ),
        (
            json!({"tiers": {"a": "small"}, "weak": "a", "strong": "a", "threshold": "high"}),
            "routing.threshold",
        ),
        (
            json!({"tiers": {"a": "small"}, "weak": "a", "strong": "a", "colour": 1}),
            "routing",
        ),
    ] {
        let r = client()
            .put(gw.url("/admin/routing/policy"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        let got = body["error"]["param"].as_str().unwrap_or("routing");
        assert!(got.starts_with(param), "{bad}: {body}");
    }
    let current: Value = get_json(gw.url("/admin/routing/policy")).await;
    assert_eq!(current["threshold"], 0.0);
    let rec: Value = get_json(gw.url("/admin/requests?limit=1&model=auto")).await;
    assert!(rec["data"][0]["route_reason"]
        .as_str()
        .unwrap()
        .starts_with("route:large:score:"));

    // What-if: a mix of calls under the lowered policy, simulated under the original one,
    // must project exactly the tiers the router then gives the same calls.
    let mix: Vec<(&str, Option<&str>)> = vec![
        (HARD, None),
        (EASY, None),
        ("Label this: my parcel never arrived", Some("classify")),
        (
            "Compute the integral of x^2 times sin(x) from 0 to 3 and simplify.",
            None,
        ),
        (
            "Which city is the capital of country number 7 on the list of European states?",
            None,
        ),
    ];
    let send_mix = |gw: &Gateway| {
        let mix = mix.clone();
        let url = gw.url("/v1/chat/completions");
        async move {
            let mut tiers = std::collections::BTreeMap::<String, u64>::new();
            for (prompt, task) in mix {
                let mut rb = client()
                    .post(&url)
                    .json(&json!({"model": "auto", "max_tokens": 8,
                    "messages": [{"role": "user", "content": prompt}]}));
                if let Some(t) = task {
                    rb = rb.header("x-switchyard-task", t);
                }
                let r = rb.send().await.unwrap();
                assert_eq!(r.status(), 200);
                let route = header(&r, "x-switchyard-route");
                let tier = route.split(';').next().unwrap().to_owned();
                let _ = r.bytes().await;
                *tiers.entry(tier).or_default() += 1;
            }
            tiers
        }
    };
    let under_lowered = send_mix(&gw).await;
    assert_eq!(under_lowered.get("large"), Some(&4), "{under_lowered:?}");
    let sim: Value = client()
        .post(gw.url("/admin/routing/simulate"))
        .json(&json!({"policy": policy, "limit": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sim["replayed"], 5, "{sim}");
    assert_eq!(sim["actual"]["tiers"]["large"]["calls"], 4, "{sim}");
    let put = client()
        .put(gw.url("/admin/routing/policy"))
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let replayed = send_mix(&gw).await;
    let projected: std::collections::BTreeMap<String, u64> = sim["projected"]["tiers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["calls"].as_u64().unwrap()))
        .collect();
    assert_eq!(projected, replayed, "simulated {sim}");
    assert_eq!(replayed.get("large"), Some(&2));
    assert_eq!(replayed.get("small"), Some(&2));
    assert_eq!(replayed.get("local"), Some(&1));
    assert_eq!(sim["changed"], 2, "{sim}");

    // The same from the command line, with the policy as a TOML file.
    let file = dir.path().join("candidate.toml");
    std::fs::write(
        &file,
        format!(
            "[routing]\nweak = \"small\"\nstrong = \"large\"\nthreshold = 0.0\nscorer = \"{}\"\n\
             [routing.tiers]\nsmall = \"small\"\nlarge = \"large\"\n",
            scorer.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(daemon_binary())
        .args([
            "router",
            "simulate",
            "--limit",
            "5",
            "--url",
            &gw.url(""),
            "--policy",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("5 routed calls replayed"), "{text}");
    assert!(text.contains("large"), "{text}");

    // Cascade: short answers are tried locally and escalate when the local model is unsure
    // (confidence is the mean token log-probability: requiring 0 escalates, -100 never does).
    let mut cascade = policy.clone();
    cascade["rules"] = json!([
        {"task": "short", "tier": "local", "escalate_to": "large", "min_confidence": 0.0},
        {"task": "short-ok", "tier": "local", "escalate_to": "large", "min_confidence": -100.0},
    ]);
    let put = client()
        .put(gw.url("/admin/routing/policy"))
        .json(&cascade)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let r = ask(
        &gw,
        "Say yes or no: is water wet?",
        &[("x-switchyard-task", "short")],
    )
    .await;
    assert_eq!(header(&r, "x-switchyard-model"), "large-upstream");
    let route = header(&r, "x-switchyard-route");
    assert!(
        route.starts_with("large; reason=cascade:rule:0:confidence="),
        "{route}"
    );
    let r = ask(
        &gw,
        "Say yes or no: is water wet?",
        &[("x-switchyard-task", "short-ok")],
    )
    .await;
    assert_eq!(
        header(&r, "x-switchyard-provider"),
        "local",
        "{}",
        header(&r, "x-switchyard-route")
    );
    assert!(r.headers().contains_key("x-switchyard-confidence"));
}

async fn put_policy(gw: &Gateway, policy: &Value) -> reqwest::Response {
    client()
        .put(gw.url("/admin/routing/policy"))
        .json(policy)
        .send()
        .await
        .unwrap()
}

async fn simulate(gw: &Gateway, policy: &Value, limit: usize) -> Value {
    let r = client()
        .post(gw.url("/admin/routing/simulate"))
        .json(&json!({"policy": policy, "limit": limit}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// `max_cost` (header or body) downgrades to the costliest tier that fits or refuses, by
/// policy; a strong-tier share calibrates the threshold on recent calls, and the simulator
/// projects what the router then does; cascade outcomes label calls, the simulator projects
/// quality from them, and `router train --from-ledger` learns a scorer from them.
#[actix_rt::test]
async fn cost_ceilings_share_calibration_and_training_from_outcomes() {
    let (dir, _mock, gw, policy) = routed_gateway().await;

    // The hard prompt scores strong: large (~$0.0005 at 8 completion tokens).
    let r = ask(&gw, HARD, &[]).await;
    assert_eq!(header(&r, "x-switchyard-model"), "large-upstream");
    // Under a $0.0001 ceiling the costliest tier that fits is small; under $0 only local.
    let r = ask(&gw, HARD, &[("x-switchyard-max-cost-usd", "0.0001")]).await;
    assert_eq!(header(&r, "x-switchyard-model"), "small-upstream");
    assert!(
        header(&r, "x-switchyard-route").starts_with("small; reason=max_cost:score"),
        "{}",
        header(&r, "x-switchyard-route")
    );
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "auto", "max_tokens": 8, "max_cost": 0,
            "messages": [{"role": "user", "content": HARD}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-switchyard-provider"), "local");
    // An explicit model cannot be downgraded: refused, as is a policy that says reject.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-switchyard-max-cost-usd", "0.0001")
        .json(&chat_body("large", HARD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "max_cost_exceeded", "{body}");
    let mut strict = policy.clone();
    strict["on_max_cost"] = json!("reject");
    assert_eq!(put_policy(&gw, &strict).await.status(), 200);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-switchyard-max-cost-usd", "0.0001")
        .json(&json!({"model": "auto", "max_tokens": 8,
            "messages": [{"role": "user", "content": HARD}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-switchyard-max-cost-usd", "cheap")
        .json(&json!({"model": "auto", "messages": [{"role": "user", "content": EASY}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["param"], "x-switchyard-max-cost-usd",
        "{body}"
    );

    // Strong share: 40 varied prompts, then a policy asking for 25% strong calls.
    let prompts: Vec<String> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                format!("Compute the integral of x^{} times cos(x) from 0 to {} and simplify.", i % 7 + 1, i)
            } else {
                format!("Which city is the capital of country number {i} on the list of European states?")
            }
        })
        .collect();
    assert_eq!(put_policy(&gw, &policy).await.status(), 200);
    for p in &prompts {
        let _ = ask(&gw, p, &[]).await.bytes().await;
    }
    let mut share = policy.clone();
    share["strong_share"] = json!(0.25);
    share["calibrate_calls"] = json!(40);
    let sim = simulate(&gw, &share, 40).await;
    let put = put_policy(&gw, &share).await;
    assert_eq!(put.status(), 200);
    let view: Value = put.json().await.unwrap();
    let cal = &view["calibration"];
    assert_eq!(cal["calls"], 40, "{view}");
    let achieved = cal["achieved_share"].as_f64().unwrap();
    assert!((0.2..=0.3).contains(&achieved), "{view}");
    assert_eq!(
        get_json(gw.url("/admin/routing/policy")).await["calibration"],
        *cal
    );
    let mut large = 0u64;
    for p in &prompts {
        let r = ask(&gw, p, &[]).await;
        large += u64::from(header(&r, "x-switchyard-model") == "large-upstream");
    }
    assert_eq!(
        sim["projected"]["tiers"]["large"]["calls"]
            .as_u64()
            .unwrap_or(0),
        large,
        "{sim}"
    );
    assert_eq!(large as f64 / 40.0, achieved);

    // Cascade outcomes: kept (min -100) and escalated (min 0) calls become labels.
    let mut cascade = policy.clone();
    cascade["rules"] = json!([
        {"task": "unsure", "tier": "local", "escalate_to": "large", "min_confidence": 0.0},
        {"task": "sure", "tier": "local", "escalate_to": "large", "min_confidence": -100.0},
    ]);
    assert_eq!(put_policy(&gw, &cascade).await.status(), 200);
    for (i, p) in prompts.iter().take(24).enumerate() {
        let task = if i % 2 == 0 { "unsure" } else { "sure" };
        let r = ask(&gw, p, &[("x-switchyard-task", task)]).await;
        let route = header(&r, "x-switchyard-route");
        let want = if task == "unsure" {
            "large; reason=cascade:"
        } else {
            "local; reason=cascade_kept:"
        };
        assert!(route.starts_with(want), "{route}");
    }
    let outcomes = get_json(gw.url("/admin/routing/outcomes?limit=24")).await;
    let rows = outcomes["data"].as_array().unwrap();
    assert_eq!(rows.len(), 24, "{outcomes}");
    assert_eq!(rows.iter().filter(|r| r["label"] == 1.0).count(), 12);
    // Projected quality: keeping every cascaded call local (no escalation) serves the 12
    // that had to escalate badly; sending them all large serves every one well.
    let mut local_only = policy.clone();
    local_only["rules"] =
        json!([{"task": "unsure", "tier": "local"}, {"task": "sure", "tier": "local"}]);
    let sim = simulate(&gw, &local_only, 24).await;
    assert_eq!(sim["quality"]["labelled"], 24, "{sim}");
    assert_eq!(sim["quality"]["projected_adequate_share"], 0.5, "{sim}");
    let sim = simulate(&gw, &cascade, 24).await;
    assert_eq!(sim["quality"]["projected_adequate_share"], 1.0, "{sim}");

    // `router train --from-ledger` learns from them; the file is a loadable scorer.
    let out_file = dir.path().join("from-ledger.json");
    let out = std::process::Command::new(daemon_binary())
        .args([
            "router",
            "train",
            "--from-ledger",
            "--limit",
            "24",
            "--url",
            &gw.url(""),
            "--out",
        ])
        .arg(&out_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("24 rows (12 positive) from 24 ledger outcomes"),
        "{text}"
    );
    let mut retrained = policy.clone();
    retrained["scorer"] = json!(out_file);
    assert_eq!(put_policy(&gw, &retrained).await.status(), 200);
    let r = ask(&gw, HARD, &[]).await;
    assert!(header(&r, "x-switchyard-route").contains("reason=score; score="));
}
