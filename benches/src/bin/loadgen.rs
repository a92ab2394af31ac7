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

async fn fixed_rate(
    client: &HttpClient,
    url: &hyper::Uri,
    body: &Bytes,
    rate: u64,
    secs: u64,
    target: &str,
) -> anyhow::Result<Phase> {
    let hist = Arc::new(Mutex::new(new_hist()?));
    let errors = Arc::new(AtomicU64::new(0));
    let total = rate * secs;
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
    let h = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    Ok(summarise(
        target,
        format!("{rate} rps"),
        &h,
        total,
        errors.load(Ordering::Relaxed),
        elapsed,
    ))
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

async fn run_target(
    args: &Args,
    target: &str,
    url: &str,
    body: &str,
) -> anyhow::Result<Vec<Phase>> {
    let url: hyper::Uri = url.parse().context("bad URL")?;
    let body = Bytes::from(body.to_owned());
    let client = client();
    if !one(&client, &url, &body).await {
        anyhow::bail!("{target}: a test request to {url} failed");
    }
    let _ = max_rate(
        &client,
        &url,
        &body,
        args.connections.min(8),
        args.warmup,
        target,
    )
    .await?;
    let mut out = Vec::new();
    for &rate in &args.rates {
        out.push(fixed_rate(&client, &url, &body, rate, args.seconds, target).await?);
    }
    if !args.no_max {
        out.push(max_rate(&client, &url, &body, args.connections, args.seconds, target).await?);
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
        let direct = run_target(&args, "direct", &args.direct, &args.direct_body).await?;
        let gateway = run_target(&args, "gateway", &args.gateway, &args.gateway_body).await?;
        let mut compared = Vec::new();
        for c in &args.compare {
            let (name, url) = c.split_once('=').context("--compare takes NAME=URL")?;
            compared.push(run_target(&args, name, url, &args.gateway_body).await?);
        }
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
                "{:<16} {:>12} {:>12} {:>10}",
                "mode", "gateway p99", "other p99", "ratio"
            )?;
            for ((d, g), o) in direct.iter().zip(gateway.iter()).zip(other.iter()) {
                let (ga, oa) = (g.p99_ms - d.p99_ms, o.p99_ms - d.p99_ms);
                writeln!(
                    out,
                    "{:<16} {:>+12.3} {:>+12.3} {:>10.3}",
                    d.mode,
                    ga,
                    oa,
                    if oa.abs() > f64::EPSILON {
                        ga / oa
                    } else {
                        f64::NAN
                    }
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
