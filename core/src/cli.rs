//! The `switchyard` command line: `serve`, `check-config`, `stats`, `hash-key`.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{hash_key, Config, ConfigError, Overrides};

/// Switchyard: one local API in front of cache, local models and cloud LLMs.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// Config file (TOML). Without one, an embedded default serves on 127.0.0.1:8080.
        #[arg(long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, e.g. 0.0.0.0:8080 (wins over config and environment).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data folder for the embedded store.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Shut down (gracefully) when the process that started this one goes away: for a
        /// daemon run as an app's sidecar, which must not outlive the app even if it crashes.
        #[arg(long)]
        exit_with_parent: bool,
    },
    /// Validate a config file and print what it configures.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print a running daemon's stats (`GET /admin/stats`) as tables.
    Stats {
        /// The daemon's base URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An admin API key (not needed on an open loopback).
        #[arg(long, env = "SWITCHYARD_ADMIN_KEY", hide_env_values = true)]
        key: Option<String>,
        /// Days of totals, counting back from today.
        #[arg(long, default_value_t = 1)]
        days: u32,
        /// Print the raw JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Routing scorer tools.
    Router {
        /// What to do.
        #[command(subcommand)]
        command: RouterCommand,
    },
    /// Async jobs: submit, watch (with a progress bar), list.
    Jobs {
        /// What to do.
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Semantic cache tools.
    Cache {
        /// What to do.
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print the `sha256:` hash of an API key read from standard input, for `[[auth.keys]]`.
    HashKey {
        /// Generate a new random key and print it with its hash instead of reading one.
        #[arg(long)]
        generate: bool,
    },
}

/// `switchyard router ...`
#[derive(Debug, Subcommand)]
pub enum RouterCommand {
    /// Train the scorer on labelled prompts and report APGR on a held-out split, with the
    /// random and prompt-length baselines beside it.
    Eval {
        /// JSONL with `prompt`, `weak_correct`, `strong_correct` per line.
        #[arg(long)]
        data: PathBuf,
        /// Share of the file held out for the test.
        #[arg(long, default_value_t = 0.25)]
        holdout: f64,
        /// Split seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Write the trained logistic-regression scorer here (versioned JSON).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Folder with the MiniLM weights (default: `$SWITCHYARD_MODELS_DIR`).
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// Tokens of each prompt the embedding reads.
        #[arg(long, default_value_t = switchyard_models::router::PROMPT_WINDOW)]
        window: usize,
    },
    /// Train the deployable scorer on labelled prompts and/or a running daemon's cascade
    /// outcomes, and write it as a versioned file for `[routing] scorer`.
    Train {
        /// JSONL with `prompt`, `weak_correct`, `strong_correct` per line.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Also learn from the daemon's recent cascade outcomes (escalated or kept).
        #[arg(long)]
        from_ledger: bool,
        /// Newest routed calls to read outcomes from.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
        /// Where the scorer goes.
        #[arg(long)]
        out: PathBuf,
        /// Folder with the MiniLM weights (default: `$SWITCHYARD_MODELS_DIR`).
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// The daemon's base URL (for `--from-ledger`).
        #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An admin API key (not needed on an open loopback).
        #[arg(long, env = "SWITCHYARD_ADMIN_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Replay a running daemon's recent routed calls through a candidate policy.
    Simulate {
        /// The candidate policy: JSON, or TOML (a `[routing]` table or its fields).
        #[arg(long)]
        policy: PathBuf,
        /// Routed calls to replay, newest first.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// The daemon's base URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An admin API key (not needed on an open loopback).
        #[arg(long, env = "SWITCHYARD_ADMIN_KEY", hide_env_values = true)]
        key: Option<String>,
    },
}

/// `switchyard cache ...`
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Train the semantic-cache verifier on labelled question pairs and report precision and
    /// recall on a held-out split, beside plain cosine thresholds.
    Eval {
        /// JSONL (or .jsonl.gz) with `text_a`, `text_b`, `label` per line.
        #[arg(long)]
        data: PathBuf,
        /// Use at most this many pairs (from the top of the file).
        #[arg(long, default_value_t = 12_000)]
        limit: usize,
        /// Share held out for the test.
        #[arg(long, default_value_t = 0.3)]
        holdout: f64,
        /// Split seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Precision the threshold is chosen for (on validation pairs).
        #[arg(long, default_value_t = 0.96)]
        target_precision: f32,
        /// Write the verifier here (versioned JSON, for `[cache] verifier`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Folder with the MiniLM weights (default: `$SWITCHYARD_MODELS_DIR`).
        #[arg(long)]
        models_dir: Option<PathBuf>,
    },
}

/// `cache eval`: train, evaluate, print the report table.
pub fn cache_eval(
    opts: &crate::cache::learn::EvalOptions,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.holdout > 0.0 && opts.holdout < 1.0,
        "--holdout must be between 0 and 1"
    );
    anyhow::ensure!(
        opts.target_precision > 0.5 && opts.target_precision < 1.0,
        "--target-precision must be between 0.5 and 1"
    );
    let (report, _) = crate::cache::learn::evaluate(opts, &mut std::io::stderr())?;
    let mut t = table(&["rule", "threshold", "precision", "recall"]);
    for m in &report {
        t.add_row(vec![
            m.name.clone(),
            format!("{:.3}", m.threshold),
            format!("{:.3}", m.precision),
            format!("{:.3}", m.recall),
        ]);
    }
    writeln!(out, "{t}")?;
    Ok(())
}

/// `router eval`: train, evaluate, print the report table.
pub fn router_eval(
    opts: &crate::router::learn::EvalOptions,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.holdout > 0.0 && opts.holdout < 1.0,
        "--holdout must be between 0 and 1"
    );
    let report = crate::router::learn::evaluate(opts, &mut std::io::stderr())?;
    let mut t = table(&[
        "router",
        "APGR",
        "strong share for 95%",
        "weak acc",
        "strong acc",
    ]);
    for m in &report {
        t.add_row(vec![
            m.name.clone(),
            format!("{:.3}", m.quality.apgr),
            format!("{:.1}%", m.quality.strong_share_for_95 * 100.0),
            format!("{:.1}%", m.quality.weak_accuracy * 100.0),
            format!("{:.1}%", m.quality.strong_accuracy * 100.0),
        ]);
    }
    writeln!(out, "{t}")?;
    Ok(())
}

