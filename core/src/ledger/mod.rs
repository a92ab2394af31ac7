//! The ledger: one record per call, priced, counted in metrics, checked against budgets, and
//! written to sled in batches by a writer actor on its own thread.
//!
//! The request path only builds the record and hands it over with a non-blocking `try_send`
//! into a bounded buffer; a full buffer drops the record and counts the drop, it never waits.
//! The writer commits each batch (records and the daily totals they add) in one sled
//! transaction and syncs it, every `[ledger] flush_ms`: a crash loses at most the records of
//! one such window, and the totals always match the records that survived.

pub mod budget;
pub mod events;
pub mod prices;
pub mod record;
pub mod stats;
pub mod store;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;

pub use budget::{Budgets, Verdict};
pub use events::Event;
pub use prices::Prices;
pub use record::{CacheOutcome, CallRecord, Outcome, Tier, Totals, UsageSource};
pub use stats::LatencyStats;
pub use store::{LedgerStore, Query, StoreError};

use crate::config::Config;
use crate::metrics::Metrics;

/// Events kept in the store.
const EVENTS_KEPT: usize = 10_000;
/// Largest batch the writer commits at once.
const MAX_BATCH: usize = 20_000;

/// Now, unix microseconds.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A new time-ordered id (UUIDv7) for a call or event.
///
/// Each thread keeps its own v7 context: `Uuid::now_v7` shares one behind a process-wide
/// mutex, which the request workers contended on for every call. Ids stay ordered within a
/// thread and carry their creation time (what the ledger's lookup by id relies on).
pub fn new_id() -> uuid::Uuid {
    thread_local! {
        static CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
    }
    CONTEXT.with(|c| uuid::Uuid::new_v7(uuid::Timestamp::now(c)))
}

/// Today (UTC), `YYYY-MM-DD`.
pub fn today() -> String {
    record::day_of(now_us())
}

/// Counters of what happened to records.
#[derive(Default)]
pub struct LedgerCounters {
    /// Submitted and not yet written.
    pub queued: AtomicI64,
    /// Written to sled.
    pub written: AtomicU64,
    /// Dropped because the buffer was full.
    pub dropped_full: AtomicU64,
    /// Dropped because a write failed.
    pub dropped_write: AtomicU64,
}

/// What the request path and the admin API share.
pub struct Ledger {
    tx: Option<SyncSender<CallRecord>>,
    events_tx: mpsc::Sender<Event>,
    /// The stored records and totals.
    pub store: LedgerStore,
    /// Latency windows.
    pub stats: Arc<Mutex<LatencyStats>>,
    /// Spend budgets.
    pub budgets: Budgets,
    /// Token prices.
    pub prices: Prices,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Record counters.
    pub counters: Arc<LedgerCounters>,
    /// Breach state of the latency budgets.
    pub latency: Arc<Mutex<events::LatencyWatch>>,
    writer: Option<Addr<LedgerWriter>>,
    _arbiter: Option<Arbiter>,
}

impl Ledger {
    /// Open the trees, seed today's budget spend and start the writer on its own thread.
    pub fn start(
        config: &Config,
        db: &sled::Db,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let store = LedgerStore::open(db)?;
        let budgets = Budgets::new(config.budgets.clone());
        let day = today();
        budgets.load_day(&day, &store.day(&day)?);
        let (events_tx, events_rx) = mpsc::channel();
        let mut warm = LatencyStats::default();
        // The last hour's calls, so the percentiles and the overview's timeline survive a
        // restart.
        let hour_ago =
            now_us().saturating_sub(stats::TIMELINE_SLOTS * stats::SLOT.as_micros() as u64);
        let warmed = store.for_each_since(hour_ago, 500_000, |r| warm.add(r))?;
        if warmed > 0 {
            tracing::debug!(records = warmed, "latency windows warmed from the ledger");
        }
        let stats = Arc::new(Mutex::new(warm));
        let counters = Arc::new(LedgerCounters::default());
        let latency = Arc::new(Mutex::new(events::LatencyWatch::new(
            config.latency_budgets.clone(),
        )));
        let (tx, rx) = if config.ledger.enabled {
            let (tx, rx) = mpsc::sync_channel(config.ledger.buffer);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let arbiter = Arbiter::new();
        let shared = WriterShared {
            rx: rx.map(|r| Arc::new(Mutex::new(r))),
            events_rx: Arc::new(Mutex::new(events_rx)),
            store: store.clone(),
            stats: Arc::clone(&stats),
            counters: Arc::clone(&counters),
            metrics: Arc::clone(&metrics),
            latency: Arc::clone(&latency),
            flush_every: config.ledger.flush,
            evaluate_every: config.observability.evaluate_every,
            retention: config.ledger.retention,
            max_records: config.ledger.max_records,
            webhook_url: config.observability.webhook_url.clone(),
            webhook_secret: config.observability.webhook_secret.clone(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        };
        let writer = actix::Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            LedgerWriter { shared }
        });
        Ok(Self {
            tx,
            events_tx,
            store,
            stats,
            budgets,
            prices: Prices::new(&config.prices),
            metrics,
            counters,
            latency,
            writer: Some(writer),
            _arbiter: Some(arbiter),
        })
    }

