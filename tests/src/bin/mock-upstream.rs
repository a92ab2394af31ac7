//! `mock-upstream`: the mock provider server as a process, for scripts and load benchmarks.

use std::net::SocketAddr;

use clap::Parser;
use switchyard_tests::mock::{FaultRates, Latency, MockConfig, MockServer};

/// A mock LLM provider speaking real wire formats, with fault knobs.
#[derive(Debug, Parser)]
#[command(name = "mock-upstream", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Latency of whole answers: `250`, `500..10000`, `lognormal:800,8000` (ms).
    #[arg(long, default_value = "0", value_parser = Latency::parse)]
    latency: Latency,
    /// Time to first streamed token (same forms).
    #[arg(long, default_value = "0", value_parser = Latency::parse)]
    ttft: Latency,
    /// Delay between streamed tokens (same forms).
    #[arg(long, default_value = "0", value_parser = Latency::parse)]
    itl: Latency,
    /// Fault rates as JSON, e.g. '{"status_500":0.1,"reset":0.05}'.
    #[arg(long)]
    faults: Option<String>,
    /// Words per reply.
    #[arg(long, default_value_t = 12)]
    reply_words: usize,
    /// Require this API key, sent the way each format sends it.
    #[arg(long, env = "MOCK_UPSTREAM_API_KEY")]
    api_key: Option<String>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let faults: FaultRates = match &args.faults {
        Some(s) => serde_json::from_str(s)?,
        None => FaultRates::default(),
    };
    let config = MockConfig {
        latency: args.latency,
        ttft: args.ttft,
        itl: args.itl,
        faults,
        reply_words: args.reply_words,
        api_key: args.api_key,
        ..MockConfig::default()
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    rt.enable_all().build()?.block_on(async move {
        let server = MockServer::start(args.listen, config).await?;
        tracing::info!(addr = %server.addr(), "mock upstream listening");
        server.wait().await;
        anyhow::Ok(())
    })
}
