//! `local_bench`: throughput and latency of the local models on this machine.
//!
//! Embeddings per second at batch 1 and batch 32 over the sentences in a file (one per line),
//! single-request embedding latency p50/p99, and SmolLM2 prompt-processing and decode tokens per
//! second. Prints one JSON object, so a script can set it beside a baseline measured in the same
//! run (see scripts/bench-local.sh).

use std::time::Instant;

/// The daemon's allocator (see core/src/main.rs), so the models are timed as the daemon runs
/// them: glibc hands large tensors back to the kernel and faults fresh pages in every call.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use switchyard_models::classify::{Label, ZeroShot};
use switchyard_models::router::{Scorer, TrainOptions, CHEAP_FEATURES};
use switchyard_models::{Embedder, GenParams, Generator, ModelStore, Precision};

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
    /// Skip the embedding and classification benchmarks.
    #[arg(long)]
    no_embeddings: bool,
    /// Routing prompts (JSONL with `prompt`, e.g. shared/data/routing/mmlu-dev.jsonl): time the
    /// routing decision with its embedding (embed, features, scorer) one prompt at a time.
    #[arg(long)]
    routing_prompts: Option<std::path::PathBuf>,
    /// Tokens of each routing prompt embedded (the scorer's window).
    #[arg(long, default_value_t = switchyard_models::router::PROMPT_WINDOW)]
    routing_window: usize,
    /// How many routing prompts to time, spread evenly over the file (more gives a steadier
    /// p99: at 1,024 it is the 11th-slowest call).
    #[arg(long, default_value_t = 1024)]
    routing_count: usize,
    /// How SmolLM2's matrices are held: q8_0, f32 or stored (the file's Q4_1).
    #[arg(long, default_value = "q8_0")]
    precision: Precision,
}

fn main() -> anyhow::Result<()> {
    // As `switchyard serve` does, before any thread starts.
    switchyard_models::settle_thread_count();
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

    let mut out = serde_json::json!({
        "sentences": sentences.len(),
        "threads": std::thread::available_parallelism().map_or(1, usize::from),
        "precision": format!("{:?}", args.precision),
    });
    if !args.no_embeddings {
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
        // The whole list in one call, as sentence-transformers' `encode(batch_size=32)` takes it:
        // both sort by length and run batches of 32.
        let t = Instant::now();
        embedder.embed(&sentences)?;
        let batch32 = sentences.len() as f64 / t.elapsed().as_secs_f64();

        // Zero-shot classification of one text at a time among four described labels, with the
        // label centroids embedded once (as the daemon keeps them per label set), and cold (the
        // labels embedded on every call, as for a label set never seen before).
        let labels: Vec<Label> = [
            (
                "technology",
                "computers, software, phones, the internet and programming",
            ),
            (
                "health",
                "medicine, illness, diet, fitness and the human body",
            ),
            (
                "money",
                "finance, jobs, salaries, investing, banks and prices",
            ),
            (
                "people",
                "relationships, society, history, politics and culture",
            ),
        ]
        .iter()
        .map(|(name, d)| Label {
            name: (*name).to_owned(),
            description: Some((*d).to_owned()),
            examples: Vec::new(),
        })
        .collect();
        let zs = ZeroShot::new(&embedder, &labels)?;
        let mut classify = Histogram::<u64>::new(3)?;
        for s in sentences.iter().take(256) {
            let t1 = Instant::now();
            zs.classify(&embedder, &[s])?;
            classify.record(t1.elapsed().as_micros() as u64)?;
        }
        let mut classify_cold = Histogram::<u64>::new(3)?;
        for s in sentences.iter().take(64) {
            let t1 = Instant::now();
            switchyard_models::classify::zero_shot(&embedder, &[s], &labels)?;
            classify_cold.record(t1.elapsed().as_micros() as u64)?;
        }
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        if let Some(path) = &args.routing_prompts {
            // Prompts spread evenly over the file (it is sorted by subject, and subjects differ
            // in length).
            let all = switchyard_models::router::load_examples(path)?;
            let step = (all.len() / args.routing_count.max(1)).max(1);
            let prompts: Vec<String> = all
                .into_iter()
                .step_by(step)
                .take(args.routing_count)
                .map(|e| e.prompt)
                .collect();
            // A scorer of the real shape (its weights do not change its speed).
            let dim = embedder.dim() + CHEAP_FEATURES;
            let xs: Vec<Vec<f32>> = (0..32)
                .map(|i| {
                    (0..dim)
                        .map(|j| ((i * 31 + j * 17) % 97) as f32 / 97.0)
                        .collect()
                })
                .collect();
            let ys: Vec<f32> = (0..32).map(|i| f32::from(u8::from(i % 3 == 0))).collect();
            let mut scorer = Scorer::train(
                &xs,
                &ys,
                TrainOptions {
                    epochs: 2,
                    ..TrainOptions::default()
                },
            )?;
            scorer.window = args.routing_window;
            // The scorer's window of each prompt (what the daemon embeds to route), and for
            // comparison the whole prompt (up to 256 tokens).
            let mut route = Histogram::<u64>::new(3)?;
            let mut whole = Histogram::<u64>::new(3)?;
            let mut tokens = 0usize;
            // A few untimed calls first, as a running daemon has made them: the first calls
            // at a new shape fault in the allocator's pages.
            for p in prompts.iter().take(8) {
                std::hint::black_box(embedder.embed_head(&[p.as_str()], scorer.window)?);
            }
            for p in &prompts {
                let t1 = Instant::now();
                let (v, n) = embedder.embed_head(&[p.as_str()], scorer.window)?;
                let x = switchyard_models::router::features(&v[0], p);
                std::hint::black_box(scorer.score(&x));
                route.record(t1.elapsed().as_micros() as u64)?;
                tokens += n[0];
                let t1 = Instant::now();
                let (v, _) = embedder.embed(&[p.as_str()])?;
                let x = switchyard_models::router::features(&v[0], p);
                std::hint::black_box(scorer.score(&x));
                whole.record(t1.elapsed().as_micros() as u64)?;
            }
            out["routing_prompts"] = prompts.len().into();
            out["routing_prompt_tokens_mean"] =
                (tokens as f64 / prompts.len().max(1) as f64).into();
            out["routing_window_tokens"] = scorer.window.into();
            out["routing_with_embedding_p50_ms"] = ms(&route, 0.5).into();
            out["routing_with_embedding_p99_ms"] = ms(&route, 0.99).into();
            out["routing_whole_prompt_p50_ms"] = ms(&whole, 0.5).into();
            out["routing_whole_prompt_p99_ms"] = ms(&whole, 0.99).into();
        }
        for (k, v) in [
            ("embed_per_s_batch1", batch1),
            ("embed_per_s_batch32", batch32),
            ("embed_latency_p50_ms", ms(&single, 0.5)),
            ("embed_latency_p99_ms", ms(&single, 0.99)),
            ("classify_latency_p50_ms", ms(&classify, 0.5)),
            ("classify_latency_p99_ms", ms(&classify, 0.99)),
            ("classify_cold_latency_p50_ms", ms(&classify_cold, 0.5)),
            ("classify_cold_latency_p99_ms", ms(&classify_cold, 0.99)),
        ] {
            out[k] = v.into();
        }
    }

    if !args.no_generation {
        let t = Instant::now();
        let mut gen = Generator::load_as(&store.resolve("smollm2")?, &device, args.precision)?;
        out["generator_load_s"] = t.elapsed().as_secs_f64().into();
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
