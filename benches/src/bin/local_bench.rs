//! `local_bench`: throughput and latency of the local models on this machine.
//!
//! Embeddings per second at batch 1 and batch 32 over the sentences in a file (one per line),
//! single-request embedding latency p50/p99, and SmolLM2 prompt-processing and decode tokens per
//! second. Prints one JSON object, so a script can set it beside a baseline measured in the same
//! run (see scripts/bench-local.sh).

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use switchyard_models::{Embedder, GenParams, Generator, ModelStore};

/// Measure the local models.
#[derive(Debug, Parser)]
#[command(name = "local_bench")]
struct Args {
    /// Sentences, one per line.
    #[arg(long)]
    sentences: std::path::PathBuf,
    /// How many sentences to use.
    #[arg(long, default_value_t = 512)]
    count: usize,
    /// Tokens to decode in the generation benchmark.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Skip the generation benchmark.
    #[arg(long)]
    no_generation: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.sentences).context("reading sentences")?;
    let sentences: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(args.count)
        .collect();
    anyhow::ensure!(
        !sentences.is_empty(),
        "no sentences in {}",
        args.sentences.display()
    );
    let store = ModelStore::new(ModelStore::default_dir());
    let device = candle_core::Device::Cpu;

    let embedder = Embedder::load(&store.resolve("minilm")?, &device)?;
    embedder.embed(&sentences[..8.min(sentences.len())])?; // warm-up
    let mut single = Histogram::<u64>::new(3)?;
    let t = Instant::now();
    for s in &sentences {
        let t1 = Instant::now();
        embedder.embed(&[s])?;
        single.record(t1.elapsed().as_micros() as u64)?;
    }
    let batch1 = sentences.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for chunk in sentences.chunks(32) {
        embedder.embed(chunk)?;
    }
    let batch32 = sentences.len() as f64 / t.elapsed().as_secs_f64();

    let mut out = serde_json::json!({
        "sentences": sentences.len(),
        "embed_per_s_batch1": batch1,
        "embed_per_s_batch32": batch32,
        "embed_latency_p50_ms": single.value_at_quantile(0.5) as f64 / 1000.0,
        "embed_latency_p99_ms": single.value_at_quantile(0.99) as f64 / 1000.0,
        "threads": std::thread::available_parallelism().map_or(1, usize::from),
        "dequantize_all": std::env::var("CANDLE_DEQUANTIZE_ALL").is_ok(),
    });

    if !args.no_generation {
        let mut gen = Generator::load(&store.resolve("smollm2")?, &device)?;
        let context = sentences
            .iter()
            .take(20)
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let prompt = Generator::chat_prompt([(
            "user",
            format!("Summarise these questions: {context}").as_str(),
        )]);
        let prompt_tokens = gen.encode(&prompt)?.len();
        // prompt processing: time to the first generated token
        let one = GenParams {
            max_tokens: 1,
            ..GenParams::default()
        };
        gen.generate(&prompt, &one, |_| true)?;
        let t = Instant::now();
        gen.generate(&prompt, &one, |_| true)?;
        let prefill = t.elapsed().as_secs_f64();
        // decode: generate a fixed budget after a short prompt
        let short =
            Generator::chat_prompt([("user", "Write a long story about a lighthouse keeper.")]);
        let params = GenParams {
            max_tokens: args.decode_tokens,
            ..GenParams::default()
        };
        let t = Instant::now();
        let first = gen.generate(
            &short,
            &GenParams {
                max_tokens: 1,
                ..GenParams::default()
            },
            |_| true,
        )?;
        let short_prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let r = gen.generate(&short, &params, |_| true)?;
        let total = t.elapsed().as_secs_f64();
        let decode_tps =
            (r.completion_tokens.saturating_sub(1)) as f64 / (total - short_prefill).max(1e-9);
        out["prompt_tokens"] = prompt_tokens.into();
        out["prefill_tok_per_s"] = (prompt_tokens as f64 / prefill).into();
        out["decode_tokens"] = r.completion_tokens.into();
        out["decode_tok_per_s"] = decode_tps.into();
        let _ = first;
    }
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, serde_json::to_string_pretty(&out)?.as_bytes())?;
    std::io::Write::write_all(&mut stdout, b"\n")?;
    Ok(())
}
