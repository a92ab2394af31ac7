//! `loadgen`: drive an HTTP endpoint directly and through Switchyard in one run, and report
//! the gateway's added latency and throughput ratio.
//!
//! Fixed-rate phases are open-loop: request *i* is sent at `start + i/rate` whether or not
//! earlier ones have answered, so a stalled server cannot slow the offered load and hide its
//! queueing (no coordinated omission). Latency is timed from the moment each request is handed
//! to the client (the timer wheel's 1 ms granularity would otherwise dominate sub-millisecond
//! figures). The max-rate phase is closed-loop with a fixed number of connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Compare an upstream endpoint with the same endpoint through the gateway.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Direct URL (the upstream itself).
    #[arg(long)]
    direct: String,
    /// Gateway URL (the same upstream through Switchyard).
    #[arg(long)]
    gateway: String,
    /// Request body for the direct target (JSON).
    #[arg(long)]
    direct_body: String,
    /// Request body for the gateway (JSON).
    #[arg(long)]
    gateway_body: String,
    /// Fixed request rates to run, per second.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
    rates: Vec<u64>,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections for the max-rate phase.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Warm-up seconds before each target's phases.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// More gateways to run with the gateway body, as `NAME=URL` (e.g. the same gateway with
    /// a feature turned off); each is compared with `--gateway`.
    #[arg(long = "compare")]
    compare: Vec<String>,
    /// Split each fixed-rate phase into this many slices, alternating between targets.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Skip the max-rate phase.
    #[arg(long)]
    no_max: bool,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One phase's result.
#[derive(Debug, Clone, serde::Serialize)]
struct Phase {
    target: String,
    mode: String,
    sent: u64,
    ok: u64,
    errors: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

fn client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(conn)
}

async fn one(client: &HttpClient, url: &hyper::Uri, body: &Bytes) -> bool {
    let req = hyper::Request::post(url.clone())
        .header("content-type", "application/json")
        .body(Full::new(body.clone()));
    let Ok(req) = req else { return false };
    match client.request(req).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            ok && resp.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

fn new_hist() -> anyhow::Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).context("histogram")
}

fn summarise(
    target: &str,
    mode: String,
    hist: &Histogram<u64>,
    sent: u64,
    errors: u64,
    elapsed: Duration,
) -> Phase {
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Phase {
        target: target.to_owned(),
        mode,
        sent,
        ok: hist.len(),
        errors,
        rps: hist.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
    }
}

/// What one fixed-rate run measured.
struct Raw {
    hist: Histogram<u64>,
    sent: u64,
    errors: u64,
    elapsed: Duration,
}

async fn fixed_rate(
    client: &HttpClient,
    url: &hyper::Uri,
    body: &Bytes,
    rate: u64,
    secs: f64,
) -> anyhow::Result<Raw> {
    let hist = Arc::new(Mutex::new(new_hist()?));
    let errors = Arc::new(AtomicU64::new(0));
    let total = (rate as f64 * secs).round() as u64;
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due).await;
        let (client, url, body, hist, errors) = (
            client.clone(),
            url.clone(),
            body.clone(),
            hist.clone(),
            errors.clone(),
        );
        tasks.spawn(async move {
            let sent = Instant::now();
            if one(&client, &url, &body).await {
                let us = sent.elapsed().as_micros() as u64;
                if let Ok(mut h) = hist.lock() {
                    let _ = h.record(us.max(1));
                }
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let hist = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    Ok(Raw {
        hist,
        sent: total,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
    })
}

async fn max_rate(
    client: &HttpClient,
    url: &hyper::Uri,
    body: &Bytes,
    conns: usize,
    secs: u64,
    target: &str,
) -> anyhow::Result<Phase> {
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        let mut hist = new_hist()?;
        tasks.spawn(async move {
            let mut errors = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                if one(&client, &url, &body).await {
                    let _ = hist.record((t.elapsed().as_micros() as u64).max(1));
                } else {
                    errors += 1;
                }
            }
            (hist, errors)
        });
    }
    let mut all = new_hist()?;
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (h, e) = r?;
        all.add(&h).context("merge histograms")?;
        errors += e;
    }
    let elapsed = start.elapsed();
    Ok(summarise(
        target,
        format!("max ({conns} conns)"),
        &all,
        all.len() + errors,
        errors,
        elapsed,
    ))
}

/// One endpoint under test.
struct Target {
    name: String,
    url: hyper::Uri,
    body: Bytes,
    client: HttpClient,
}

impl Target {
    async fn new(args: &Args, name: &str, url: &str, body: &str) -> anyhow::Result<Self> {
        let t = Self {
            name: name.to_owned(),
            url: url.parse().context("bad URL")?,
            body: Bytes::from(body.to_owned()),
            client: client(),
        };
        if !one(&t.client, &t.url, &t.body).await {
            anyhow::bail!("{name}: a test request to {url} failed");
        }
        let _ = max_rate(
            &t.client,
            &t.url,
            &t.body,
            args.connections.min(8),
            args.warmup,
            name,
        )
        .await?;
        Ok(t)
    }
}

