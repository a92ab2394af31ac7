//! The routing scorer's training and evaluation pipeline on real MiniLM embeddings: prompts of
//! a topic the weak tier fails on must be ranked first, well above random and length routing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;

use switchyard_core::router::learn::{evaluate, EvalOptions};

#[test]
fn a_learnable_split_is_learnt_and_beats_the_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir
        .path()
        .join(format!("synthetic-{}.jsonl", std::process::id()));
    let mut f = std::fs::File::create(&data).unwrap();
    // Topic decides the outcome; lengths overlap, so length alone cannot tell them apart.
    for i in 0..160 {
        let (prompt, weak, strong) = if i % 2 == 0 {
            (
                format!(
                    "Compute the integral of x^{} times sin(x) from 0 to {} and simplify.",
                    i % 7 + 2,
                    i % 5 + 1
                ),
                false,
                true,
            )
        } else {
            (
                format!("Which city is the capital of country number {} on the list of European states?", i % 9 + 1),
                true,
                true,
            )
        };
        writeln!(
            f,
            "{}",
            serde_json::json!({"prompt": prompt, "weak_correct": weak, "strong_correct": strong})
        )
        .unwrap();
    }
    drop(f);
    let out = dir.path().join("scorer.json");
    let report = evaluate(
        &EvalOptions {
            data: data.clone(),
            holdout: 0.25,
            seed: 3,
            models_dir: switchyard_models::ModelStore::default_dir(),
            out: Some(out.clone()),
        },
        &mut std::io::sink(),
    )
    .unwrap();
    let apgr = |prefix: &str| {
        report
            .iter()
            .find(|m| m.name.starts_with(prefix))
            .map(|m| m.quality.apgr)
            .unwrap()
    };
    // Perfect ordering here (45% of the held-out prompts gain) has APGR 1 - 0.45/2 = 0.775.
    assert!(apgr("logistic") > 0.76, "{report:?}");
    assert!(apgr("knn") > 0.76, "{report:?}");
    assert!(apgr("baseline: prompt length") < 0.6, "{report:?}");
    let random = apgr("baseline: random");
    assert!((random - 0.5).abs() < 0.1, "{report:?}");
    let scorer = switchyard_models::router::Scorer::load(&out).unwrap();
    assert_eq!(
        scorer.weights.len(),
        384 + switchyard_models::router::CHEAP_FEATURES
    );
    // Bad input is an error, not a panic.
    std::fs::write(&data, "{\"prompt\": 1}\n").unwrap();
    let err = evaluate(
        &EvalOptions {
            data,
            holdout: 0.25,
            seed: 3,
            models_dir: switchyard_models::ModelStore::default_dir(),
            out: None,
        },
        &mut std::io::sink(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains(":1:"), "{err}");
}