/// Load config for `serve`.
pub fn serve_config(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
) -> Result<Config, ConfigError> {
    Config::load(config.as_deref(), &Overrides { listen, data_dir })
}

/// `check-config`: validate and describe.
pub fn check_config(file: &std::path::Path, out: &mut impl Write) -> Result<(), ConfigError> {
    let c = Config::load(Some(file), &Overrides::default())?;
    let w = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    w(out, format!("{}: ok", file.display()));
    w(out, format!("  listen: {}", c.server.listen));
    w(out, format!("  data_dir: {}", c.server.data_dir.display()));
    w(
        out,
        format!(
            "  keys: {} (unauthenticated loopback: {})",
            c.auth.keys.len(),
            c.auth.allow_unauthenticated_loopback
        ),
    );
    for p in c.providers.values() {
        w(
            out,
            format!("  provider {}: {:?} at {}", p.name, p.kind, p.base_url),
        );
    }
    for (name, targets) in &c.models {
        let chain: Vec<String> = targets
            .iter()
            .map(|t| format!("{}/{}", t.provider, t.model))
            .collect();
        w(out, format!("  model {name}: {}", chain.join(" -> ")));
    }
    Ok(())
}

/// `hash-key`: hash a key from `input`, or generate one.
pub fn hash_key_command(
    generate: bool,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if generate {
        use rand::RngCore;
        let mut raw = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut raw);
        let key = format!("sy-{}", hex::encode(raw));
        writeln!(out, "key:  {key}")?;
        writeln!(out, "hash: {}", hash_key(&key))?;
        return Ok(());
    }
    let mut line = String::new();
    input.read_line(&mut line)?;
    let key = line.trim();
    if key.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no key on standard input",
        ));
    }
    writeln!(out, "{}", hash_key(key))
}

/// `stats`: fetch `/admin/stats` from a running daemon and print it as tables.
pub fn stats_command(
    url: &str,
    key: Option<&str>,
    days: u32,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let endpoint = format!("{}/admin/stats?days={days}", url.trim_end_matches('/'));
    let body = admin_call(&endpoint, key, None)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
    } else {
        write!(out, "{}", render_stats(&body))?;
    }
    Ok(())
}

/// GET (or POST `body` to) an admin endpoint of a running daemon; its error message on failure.
fn admin_call(
    endpoint: &str,
    key: Option<&str>,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut req = match body {
            Some(b) => client.post(endpoint).json(b),
            None => client.get(endpoint),
        }
        .timeout(std::time::Duration::from_secs(60));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {endpoint}: {e}"))?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await?;
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or("no message");
            let param = v["error"]["param"]
                .as_str()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            anyhow::bail!("{endpoint} answered {status}: {msg}{param}");
        }
        anyhow::Ok(v)
    })
}

