//! The routing decision's own time, embedding excluded: hard rules, then the learned scorer
//! (standardise 392 inputs, dot product, sigmoid) against the threshold.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_core::router::policy::{Policy, RawRouting, RawRule, RouteInputs};
use switchyard_core::types::ChatRequest;
use switchyard_models::router::{Scorer, TrainOptions, CHEAP_FEATURES};

fn decision(c: &mut Criterion) {
    let dim = 384 + CHEAP_FEATURES;
    // A scorer with real shapes, trained on random rows (its values do not matter here).
    let xs: Vec<Vec<f32>> = (0..64)
        .map(|i| {
            (0..dim)
                .map(|j| ((i * 31 + j * 17) % 97) as f32 / 97.0)
                .collect()
        })
        .collect();
    let ys: Vec<f32> = (0..64).map(|i| f32::from(u8::from(i % 3 == 0))).collect();
    let scorer = Scorer::train(
        &xs,
        &ys,
        TrainOptions {
            epochs: 5,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scorer.json");
    scorer.save(&path).unwrap();
    let raw = RawRouting {
        model: "auto".to_owned(),
        tiers: [
            ("small", "gpt-4o-mini"),
            ("large", "gpt-4o"),
            ("local", "local/smollm2"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect(),
        weak: "small".to_owned(),
        strong: "large".to_owned(),
        threshold: 0.5,
        thresholds: Default::default(),
        scorer: Some(path),
        rules: vec![
            RawRule {
                task: Some("classify".to_owned()),
                tier: "local".to_owned(),
                ..RawRule::default()
            },
            RawRule {
                has_tools: Some(true),
                tier: "large".to_owned(),
                ..RawRule::default()
            },
        ],
        ..RawRouting::default()
    };
    let policy = Policy::new(raw, &|m: &str| m != "auto").unwrap();
    let req: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": "Prove that the square root of 2 is irrational, step by step."}
        ]
    }))
    .unwrap();
    let embedding: Vec<f32> = (0..384).map(|i| (i as f32 / 384.0) - 0.5).collect();
    let text = switchyard_core::router::policy::prompt_text(&req);
    c.bench_function("routing decision (rules + scorer, embedding given)", |b| {
        b.iter(|| {
            let mut inputs = RouteInputs::of(&req, None, "acme");
            inputs.features = Some(switchyard_models::router::features(&embedding, &text));
            criterion::black_box(policy.decide(&inputs))
        })
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);
