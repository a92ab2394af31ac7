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
fn a_head_window_embeds_exactly_the_first_tokens() {
    let e = embedder();
    // BERT splits words before word pieces, so the short text's tokens begin the long one's.
    let short = "A man is eating food.";
    let long = "A man is eating food. Later he walks home through the rain, humming a song.";
    let (whole, n) = e.embed(&[short, long]).unwrap();
    assert!(n[1] > n[0]);
    let (head, counts) = e.embed_head(&[long, short], n[0]).unwrap();
    // The counts are the whole texts'; the vectors are the windows'.
    assert_eq!(counts, vec![n[1], n[0]]);
    assert!(cosine(&head[0], &whole[0]) > 0.99999, "long's head = short");
    assert!(
        cosine(&head[1], &whole[0]) > 0.99999,
        "short fits its window"
    );
    assert!(
        cosine(&head[0], &whole[1]) < 0.99,
        "the window cut something"
    );
    // Windows per text in one batch give what each gives alone.
    let (mixed, _) = e.embed_windows(&[long, long], &[n[0], 256]).unwrap();
    assert!(cosine(&mixed[0], &whole[0]) > 0.99999);
    assert!(cosine(&mixed[1], &whole[1]) > 0.99999);
    assert!(
        e.embed_windows(&[long], &[4, 5]).is_err(),
        "one window per text"
    );
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

/// The lean forward pass (fused QKV, pre-transposed weights, vectorised erf GELU, batches on
/// all cores) gives the same vectors as candle-transformers' reference BERT, padding included.
#[test]
fn lean_forward_matches_reference_bert() {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::{BertModel, Config};
    let files = ModelStore::new(ModelStore::default_dir())
        .resolve("minilm")
        .expect("MiniLM weights: run scripts/fetch-models.sh");
    let get = |name: &str| files.get(name).unwrap().to_path_buf();
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(get("config.json")).unwrap()).unwrap();
    let vb = VarBuilder::from_buffered_safetensors(
        std::fs::read(get("model.safetensors")).unwrap(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let reference = BertModel::load(vb, &config).unwrap();
    let mut tokenizer = tokenizers::Tokenizer::from_file(get("tokenizer.json")).unwrap();
    tokenizer.with_padding(Some(tokenizers::PaddingParams {
        strategy: tokenizers::PaddingStrategy::BatchLongest,
        ..Default::default()
    }));
    let texts = [
        "How do I learn Rust quickly?",
        "Why is the sky blue during the day but red at sunset, and what does scattering have to do with it?",
        "ok",
        "Émigré café naïve façade — ünïcödé and emoji 🚀 too",
        "The quick brown fox jumps over the lazy dog near the river bank.",
    ];
    let enc = tokenizer.encode_batch(texts.to_vec(), true).unwrap();
    let ids: Vec<Tensor> = enc
        .iter()
        .map(|e| Tensor::new(e.get_ids(), &Device::Cpu).unwrap())
        .collect();
    let masks: Vec<Tensor> = enc
        .iter()
        .map(|e| Tensor::new(e.get_attention_mask(), &Device::Cpu).unwrap())
        .collect();
    let ids = Tensor::stack(&ids, 0).unwrap();
    let mask = Tensor::stack(&masks, 0).unwrap();
    let hidden = reference
        .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
        .unwrap();
    let want = switchyard_models::bert::mean_pool_normalised(&hidden, &mask).unwrap();
    let (got, _) = embedder().embed(&texts).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let worst = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 2e-5, "text {i}: largest difference {worst}");
    }
}