/// `router train`: gather the rows, train, write the scorer, print a summary line.
pub fn router_train(
    data: Option<PathBuf>,
    ledger: Option<(&str, Option<&str>, usize)>,
    out_path: PathBuf,
    models_dir: PathBuf,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        data.is_some() || ledger.is_some(),
        "give --data FILE, --from-ledger, or both"
    );
    let outcomes = match ledger {
        Some((url, key, limit)) => ledger_outcomes(url, key, limit)?,
        None => Vec::new(),
    };
    let scorer = crate::router::learn::train(
        &crate::router::learn::TrainSources {
            data,
            models_dir,
            outcomes,
            out: out_path.clone(),
        },
        &mut std::io::stderr(),
    )?;
    writeln!(
        out,
        "{}: {}",
        out_path.display(),
        scorer.trained.as_deref().unwrap_or("trained")
    )?;
    Ok(())
}

/// The daemon's recent cascade outcomes: scorer inputs and 0/1 labels.
pub fn ledger_outcomes(
    url: &str,
    key: Option<&str>,
    limit: usize,
) -> anyhow::Result<Vec<(Vec<f32>, f32)>> {
    let endpoint = format!(
        "{}/admin/routing/outcomes?limit={limit}",
        url.trim_end_matches('/')
    );
    let v = admin_call(&endpoint, key, None)?;
    let rows = v["data"].as_array().cloned().unwrap_or_default();
    Ok(rows
        .iter()
        .filter_map(|r| {
            let f: Vec<f32> = serde_json::from_value(r["features"].clone()).ok()?;
            Some((f, r["label"].as_f64()? as f32))
        })
        .collect())
}

/// `router simulate`: replay recent routed calls through a candidate policy (a JSON file, or
/// TOML with or without a `[routing]` table) on a running daemon.
pub fn router_simulate(
    url: &str,
    key: Option<&str>,
    policy: &std::path::Path,
    limit: usize,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(policy)
        .map_err(|e| anyhow::anyhow!("{}: {e}", policy.display()))?;
    let raw: serde_json::Value = if policy.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text)?
    } else {
        use figment::providers::Format;
        let fig = figment::Figment::from(figment::providers::Toml::string(&text));
        let fig = if fig.find_value("routing").is_ok() {
            fig.focus("routing")
        } else {
            fig
        };
        serde_json::to_value(
            fig.extract::<crate::router::policy::RawRouting>()
                .map_err(|e| anyhow::anyhow!("{}: {e}", policy.display()))?,
        )?
    };
    let endpoint = format!("{}/admin/routing/simulate", url.trim_end_matches('/'));
    let v = admin_call(
        &endpoint,
        key,
        Some(&serde_json::json!({"policy": raw, "limit": limit})),
    )?;
    let mut t = table(&[
        "tier",
        "projected calls",
        "projected share",
        "actual calls",
        "actual share",
    ]);
    let tiers: std::collections::BTreeSet<&String> = v["projected"]["tiers"]
        .as_object()
        .into_iter()
        .chain(v["actual"]["tiers"].as_object())
        .flat_map(|m| m.keys())
        .collect();
    for tier in tiers {
        let p = &v["projected"]["tiers"][tier];
        let a = &v["actual"]["tiers"][tier];
        t.add_row(vec![
            tier.clone(),
            p["calls"].as_u64().unwrap_or(0).to_string(),
            pct(&p["share"]),
            a["calls"].as_u64().unwrap_or(0).to_string(),
            pct(&a["share"]),
        ]);
    }
    writeln!(out, "{t}")?;
    writeln!(
        out,
        "{} routed calls replayed, {} would change tier; cost ${:.6} projected vs ${:.6} actual",
        v["replayed"],
        v["changed"],
        v["projected"]["cost_usd"].as_f64().unwrap_or(0.0),
        v["actual"]["cost_usd"].as_f64().unwrap_or(0.0)
    )?;
    if let Some(u) = v["unpriced_models"].as_array().filter(|u| !u.is_empty()) {
        writeln!(out, "no price for: {u:?} (counted as $0; see [prices])")?;
    }
    Ok(())
}

fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(header.iter().copied());
    for i in 1..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    t
}

fn ms(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"))
}

fn pct(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0))
}

