//! What the control UI stands on: the UI served behind an admin session, ledger pages that
//! stay stable while calls arrive, the overview's timeline, providers' headroom, and routing
//! policy versions that survive a restart and roll back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ADMIN_KEY: &str = "sy-test-admin-0f3c9e";
const CLIENT_KEY: &str = "sy-test-client-77a1d2";

fn hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

fn keyed_config(upstream: &str) -> String {
    format!(
        "[auth]\nallow_unauthenticated_loopback = false\n\
         [[auth.keys]]\nid = \"ops\"\ntenant = \"ops\"\nhash = \"{}\"\nadmin = true\n\
         [[auth.keys]]\nid = \"app\"\ntenant = \"acme\"\nhash = \"{}\"\n\
         [providers.up]\ntype = \"openai\"\nbase_url = \"{upstream}\"\nrpm = 600\n\
         [models.\"gpt-mock\"]\ntargets = [{{ provider = \"up\", model = \"mock-model\" }}]\n",
        hash(ADMIN_KEY),
        hash(CLIENT_KEY)
    )
}

async fn call(gw: &Gateway, key: &str, text: &str) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body("gpt-mock", text))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
}

async fn admin_get(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = client()
        .get(gw.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[actix_rt::test]
async fn the_ui_is_served_only_to_a_signed_in_admin() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&keyed_config(&mock.openai_base_url())).await;
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let r = no_redirect.get(gw.url("/ui/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("admin API key"));
    let r = no_redirect
        .get(gw.url("/ui/assets/index.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Sign in"),
        "{err}"
    );

    let login = |key: &'static str| {
        no_redirect
            .post(gw.url("/ui/login"))
            .form(&[("key", key)])
            .send()
    };
    assert_eq!(login(CLIENT_KEY).await.unwrap().status(), 403);
    assert_eq!(login("sy-nobody").await.unwrap().status(), 401);
    let ok = login(ADMIN_KEY).await.unwrap();
    assert_eq!(ok.status(), 303);
    let set_cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    assert!(!set_cookie.contains(ADMIN_KEY));
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let page = no_redirect
        .get(gw.url("/ui/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    if switchyard_core::api::ui::UI_ASSETS.is_empty() {
        assert_eq!(page.status(), 503, "a binary without the built UI says so");
    } else {
        assert_eq!(page.status(), 200);
        assert!(page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        let html = page.text().await.unwrap();
        assert!(html.contains("id=\"app\""), "{html}");
        // Client-side routes are the app too; a missing file is a 404.
        let deep = no_redirect
            .get(gw.url("/ui/routing"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(deep.status(), 200);
        let missing = no_redirect
            .get(gw.url("/ui/assets/nope.js"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
    }

    // The cookie reads the admin API; writes also need the UI's header.
    let read = no_redirect
        .get(gw.url("/admin/stats"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let purge = |with_header: bool| {
        let mut rb = no_redirect
            .post(gw.url("/admin/cache/purge"))
            .header("cookie", &cookie)
            .json(&json!({}));
        if with_header {
            rb = rb.header("x-switchyard-ui", "1");
        }
        rb.send()
    };
    assert_eq!(purge(false).await.unwrap().status(), 403);
    assert_eq!(purge(true).await.unwrap().status(), 200);

    // Signing out ends the session on the daemon, not just in the browser.
    let out = no_redirect
        .post(gw.url("/ui/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = no_redirect
        .get(gw.url("/admin/stats"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    gw.stop().await;
}

#[actix_rt::test]
async fn ledger_pages_neither_repeat_nor_skip_while_calls_arrive() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&format!(
        "{}\n[ledger]\nflush_ms = 10\n",
        keyed_config(&mock.openai_base_url())
    ))
    .await;
    for i in 0..230 {
        call(&gw, CLIENT_KEY, &format!("first {i}")).await;
    }
    let (_, first) = admin_get(&gw, "/admin/requests?limit=1000").await;
    let expected: HashSet<String> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expected.len(), 230);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/requests?limit=100&compact=true&cursor={c}"),
            None => "/admin/requests?limit=100&compact=true".to_owned(),
        };
        let (status, page) = admin_get(&gw, &path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for r in page["data"].as_array().unwrap() {
            seen.push(r["id"].as_str().unwrap().to_owned());
        }
        // New calls between pages land before the first page, not in the ones to come.
        if pages == 1 {
            for i in 0..25 {
                call(&gw, CLIENT_KEY, &format!("late {i}")).await;
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(page["has_more"], true);
                cursor = Some(c.to_owned());
            }
            None => break,
        }
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a record came twice");
    assert_eq!(unique, expected, "pages skipped or added records");
    assert_eq!(pages, 3);

    let (status, bad) = admin_get(&gw, "/admin/requests?cursor=nonsense").await;
    assert_eq!(status, 400);
    assert_eq!(bad["error"]["param"], "cursor");
    gw.stop().await;
}

#[actix_rt::test]
async fn the_timeline_and_providers_show_recent_traffic() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let gw = Gateway::start(&keyed_config(&mock.openai_base_url())).await;
    for i in 0..7 {
        call(&gw, CLIENT_KEY, &format!("t {i}")).await;
    }
    let (status, tl) = admin_get(&gw, "/admin/timeline?minutes=2").await;
    assert_eq!(status, 200, "{tl}");
    assert_eq!(tl["step_s"], 10);
    let points = tl["points"].as_array().unwrap();
    assert!((12..=13).contains(&points.len()), "{}", points.len());
    let calls: u64 = points.iter().map(|p| p["calls"].as_u64().unwrap()).sum();
    assert_eq!(calls, 7);
    let cloud: u64 = points.iter().map(|p| p["cloud"].as_u64().unwrap()).sum();
    assert_eq!(cloud, 7);
    let with_latency = points
        .iter()
        .find(|p| p["calls"].as_u64() > Some(0))
        .unwrap();
    assert!(with_latency["latency"]["p50_ms"].as_f64().unwrap() > 0.0);
    let (status, bad) = admin_get(&gw, "/admin/timeline?minutes=0").await;
    assert_eq!(status, 400);
    assert_eq!(bad["error"]["param"], "minutes");

    let (_, providers) = admin_get(&gw, "/admin/providers").await;
    let up = &providers["data"][0];
    assert_eq!(up["name"], "up");
    assert_eq!(up["breaker"], "closed");
    assert_eq!(up["limits"]["rpm_limit"], 600);
    assert_eq!(up["limits"]["rpm_used"], 7);
    assert_eq!(up["latency"]["60s"]["count"], 7);

    let (_, keys) = admin_get(&gw, "/admin/keys").await;
    let text = keys.to_string();
    assert!(
        !text.contains("sha256:"),
        "key hashes are never sent: {text}"
    );
    let app = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "app")
        .unwrap();
    assert_eq!(app["tenant"], "acme");
    assert_eq!(app["today"]["requests"], 7);

    // A client key reads none of it.
    let r = client()
        .get(gw.url("/admin/providers"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    gw.stop().await;
}

fn routing_config(upstream: &str, weak: &str) -> String {
    format!(
        "[providers.up]\ntype = \"openai\"\nbase_url = \"{upstream}\"\n\
         [models.\"small\"]\ntargets = [{{ provider = \"up\", model = \"small-upstream\" }}]\n\
         [models.\"large\"]\ntargets = [{{ provider = \"up\", model = \"large-upstream\" }}]\n\
         [routing]\nmodel = \"auto\"\nweak = \"{weak}\"\nstrong = \"large\"\n\
         [routing.tiers]\nsmall = \"small\"\nlarge = \"large\"\n"
    )
}

async fn route_of(gw: &Gateway) -> String {
    let r = gw.chat(&chat_body("auto", "hello")).await;
    assert_eq!(r.status(), 200);
    r.headers()["x-switchyard-route"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[actix_rt::test]
async fn policy_versions_survive_a_restart_and_roll_back() {
    let mock = MockServer::start_local(MockConfig::default())
        .await
        .unwrap();
    let config = routing_config(&mock.openai_base_url(), "small");
    let gw = Gateway::start(&config).await;
    assert!(route_of(&gw).await.starts_with("small"));
    let (_, current) = admin_get(&gw, "/admin/routing/policy").await;
    assert_eq!(current["version"], 1);
    let mut changed = current.clone();
    for k in ["version", "calibration"] {
        changed.as_object_mut().unwrap().remove(k);
    }
    changed["weak"] = json!("large");
    let r = client()
        .put(gw.url("/admin/routing/policy"))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
    assert!(route_of(&gw).await.starts_with("large"));

    // Restarted over the same config file: the policy applied through the API stays.
    let dir = gw.stop().await;
    let gw = Gateway::start_in(&config, dir).await;
    assert!(route_of(&gw).await.starts_with("large"));
    let (_, history) = admin_get(&gw, "/admin/routing/history").await;
    let versions: Vec<(u64, String)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(versions, [(2, "api".to_owned()), (1, "config".to_owned())]);

    let rollback = |version: Value| {
        client()
            .post(gw.url("/admin/routing/rollback"))
            .json(&json!({ "version": version }))
            .send()
    };
    let r = rollback(json!(1)).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["version"].clone(), body["weak"].clone()),
        (json!(3), json!("small"))
    );
    assert!(route_of(&gw).await.starts_with("small"));
    let r = rollback(json!(99)).await.unwrap();
    assert_eq!(r.status(), 404);
    let r = rollback(json!("x")).await.unwrap();
    assert_eq!(r.status(), 400);

    // An edited config file wins over what the API applied before.
    let dir = gw.stop().await;
    let edited = routing_config(&mock.openai_base_url(), "large");
    let gw = Gateway::start_in(&edited, dir).await;
    let (_, current) = admin_get(&gw, "/admin/routing/policy").await;
    assert_eq!(
        (current["version"].clone(), current["weak"].clone()),
        (json!(4), json!("large"))
    );
    gw.stop().await;
}
