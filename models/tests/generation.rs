//! SmolLM2 with the real GGUF weights (fetched by scripts/fetch-models.sh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use switchyard_models::{Finish, GenParams, Generator, ModelStore};

fn generator() -> Generator {
    let files = ModelStore::new(ModelStore::default_dir())
        .resolve("smollm2")
        .expect("SmolLM2 weights: run scripts/fetch-models.sh");
    Generator::load(&files, &candle_core::Device::Cpu).unwrap()
}

#[test]
fn tokenizer_from_gguf_metadata() {
    let g = generator();
    let t = g.tokenizer();
    // SmolLM2's special tokens sit at the start of the vocabulary.
    assert_eq!(t.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(t.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
    let ids = g
        .encode("<|im_start|>user\nHello, world!<|im_end|>")
        .unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    // byte-level BPE: words with a leading space are single tokens; digits split one by one
    let hello = g.encode("Hello world").unwrap();
    assert_eq!(hello.len(), 2, "{hello:?}");
    assert_eq!(t.id_to_token(hello[1]).as_deref(), Some("Ġworld"));
    assert_eq!(g.encode("2024").unwrap().len(), 4);
    for s in [
        "Hello, world!",
        "naïve café – 日本語 🙂",
        "  two  spaces\nand\ttabs",
    ] {
        let ids = g.encode(s).unwrap();
        assert_eq!(t.decode(&ids, false).unwrap(), s, "round trip");
    }
}

#[test]
fn greedy_answers_are_deterministic_and_stream_in_order() {
    let mut g = generator();
    let prompt =
        Generator::chat_prompt([("user", "What is the capital of France? Answer in one word.")]);
    let params = GenParams {
        max_tokens: 12,
        ..GenParams::default()
    };
    let mut pieces = Vec::new();
    let out = g
        .generate(&prompt, &params, |p| {
            pieces.push(p.to_owned());
            true
        })
        .unwrap();
    assert!(out.text.contains("Paris"), "{out:?}");
    assert_eq!(
        pieces.concat(),
        out.text,
        "streamed pieces add up to the text, in order"
    );
    assert!(out.completion_tokens <= 12 && out.prompt_tokens > 10);
    assert!(out.mean_logprob < 0.0 && out.mean_logprob > -5.0);
    let again = g.generate(&prompt, &params, |_| true).unwrap();
    assert_eq!(again.text, out.text);
}

#[test]
fn stop_sequences_and_budgets_end_generation() {
    let mut g = generator();
    let prompt = Generator::chat_prompt([("user", "Count from 1 to 20, separated by commas.")]);
    let params = GenParams {
        max_tokens: 60,
        stop: vec!["5".to_owned()],
        ..GenParams::default()
    };
    let mut streamed = String::new();
    let out = g
        .generate(&prompt, &params, |p| {
            streamed.push_str(p);
            true
        })
        .unwrap();
    assert_eq!(out.finish, Finish::StopSequence("5".to_owned()), "{out:?}");
    assert!(!out.text.contains('5') && out.text.contains('4'), "{out:?}");
    assert_eq!(
        streamed, out.text,
        "nothing past the stop sequence was streamed"
    );

    let short = GenParams {
        max_tokens: 3,
        ..GenParams::default()
    };
    let out = g.generate(&prompt, &short, |_| true).unwrap();
    assert_eq!(out.finish, Finish::Length);
    assert_eq!(out.completion_tokens, 3);

    let sampled = GenParams {
        max_tokens: 8,
        temperature: Some(0.8),
        top_p: Some(0.9),
        seed: 7,
        stop: Vec::new(),
    };
    let a = g.generate(&prompt, &sampled, |_| true).unwrap();
    let b = g.generate(&prompt, &sampled, |_| true).unwrap();
    assert_eq!(a.text, b.text, "same seed, same sample");
}

#[test]
fn cancelling_stops_early() {
    let mut g = generator();
    let prompt = Generator::chat_prompt([("user", "Write a long story about a dragon.")]);
    let mut n = 0;
    let out = g
        .generate(
            &prompt,
            &GenParams {
                max_tokens: 100,
                ..GenParams::default()
            },
            |_| {
                n += 1;
                n < 3
            },
        )
        .unwrap();
    assert_eq!(out.finish, Finish::Cancelled);
    assert!(out.completion_tokens < 10);
}

#[test]
fn a_summary_keeps_the_key_facts_and_reports_progress() {
    let mut g = generator();
    let text = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was designed \
                by the engineering company of Gustave Eiffel and built between 1887 and 1889 as the \
                entrance to the 1889 World's Fair. It is 330 metres tall and was the tallest \
                man-made structure in the world until 1930. Today it is the most visited paid \
                monument in the world, with about six million visitors a year.";
    let mut seen = Vec::new();
    let s = switchyard_models::summarize::summarize(&mut g, text, 80, |p| {
        seen.push(p);
        true
    })
    .unwrap();
    eprintln!("summary: {}", s.text);
    assert!(s.text.contains("Eiffel"), "{}", s.text);
    assert!(s.text.contains("Paris"), "{}", s.text);
    assert_eq!(s.chunks, 1);
    assert_eq!(seen.last().map(|p| (p.done, p.total)), Some((1, 1)));

    // a long input is chunked, summarised per chunk and reduced, with progress per chunk
    let long = format!("{text} ").repeat(40);
    let pieces = switchyard_models::summarize::chunks(&g, &long, 300).unwrap();
    assert!(pieces.len() > 3, "{}", pieces.len());
    assert!(pieces.iter().all(|p| g.encode(p).unwrap().len() <= 300));
}

/// Every way of holding the weights predicts real text about as well as f32 does (mean
/// log-probability per token, teacher-forced), far better than chance; greedy answers from
/// Q8_0, the default, name the right capital.
#[test]
fn each_precision_predicts_text_as_well_as_f32() {
    use switchyard_models::Precision;
    let files = ModelStore::new(ModelStore::default_dir())
        .resolve("smollm2")
        .expect("SmolLM2 weights: run scripts/fetch-models.sh");
    let text = "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, \
                France. It is named after the engineer Gustave Eiffel, whose company designed and \
                built the tower from 1887 to 1889. Locally nicknamed the Iron Lady, it was \
                constructed as the centrepiece of the 1889 World's Fair.";
    let mut scores = Vec::new();
    for p in [Precision::F32, Precision::Q8, Precision::Stored] {
        let mut g = Generator::load_as(&files, &candle_core::Device::Cpu, p).unwrap();
        let lp = g.mean_logprob(text).unwrap();
        eprintln!(
            "{p:?}: mean log-prob {lp:.4} (perplexity {:.2})",
            (-lp).exp()
        );
        scores.push(lp);
    }
    let chance = -(49_152f32).ln();
    assert!(
        scores[0] > chance / 3.0,
        "f32 {} vs chance {chance}",
        scores[0]
    );
    for (name, lp) in [("q8_0", scores[1]), ("stored", scores[2])] {
        let rel = (lp - scores[0]).abs() / scores[0].abs();
        assert!(
            rel < 0.02,
            "{name}: {lp} vs f32 {}: {rel:.3} apart",
            scores[0]
        );
    }
    let mut g = Generator::load_as(&files, &candle_core::Device::Cpu, Precision::Q8).unwrap();
    let prompt = Generator::chat_prompt([("user", "Which city is the capital of France?")]);
    let out = g
        .generate(
            &prompt,
            &GenParams {
                max_tokens: 16,
                ..GenParams::default()
            },
            |_| true,
        )
        .unwrap();
    assert!(out.text.contains("Paris"), "{}", out.text);
    assert!(
        g.mean_logprob("x").is_err(),
        "one token has nothing to predict"
    );
    // "q8_0" and "f32" parse; anything else says what is accepted.
    assert_eq!("q8_0".parse::<Precision>(), Ok(Precision::Q8));
    assert!("fp8"
        .parse::<Precision>()
        .unwrap_err()
        .contains("q8_0, f32 or stored"));
}