/// The terminal rendering of `/admin/stats`: latency percentiles, then each day's totals by
/// dimension (most expensive first), budgets and the ledger's own health.
pub fn render_stats(s: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let mut lat = table(&[
        "latency", "by", "value", "window", "calls", "p50 ms", "p95 ms", "p99 ms", "max ms",
    ]);
    let mut rows = 0;
    for (metric, dims) in s["latency"].as_object().into_iter().flatten() {
        for (dim, values) in dims.as_object().into_iter().flatten() {
            for (value, windows) in values.as_object().into_iter().flatten() {
                let (label, p) = ["300s", "900s", "all_time"]
                    .iter()
                    .find_map(|w| windows.get(*w).map(|p| (*w, p)))
                    .unwrap_or(("-", &serde_json::Value::Null));
                lat.add_row(vec![
                    metric.clone(),
                    dim.clone(),
                    if value.is_empty() {
                        "*".to_owned()
                    } else {
                        value.clone()
                    },
                    label.to_owned(),
                    p["count"].to_string(),
                    ms(&p["p50_ms"]),
                    ms(&p["p95_ms"]),
                    ms(&p["p99_ms"]),
                    ms(&p["max_ms"]),
                ]);
                rows += 1;
            }
        }
    }
    if rows > 0 {
        let _ = writeln!(o, "{lat}\n");
    }
    for day in s["days"].as_array().into_iter().flatten() {
        let t = &day["totals"];
        let _ = writeln!(
            o,
            "{}: {} calls ({} errors), {} prompt + {} completion tokens, ${:.6}, cache hits {}, local {}, saved ${:.6}",
            day["day"].as_str().unwrap_or("?"),
            t["requests"],
            t["errors"],
            t["prompt_tokens"],
            t["completion_tokens"],
            t["cost_usd"].as_f64().unwrap_or(0.0),
            pct(&t["cache_hit_rate"]),
            pct(&t["local_share"]),
            t["savings_usd"].as_f64().unwrap_or(0.0),
        );
        for (dim, values) in day["by"].as_object().into_iter().flatten() {
            let mut entries: Vec<(&String, &serde_json::Value)> =
                values.as_object().into_iter().flatten().collect();
            entries.sort_by(|a, b| {
                let cost = |v: &serde_json::Value| v["cost_pusd"].as_u64().unwrap_or(0);
                cost(b.1).cmp(&cost(a.1)).then(a.0.cmp(b.0))
            });
            let mut tb = table(&[
                dim.as_str(),
                "calls",
                "errors",
                "prompt",
                "completion",
                "cost $",
                "cache hit",
                "local",
            ]);
            for (name, v) in entries.iter().take(20) {
                tb.add_row(vec![
                    (*name).clone(),
                    v["requests"].to_string(),
                    v["errors"].to_string(),
                    v["prompt_tokens"].to_string(),
                    v["completion_tokens"].to_string(),
                    format!("{:.6}", v["cost_usd"].as_f64().unwrap_or(0.0)),
                    pct(&v["cache_hit_rate"]),
                    pct(&v["local_share"]),
                ]);
            }
            let _ = writeln!(o, "{tb}");
        }
        o.push('\n');
    }
    let budgets = s["budgets"].as_array().map_or(&[][..], Vec::as_slice);
    if !budgets.is_empty() {
        let mut tb = table(&["budget", "name", "spent $", "soft $", "hard $", "state"]);
        for b in budgets {
            let state = if b["over_hard"] == true {
                "OVER HARD"
            } else if b["over_soft"] == true {
                "over soft"
            } else {
                "ok"
            };
            tb.add_row(vec![
                b["scope"].as_str().unwrap_or("").to_owned(),
                b["name"].as_str().unwrap_or("").to_owned(),
                format!("{:.6}", b["spent_usd"].as_f64().unwrap_or(0.0)),
                b["soft_usd"]
                    .as_f64()
                    .map_or("-".to_owned(), |x| format!("{x:.6}")),
                b["hard_usd"]
                    .as_f64()
                    .map_or("-".to_owned(), |x| format!("{x:.6}")),
                state.to_owned(),
            ]);
        }
        let _ = writeln!(o, "{tb}");
    }
    let l = &s["ledger"];
    let _ = writeln!(
        o,
        "ledger: {} records, {} queued, {} dropped (buffer full {}, write errors {}), flush every {} ms",
        l["records"], l["queued"], l["dropped"], l["dropped_buffer_full"], l["dropped_write_error"], l["flush_ms"]
    );
    o
}

