//! MiniLM embeddings with the real weights (fetched by scripts/fetch-models.sh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use switchyard_models::embed::cosine;
use switchyard_models::{Embedder, ModelStore};

fn embedder() -> Embedder {
    let files = ModelStore::new(ModelStore::default_dir())
        .resolve("minilm")
        .expect("MiniLM weights: run scripts/fetch-models.sh");
    Embedder::load(&files, &candle_core::Device::Cpu).unwrap()
}

#[test]
fn reference_similarity_matches_sentence_transformers() {
    let e = embedder();
    let (v, _) = e
        .embed(&["A man is eating food.", "A man is eating a piece of bread."])
        .unwrap();
    assert_eq!(v[0].len(), 384);
    let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "unit length, got {norm}");
    let c = cosine(&v[0], &v[1]);
    assert!((c - 0.7553).abs() < 0.001, "cosine {c}");
}

#[test]
fn batching_and_order_do_not_change_results() {
    let e = embedder();
    let texts = [
        "short",
        "a considerably longer sentence that needs many more tokens than the first one does",
        "medium length text here",
    ];
    let (together, tokens) = e.embed(&texts).unwrap();
    assert_eq!(tokens[0], 3, "[CLS] short [SEP]");
    assert!(tokens[1] > tokens[2]);
    for (i, t) in texts.iter().enumerate() {
        let (alone, _) = e.embed(&[t]).unwrap();
        let c = cosine(&alone[0], &together[i]);
        assert!(c > 0.99999, "input {i}: {c}");
    }
}

#[test]
fn tokenizer_ids_for_known_strings() {
    let files = ModelStore::new(ModelStore::default_dir())
        .resolve("minilm")
        .unwrap();
    let tok = tokenizers::Tokenizer::from_file(files.get("tokenizer.json").unwrap()).unwrap();
    let ids = tok
        .encode("Hello, world!", true)
        .unwrap()
        .get_ids()
        .to_vec();
    // [CLS] hello , world ! [SEP] in BERT's uncased vocabulary
    assert_eq!(ids[..6], [101, 7592, 1010, 2088, 999, 102]);
}

#[test]
fn empty_input_is_an_error_not_a_panic() {
    assert!(embedder().embed(&["ok", ""]).is_err());
}
