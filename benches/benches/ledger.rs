//! The ledger writer's work per record, piece by piece: what one flush of 100 records costs
//! to encode and commit (sled page + index + daily totals + fsync), to add to the latency
//! windows, and what the request path pays to count a call in the metrics.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use switchyard_core::ledger::{
    CacheOutcome, CallRecord, LatencyStats, LedgerStore, Outcome, Tier, UsageSource,
};

fn record(i: u64) -> CallRecord {
    CallRecord {
        // Request ids as the gateway makes them (UUIDv7, from the start time).
        id: uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_764_400_000 + i / 1_000,
            (i % 1_000) as u32 * 1_000_000,
        ))
        .to_string(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
        ts_us: 1_764_400_000_000_000 + i * 1_000,
        tenant: format!("tenant-{}", i % 4),
        key_id: Some(format!("key-{}", i % 8)),
        user: Some(format!("user-{}", i % 100)),
        tag: Some("search".to_owned()),
        endpoint: "/v1/chat/completions".to_owned(),
        model_requested: Some("gpt-4o-mini".to_owned()),
        model_resolved: Some("openai/gpt-4o-mini".to_owned()),
        tier: Tier::Cloud,
        provider: Some("openai".to_owned()),
        route_reason: Some("model_map".to_owned()),
        route_inputs: None,
        cache: CacheOutcome::Bypass,
        streamed: i % 2 == 0,
        prompt_tokens: 120,
        completion_tokens: 40,
        cached_tokens: 0,
        usage_source: UsageSource::Reported,
        ttft_ms: Some(210.0),
        latency_ms: 812.5,
        upstream_ms: Some(811.9),
        overhead_ms: Some(0.21),
        attempts: 1,
        cost_pusd: 42_000_000,
        savings_pusd: 0,
        status: 200,
        error: None,
        outcome: Outcome::Ok,
    }
}

fn writer(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let store = LedgerStore::open(&db).unwrap();
    let mut next = 0u64;
    let batch = |next: &mut u64| -> Vec<CallRecord> {
        let b = (*next..*next + 100).map(record).collect();
        *next += 100;
        b
    };
    c.bench_function("store.append (100 records)", |b| {
        b.iter_batched(
            || batch(&mut next),
            |records| store.append(&records).unwrap(),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("store.append + sync (100 records)", |b| {
        b.iter_batched(
            || batch(&mut next),
            |records| {
                store.append(&records).unwrap();
                store.sync().unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    let mut stats = LatencyStats::default();
    c.bench_function("latency windows: add 100 records", |b| {
        b.iter_batched(
            || batch(&mut next),
            |records| {
                for r in &records {
                    stats.add(r);
                }
            },
            BatchSize::SmallInput,
        )
    });
    let metrics = switchyard_core::metrics::Metrics::new().unwrap();
    let one = record(1);
    c.bench_function("metrics.observe (request path, 1 record)", |b| {
        b.iter(|| metrics.observe(&one))
    });
}

criterion_group!(benches, writer);
criterion_main!(benches);
