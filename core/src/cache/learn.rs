//! Training and evaluating the semantic cache's verifier (`switchyard cache eval`): embed both
//! questions of every labelled pair once (cached on disk), hold out a test split, fit the head
//! on the rest and choose its threshold on a validation part for the target precision, then
//! report precision and recall on the held-out pairs beside plain cosine thresholds.

use std::io::Write;
use std::path::PathBuf;

use switchyard_models::router::shuffled;
use switchyard_models::verify::{
    load_pairs, pair_features, precision_recall, threshold_for_precision, Pair, Verifier,
};

/// Settings of one evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Labelled pairs (JSONL, gzip or plain).
    pub data: PathBuf,
    /// Use at most this many pairs (the first of the file).
    pub limit: usize,
    /// Share held out for the test.
    pub holdout: f64,
    /// Split seed.
    pub seed: u64,
    /// Precision the threshold is chosen for on validation pairs.
    pub target_precision: f32,
    /// Where the MiniLM weights are.
    pub models_dir: PathBuf,
    /// Write the verifier here.
    pub out: Option<PathBuf>,
}

/// One measured rule on the held-out pairs.
#[derive(Debug, Clone)]
pub struct Measured {
    /// What it is.
    pub name: String,
    /// Its threshold.
    pub threshold: f32,
    /// Precision on the held-out pairs.
    pub precision: f64,
    /// Recall on the held-out pairs.
    pub recall: f64,
}

/// Run the evaluation; progress goes to `log`.
pub fn evaluate(
    opts: &EvalOptions,
    log: &mut impl Write,
) -> anyhow::Result<(Vec<Measured>, Verifier)> {
    let pairs = load_pairs(&opts.data, opts.limit)?;
    anyhow::ensure!(pairs.len() >= 200, "need at least 200 labelled pairs");
    let mut texts: Vec<&str> = pairs
        .iter()
        .flat_map(|p| [p.text_a.as_str(), p.text_b.as_str()])
        .collect();
    texts.sort_unstable();
    texts.dedup();
    writeln!(
        log,
        "{} pairs, {} distinct questions",
        pairs.len(),
        texts.len()
    )?;
    let emb = crate::router::learn::embed_cached(
        &opts.data,
        &texts,
        switchyard_models::embed::MAX_TOKENS,
        &opts.models_dir,
        log,
    )?;
    let vec_of = |t: &str| -> &[f32] {
        texts
            .binary_search(&t)
            .map_or(&[][..], |i| emb[i].as_slice())
    };
    let row = |p: &Pair| pair_features(vec_of(&p.text_a), &p.text_a, vec_of(&p.text_b), &p.text_b);
    let cos = |p: &Pair| -> f32 {
        vec_of(&p.text_a)
            .iter()
            .zip(vec_of(&p.text_b))
            .map(|(a, b)| a * b)
            .sum()
    };
    let order = shuffled(pairs.len(), opts.seed);
    let n_test = ((pairs.len() as f64) * opts.holdout).round() as usize;
    let (test, train) = order.split_at(n_test);
    let n_val = train.len() / 4;
    let (val, fit) = train.split_at(n_val);
    let labels = |idx: &[usize]| -> Vec<u8> { idx.iter().map(|&i| pairs[i].label).collect() };
    let (fit_y, val_y, test_y) = (labels(fit), labels(val), labels(test));
    let fit_x: Vec<Vec<f32>> = fit.iter().map(|&i| row(&pairs[i])).collect();
    let val_x: Vec<Vec<f32>> = val.iter().map(|&i| row(&pairs[i])).collect();
    let test_x: Vec<Vec<f32>> = test.iter().map(|&i| row(&pairs[i])).collect();
    let target = f64::from(opts.target_precision);
    let min_accepted = (val.len() / 100).max(10);

    let mut best: Option<(f64, Verifier)> = None;
    for l2 in [1e-3f32, 1e-2, 1e-1] {
        let v = Verifier::train(&fit_x, &fit_y, &val_x, &val_y, opts.target_precision, l2)?;
        let s: Vec<f32> = val_x.iter().map(|x| v.head.score(x)).collect();
        let (p, r) = precision_recall(&s, &val_y, v.threshold);
        writeln!(
            log,
            "validation: verifier l2={l2}: threshold {:.3}, precision {p:.3}, recall {r:.3}",
            v.threshold
        )?;
        if best.as_ref().is_none_or(|(br, _)| r > *br) {
            best = Some((r, v));
        }
    }
    let Some((_, verifier)) = best else {
        anyhow::bail!("no verifier trained");
    };
    let mut report = Vec::new();
    let s: Vec<f32> = test_x.iter().map(|x| verifier.head.score(x)).collect();
    let (precision, recall) = precision_recall(&s, &test_y, verifier.threshold);
    report.push(Measured {
        name: "verifier (embedding pair head + guards)".to_owned(),
        threshold: verifier.threshold,
        precision,
        recall,
    });
    let val_cos: Vec<f32> = val.iter().map(|&i| cos(&pairs[i])).collect();
    let test_cos: Vec<f32> = test.iter().map(|&i| cos(&pairs[i])).collect();
    if let Some(t) = threshold_for_precision(&val_cos, &val_y, target, min_accepted) {
        let (precision, recall) = precision_recall(&test_cos, &test_y, t);
        report.push(Measured {
            name: format!("baseline: cosine, threshold chosen for {target:.2} precision"),
            threshold: t,
            precision,
            recall,
        });
    }
    for t in [0.95f32, 0.9] {
        let (precision, recall) = precision_recall(&test_cos, &test_y, t);
        report.push(Measured {
            name: format!("baseline: cosine ≥ {t}"),
            threshold: t,
            precision,
            recall,
        });
    }
    if let Some(out) = &opts.out {
        verifier.save(out)?;
        writeln!(log, "verifier written to {}", out.display())?;
    }
    writeln!(
        log,
        "{} pairs: {} fit, {} validation, {} held out (seed {}); {:.1}% of held-out pairs are duplicates",
        pairs.len(),
        fit.len(),
        val.len(),
        test.len(),
        opts.seed,
        100.0 * test_y.iter().map(|y| f64::from(*y)).sum::<f64>() / test_y.len().max(1) as f64
    )?;
    Ok((report, verifier))
}
