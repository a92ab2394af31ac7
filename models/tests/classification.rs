//! Classification with the real MiniLM weights on a labelled set written for this test
//! (48 support tickets, 4 labels): zero-shot, and a trained head evaluated on held-out halves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use switchyard_models::classify::{zero_shot, Label, LinearHead, TrainParams};
use switchyard_models::{Embedder, ModelStore};

fn embedder() -> Embedder {
    let files = ModelStore::new(ModelStore::default_dir())
        .resolve("minilm")
        .unwrap();
    Embedder::load(&files, &candle_core::Device::Cpu).unwrap()
}

fn data() -> Vec<(String, String)> {
    include_str!("data/support_tickets.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["text"].as_str().unwrap().to_owned(),
                v["label"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn labels() -> Vec<Label> {
    [
        ("billing", "payments, charges, invoices, refunds and prices"),
        (
            "technical",
            "software bugs, errors, crashes and performance problems",
        ),
        (
            "shipping",
            "delivery of orders, parcels, couriers and tracking",
        ),
        (
            "account",
            "login, passwords, profile settings and account security",
        ),
    ]
    .iter()
    .map(|(n, d)| Label {
        name: (*n).to_owned(),
        description: Some((*d).to_owned()),
        examples: Vec::new(),
    })
    .collect()
}

#[test]
fn zero_shot_accuracy_on_the_labelled_set() {
    let e = embedder();
    let data = data();
    assert!(data.len() >= 40);
    let texts: Vec<&str> = data.iter().map(|(t, _)| t.as_str()).collect();
    let (results, tokens) = zero_shot(&e, &texts, &labels()).unwrap();
    let correct = results
        .iter()
        .zip(&data)
        .filter(|(r, (_, l))| &r.label == l)
        .count();
    let acc = correct as f64 / data.len() as f64;
    eprintln!("zero-shot accuracy: {correct}/{} = {acc:.3}", data.len());
    assert!(acc >= 0.75, "zero-shot accuracy {acc}");
    assert!(tokens > 0);
    for r in &results {
        let sum: f32 = r.scores.iter().map(|(_, p)| p).sum();
        assert!((sum - 1.0).abs() < 1e-4);
        assert!((0.0..=1.0).contains(&r.margin));
    }
}

#[test]
fn a_trained_head_beats_chance_on_held_out_texts_and_round_trips() {
    let e = embedder();
    let data = data();
    // even rows train, odd rows test
    let train: Vec<(&str, &str)> = data
        .iter()
        .step_by(2)
        .map(|(t, l)| (t.as_str(), l.as_str()))
        .collect();
    let test: Vec<&(String, String)> = data.iter().skip(1).step_by(2).collect();
    let head = LinearHead::train(&e, &train, &TrainParams::default()).unwrap();
    let texts: Vec<&str> = test.iter().map(|(t, _)| t.as_str()).collect();
    let (vecs, _) = e.embed(&texts).unwrap();
    let results = head.predict(&vecs).unwrap();
    let correct = results
        .iter()
        .zip(&test)
        .filter(|(r, (_, l))| &r.label == l)
        .count();
    let acc = correct as f64 / test.len() as f64;
    eprintln!(
        "trained head accuracy (held-out): {correct}/{} = {acc:.3}",
        test.len()
    );
    assert!(acc >= 0.75, "head accuracy {acc}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head.safetensors");
    head.save(&path).unwrap();
    let loaded = LinearHead::load(&path, e.dim()).unwrap();
    let again = loaded.predict(&vecs).unwrap();
    for (a, b) in results.iter().zip(&again) {
        assert_eq!(a.label, b.label);
        assert!((a.margin - b.margin).abs() < 1e-6);
    }
}