/// `switchyard jobs ...`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Queue a job from a JSON file (`{"operation": ..., ...}`, as for `POST /v1/jobs`).
    Submit {
        /// The job's JSON.
        file: PathBuf,
        /// Follow it with a progress bar until it finishes.
        #[arg(long)]
        watch: bool,
        /// The daemon's base URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An API key (not needed on an open loopback).
        #[arg(long, env = "SWITCHYARD_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Follow a job with a progress bar until it finishes; prints its result.
    Watch {
        /// Job id.
        id: String,
        /// The daemon's base URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An API key (not needed on an open loopback).
        #[arg(long, env = "SWITCHYARD_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// List recent jobs.
    List {
        /// Only jobs in this state (queued, running, succeeded, failed, cancelled, expired).
        #[arg(long)]
        state: Option<String>,
        /// Most jobs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The daemon's base URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An API key (not needed on an open loopback).
        #[arg(long, env = "SWITCHYARD_KEY", hide_env_values = true)]
        key: Option<String>,
    },
}

fn api_request(rb: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    match key {
        Some(k) => rb.bearer_auth(k),
        None => rb,
    }
}

async fn api_json(resp: reqwest::Response, what: &str) -> anyhow::Result<serde_json::Value> {
    let status = resp.status();
    let v: serde_json::Value = resp.json().await?;
    if !status.is_success() {
        let msg = v["error"]["message"].as_str().unwrap_or("no message");
        anyhow::bail!("{what} answered {status}: {msg}");
    }
    Ok(v)
}

/// `jobs ...`: submit, watch with a progress bar, list.
pub fn jobs_command(cmd: JobsCommand, out: &mut impl Write) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        match cmd {
            JobsCommand::Submit {
                file,
                watch,
                url,
                key,
            } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                let body: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                let base = url.trim_end_matches('/').to_owned();
                let rb = client.post(format!("{base}/v1/jobs")).json(&body);
                let job = api_json(
                    api_request(rb, key.as_deref()).send().await?,
                    "POST /v1/jobs",
                )
                .await?;
                let id = job["id"].as_str().unwrap_or_default().to_owned();
                writeln!(out, "{id}")?;
                if let Some(s) = job["webhook"]["secret"].as_str() {
                    writeln!(out, "webhook secret (shown once): {s}")?;
                }
                if watch {
                    watch_job(&client, &base, key.as_deref(), &id, out).await?;
                }
                Ok(())
            }
            JobsCommand::Watch { id, url, key } => {
                watch_job(&client, url.trim_end_matches('/'), key.as_deref(), &id, out).await
            }
            JobsCommand::List {
                state,
                limit,
                url,
                key,
            } => {
                let mut endpoint = format!("{}/v1/jobs?limit={limit}", url.trim_end_matches('/'));
                if let Some(s) = state {
                    endpoint.push_str(&format!("&state={s}"));
                }
                let v = api_json(
                    api_request(client.get(&endpoint), key.as_deref())
                        .send()
                        .await?,
                    "GET /v1/jobs",
                )
                .await?;
                let mut t = table(&["id", "operation", "state", "progress", "created"]);
                for j in v["data"].as_array().into_iter().flatten() {
                    t.add_row(vec![
                        j["id"].as_str().unwrap_or_default().to_owned(),
                        j["operation"].as_str().unwrap_or_default().to_owned(),
                        j["state"].as_str().unwrap_or_default().to_owned(),
                        format!("{}/{}", j["progress"]["done"], j["progress"]["total"]),
                        chrono::DateTime::from_timestamp(j["created_at"].as_i64().unwrap_or(0), 0)
                            .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_default(),
                    ]);
                }
                writeln!(out, "{t}")?;
                Ok(())
            }
        }
    })
}

/// Follow `GET /v1/jobs/{id}/events` with a progress bar; print the final state and result.
async fn watch_job(
    client: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    id: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let resp = api_request(client.get(format!("{base}/v1/jobs/{id}/events")), key)
        .send()
        .await?;
    if !resp.status().is_success() {
        api_json(resp, "GET /v1/jobs/{id}/events").await?;
        anyhow::bail!("the job's events could not be read");
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg:>10} [{bar:40}] {pos}/{len} units, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let name = event
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            let data: serde_json::Value = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            bar.set_length(data["progress"]["total"].as_u64().unwrap_or(0));
            bar.set_position(data["progress"]["done"].as_u64().unwrap_or(0));
            bar.set_message(data["state"].as_str().unwrap_or_default().to_owned());
            if name == "done" {
                bar.finish();
                writeln!(
                    out,
                    "{}: {}",
                    id,
                    data["state"].as_str().unwrap_or_default()
                )?;
                let shown = if data["result"].is_null() {
                    &data["error"]
                } else {
                    &data["result"]
                };
                writeln!(out, "{}", serde_json::to_string_pretty(shown)?)?;
                return Ok(());
            }
        }
    }
    anyhow::bail!("the event stream ended before the job finished")
}