/// Every phase of every target. Fixed-rate phases are split into `rounds` slices that
/// alternate between targets, so slow drift of a shared machine hits them all alike.
async fn run_all(args: &Args, targets: &[Target]) -> anyhow::Result<Vec<Vec<Phase>>> {
    let mut out: Vec<Vec<Phase>> = targets.iter().map(|_| Vec::new()).collect();
    let rounds = args.rounds.max(1);
    let slice = args.seconds as f64 / f64::from(rounds);
    for &rate in &args.rates {
        let mut acc: Vec<Option<Raw>> = targets.iter().map(|_| None).collect();
        for _ in 0..rounds {
            for (t, slot) in targets.iter().zip(acc.iter_mut()) {
                let r = fixed_rate(&t.client, &t.url, &t.body, rate, slice).await?;
                match slot {
                    Some(a) => {
                        a.hist.add(&r.hist).context("merge histograms")?;
                        a.sent += r.sent;
                        a.errors += r.errors;
                        a.elapsed += r.elapsed;
                    }
                    None => *slot = Some(r),
                }
            }
        }
        for ((t, slot), phases) in targets.iter().zip(acc).zip(out.iter_mut()) {
            if let Some(r) = slot {
                phases.push(summarise(
                    &t.name,
                    format!("{rate} rps"),
                    &r.hist,
                    r.sent,
                    r.errors,
                    r.elapsed,
                ));
            }
        }
    }
    if !args.no_max {
        for (t, phases) in targets.iter().zip(out.iter_mut()) {
            phases.push(
                max_rate(
                    &t.client,
                    &t.url,
                    &t.body,
                    args.connections,
                    args.seconds,
                    &t.name,
                )
                .await?,
            );
        }
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut targets = vec![
            Target::new(&args, "direct", &args.direct, &args.direct_body).await?,
            Target::new(&args, "gateway", &args.gateway, &args.gateway_body).await?,
        ];
        for c in &args.compare {
            let (name, url) = c.split_once('=').context("--compare takes NAME=URL")?;
            targets.push(Target::new(&args, name, url, &args.gateway_body).await?);
        }
        let mut all = run_all(&args, &targets).await?.into_iter();
        let direct = all.next().unwrap_or_default();
        let gateway = all.next().unwrap_or_default();
        let compared: Vec<Vec<Phase>> = all.collect();
        let mut out = std::io::stdout().lock();
        use std::io::Write;
        writeln!(
            out,
            "{:<8} {:<16} {:>8} {:>7} {:>10} {:>9} {:>9} {:>9}",
            "target", "mode", "ok", "errors", "rps", "p50 ms", "p99 ms", "p99.9 ms"
        )?;
        for p in direct
            .iter()
            .chain(gateway.iter())
            .chain(compared.iter().flatten())
        {
            writeln!(
                out,
                "{:<8} {:<16} {:>8} {:>7} {:>10.0} {:>9.3} {:>9.3} {:>9.3}",
                p.target, p.mode, p.ok, p.errors, p.rps, p.p50_ms, p.p99_ms, p.p999_ms
            )?;
        }
        writeln!(out, "\nadded by the gateway (gateway - direct):")?;
        writeln!(
            out,
            "{:<16} {:>10} {:>10} {:>10} {:>10}",
            "mode", "p50 ms", "p99 ms", "p99.9 ms", "rps ratio"
        )?;
        for (d, g) in direct.iter().zip(gateway.iter()) {
            writeln!(
                out,
                "{:<16} {:>+10.3} {:>+10.3} {:>+10.3} {:>10.3}",
                d.mode,
                g.p50_ms - d.p50_ms,
                g.p99_ms - d.p99_ms,
                g.p999_ms - d.p999_ms,
                g.rps / d.rps
            )?;
        }
        for other in &compared {
            let Some(name) = other.first().map(|p| p.target.clone()) else {
                continue;
            };
            writeln!(out, "\nadded by `{name}` vs added by `gateway`:")?;
            writeln!(
                out,
                "{:<16} {:>12} {:>12} {:>10} {:>16}",
                "mode", "gateway p99", "other p99", "ratio", "gateway/other rps"
            )?;
            for ((d, g), o) in direct.iter().zip(gateway.iter()).zip(other.iter()) {
                let (ga, oa) = (g.p99_ms - d.p99_ms, o.p99_ms - d.p99_ms);
                writeln!(
                    out,
                    "{:<16} {:>+12.3} {:>+12.3} {:>10.3} {:>16.3}",
                    d.mode,
                    ga,
                    oa,
                    if oa.abs() > f64::EPSILON {
                        ga / oa
                    } else {
                        f64::NAN
                    },
                    g.rps / o.rps
                )?;
            }
        }
        if let Some(path) = &args.json {
            let rows: Vec<&Phase> = direct
                .iter()
                .chain(gateway.iter())
                .chain(compared.iter().flatten())
                .collect();
            std::fs::write(path, serde_json::to_vec_pretty(&rows)?)?;
        }
        anyhow::Ok(())
    })
}