    /// Whether records are kept.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Account one finished call: metrics, budgets, then the record to the writer. Never
    /// blocks: a full buffer drops the record and counts it.
    pub fn submit(&self, record: CallRecord) {
        self.metrics.observe(&record);
        if !self.budgets.is_empty() {
            let day = record.day();
            for e in self.budgets.reconcile(
                &record.tenant,
                record.key_id.as_deref(),
                &day,
                record.cost_pusd,
            ) {
                self.emit(e);
            }
        }
        let Some(tx) = &self.tx else { return };
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .ledger
                    .with_label_values(&["dropped_buffer_full"])
                    .inc();
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                self.counters.dropped_write.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .ledger
                    .with_label_values(&["dropped_write_error"])
                    .inc();
            }
        }
    }

    /// Raise an event: it is logged, stored and delivered by the writer.
    pub fn emit(&self, e: Event) {
        let _ = self.events_tx.send(e);
    }

    /// Write everything submitted so far (admin reads and shutdown use it).
    pub async fn flush(&self) {
        if let Some(w) = &self.writer {
            let _ = w.send(Flush).timeout(Duration::from_secs(30)).await;
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // Stopping the writer's thread drains what is buffered and releases the store.
        if let Some(a) = self._arbiter.take() {
            a.stop();
        }
    }
}

struct WriterShared {
    rx: Option<Arc<Mutex<Receiver<CallRecord>>>>,
    events_rx: Arc<Mutex<Receiver<Event>>>,
    store: LedgerStore,
    stats: Arc<Mutex<LatencyStats>>,
    counters: Arc<LedgerCounters>,
    metrics: Arc<Metrics>,
    latency: Arc<Mutex<events::LatencyWatch>>,
    flush_every: Duration,
    evaluate_every: Duration,
    retention: Duration,
    max_records: u64,
    webhook_url: Option<String>,
    webhook_secret: Option<secrecy::SecretString>,
    http: reqwest::Client,
}

/// The actor that batches records into sled, evaluates latency budgets and delivers events.
/// It runs on its own arbiter (thread), so sled's blocking writes never stall request workers;
/// it is supervised, and its buffers outlive a restart.
pub struct LedgerWriter {
    shared: WriterShared,
}

impl LedgerWriter {
    fn drain(&mut self) {
        let s = &self.shared;
        let Some(rx) = &s.rx else { return };
        loop {
            let mut batch = Vec::new();
            if let Ok(rx) = rx.lock() {
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
            }
            if batch.is_empty() {
                return;
            }
            let n = batch.len() as u64;
            if let Ok(mut stats) = s.stats.lock() {
                for r in &batch {
                    stats.add(r);
                }
            }
            match s.store.append(&batch).and_then(|()| s.store.sync()) {
                Ok(()) => {
                    s.counters.written.fetch_add(n, Ordering::Relaxed);
                    s.metrics.ledger.with_label_values(&["written"]).inc_by(n);
                }
                Err(e) => {
                    tracing::error!(error = %e, records = n, "ledger batch could not be written");
                    s.counters.dropped_write.fetch_add(n, Ordering::Relaxed);
                    s.metrics
                        .ledger
                        .with_label_values(&["dropped_write_error"])
                        .inc_by(n);
                }
            }
            s.counters.queued.fetch_sub(n as i64, Ordering::Relaxed);
            if (n as usize) < MAX_BATCH {
                return;
            }
        }
    }

    fn evaluate(&mut self) {
        let events = {
            let (Ok(stats), Ok(mut watch)) = (self.shared.stats.lock(), self.shared.latency.lock())
            else {
                return;
            };
            let ev = watch.evaluate(&stats, now_us());
            for (name, pct, breached) in watch.states() {
                self.shared
                    .metrics
                    .latency_breach
                    .with_label_values(&[name, pct])
                    .set(if breached { 1.0 } else { 0.0 });
            }
            ev
        };
        for e in events {
            self.publish(e);
        }
    }

    fn deliver_events(&mut self) {
        let pending: Vec<Event> = match self.shared.events_rx.lock() {
            Ok(rx) => rx.try_iter().collect(),
            Err(_) => return,
        };
        for e in pending {
            self.publish(e);
        }
    }

    fn publish(&mut self, e: Event) {
        let s = &self.shared;
        let body = e.to_json();
        tracing::warn!(event = e.kind, data = %e.data, "switchyard event");
        s.metrics.events.with_label_values(&[e.kind]).inc();
        if let Err(err) = s.store.push_event(&body, EVENTS_KEPT) {
            tracing::error!(error = %err, "event could not be stored");
        }
        if let Some(url) = &s.webhook_url {
            actix_rt::spawn(events::deliver(
                s.http.clone(),
                url.clone(),
                s.webhook_secret.clone(),
                body,
            ));
        }
    }

    fn prune(&mut self) {
        let cutoff = now_us().saturating_sub(self.shared.retention.as_micros() as u64);
        match self
            .shared
            .store
            .prune(cutoff, self.shared.max_records, 50_000)
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "ledger retention removed old records"),
            Err(e) => tracing::error!(error = %e, "ledger retention failed"),
        }
    }
}

impl Actor for LedgerWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        lower_priority();
        ctx.run_interval(self.shared.flush_every, |act, _| {
            act.drain();
            act.deliver_events();
        });
        ctx.run_interval(self.shared.evaluate_every, |act, _| act.evaluate());
        ctx.run_interval(Duration::from_secs(60), |act, _| act.prune());
        self.prune();
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.drain();
        let _ = self
            .shared
            .store
            .fold()
            .and_then(|()| self.shared.store.sync());
        Running::Stop
    }
}

/// Run the writer's thread at a lower CPU priority (nice 10), so on a busy machine request
/// workers win the CPU and the ledger catches up in their gaps; its buffer absorbs the delay.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
            tracing::debug!(error = %e, "could not lower the ledger writer's priority");
        }
    }
}

impl actix::Supervised for LedgerWriter {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!("ledger writer restarting");
    }
}

/// Write everything buffered now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for LedgerWriter {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.drain();
        self.deliver_events();
    }
}

#[cfg(test)]
mod tests {
    use super::{new_id, now_us};

    #[test]
    fn ids_are_v7_ordered_per_thread_unique_across_threads_and_carry_their_time() {
        let before = now_us();
        let mine: Vec<uuid::Uuid> = (0..2_000).map(|_| new_id()).collect();
        let after = now_us();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "ordered within a thread"
        );
        for id in &mine {
            assert_eq!(id.get_version_num(), 7);
            let (s, ns) = id.get_timestamp().expect("v7 time").to_unix();
            let t = s * 1_000_000 + u64::from(ns) / 1_000;
            // v7 keeps milliseconds.
            assert!(
                t + 1_000 >= before && t <= after + 1_000,
                "{t} not in [{before}, {after}]"
            );
        }
        let others: Vec<uuid::Uuid> = std::thread::spawn(|| (0..2_000).map(|_| new_id()).collect())
            .join()
            .expect("thread");
        let all: std::collections::HashSet<_> = mine.iter().chain(&others).collect();
        assert_eq!(all.len(), 4_000, "no id repeats across threads");
    }
}
