//! Latency percentiles over sliding windows: HDR histograms in 10-second slots, kept for 15
//! minutes, per endpoint, model, route and provider (plus time to first token and the
//! gateway's own overhead).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::record::{CallRecord, Outcome, Tier};

/// Width of one slot.
pub const SLOT: Duration = Duration::from_secs(10);
/// Slots kept (15 minutes).
pub const SLOTS: u64 = 90;
/// Windows reported by default.
pub const WINDOWS: [Duration; 3] = [
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(900),
];
/// Series kept per dimension; further values are folded into `other`.
const MAX_SERIES: usize = 512;

/// Two significant digits, auto-resizing: ~1% error, a few KB per slot.
#[allow(clippy::expect_used)]
fn histogram() -> Histogram<u32> {
    // `new` fails only for more than 5 significant digits; 2 is a constant.
    Histogram::new(2).expect("2 significant digits is a valid precision")
}

/// One series: recent slots plus an all-time histogram.
struct Series {
    slots: VecDeque<(u64, Histogram<u32>)>,
    total: Histogram<u32>,
}

impl Series {
    fn new() -> Self {
        Self {
            slots: VecDeque::new(),
            total: histogram(),
        }
    }

    fn record(&mut self, slot: u64, micros: u64) {
        let v = micros.max(1);
        let _ = self.total.record(v);
        match self.slots.back_mut() {
            Some((s, h)) if *s == slot => {
                let _ = h.record(v);
            }
            _ => {
                let mut h = histogram();
                let _ = h.record(v);
                self.slots.push_back((slot, h));
            }
        }
        while self.slots.front().is_some_and(|(s, _)| *s + SLOTS <= slot) {
            self.slots.pop_front();
        }
    }

    fn window(&self, now_slot: u64, window: Duration) -> Histogram<u32> {
        let n = (window.as_secs() / SLOT.as_secs()).max(1);
        let mut h = histogram();
        for (s, slot) in &self.slots {
            if *s + n > now_slot {
                let _ = h.add(slot);
            }
        }
        h
    }
}

/// Percentiles of one window, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    /// Calls in the window.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u32>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// Window label → percentiles.
pub type ByWindow = BTreeMap<String, Percentiles>;
/// metric → dimension → value → window → percentiles.
pub type Snapshot = BTreeMap<String, BTreeMap<String, BTreeMap<String, ByWindow>>>;

/// Latency series by (metric, dimension, value), and the last hour's timeline.
#[derive(Default)]
pub struct LatencyStats {
    series: HashMap<(&'static str, &'static str), HashMap<String, Series>>,
    timeline: VecDeque<Point>,
}

/// Timeline points kept (one hour of 10-second slots).
pub const TIMELINE_SLOTS: u64 = 360;

/// One 10-second slot of the timeline: what the overview charts plot.
struct Point {
    slot: u64,
    calls: u64,
    errors: u64,
    cache_hits: u64,
    local: u64,
    cloud: u64,
    cost_pusd: u64,
    savings_pusd: u64,
    latency: Histogram<u32>,
    ttft: Histogram<u32>,
}

impl Point {
    fn new(slot: u64) -> Self {
        Self {
            slot,
            calls: 0,
            errors: 0,
            cache_hits: 0,
            local: 0,
            cloud: 0,
            cost_pusd: 0,
            savings_pusd: 0,
            latency: histogram(),
            ttft: histogram(),
        }
    }

    fn add(&mut self, r: &CallRecord) {
        self.calls += 1;
        self.errors += u64::from(r.outcome != Outcome::Ok);
        self.cache_hits += u64::from(r.cache.is_hit());
        self.local += u64::from(r.tier == Tier::Local);
        self.cloud += u64::from(r.tier == Tier::Cloud);
        self.cost_pusd += r.cost_pusd;
        self.savings_pusd += r.savings_pusd;
        let _ = self.latency.record(((r.latency_ms * 1000.0) as u64).max(1));
        if let Some(t) = r.ttft_ms {
            let _ = self.ttft.record(((t * 1000.0) as u64).max(1));
        }
    }
}

/// One point of `GET /admin/timeline`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelinePoint {
    /// Slot start, unix seconds.
    pub t: u64,
    /// Calls that ended in the slot.
    pub calls: u64,
    /// Calls per second.
    pub rps: f64,
    /// Calls that ended in an error.
    pub errors: u64,
    /// Answered from the cache.
    pub cache_hits: u64,
    /// Answered by a local model.
    pub local: u64,
    /// Answered by an upstream.
    pub cloud: u64,
    /// Cost, USD.
    pub cost_usd: f64,
    /// Savings against the baseline model, USD.
    pub savings_usd: f64,
    /// Latency percentiles (none without calls).
    pub latency: Option<Percentiles>,
    /// Time to first token percentiles (streams only).
    pub ttft: Option<Percentiles>,
}

fn slot_of(ts_us: u64) -> u64 {
    ts_us / (SLOT.as_micros() as u64)
}

impl LatencyStats {
    fn record(&mut self, metric: &'static str, dim: &'static str, value: &str, slot: u64, us: u64) {
        let by_value = self.series.entry((metric, dim)).or_default();
        let key = if by_value.contains_key(value) || by_value.len() < MAX_SERIES {
            value
        } else {
            "other"
        };
        if let Some(s) = by_value.get_mut(key) {
            s.record(slot, us);
        } else {
            let mut s = Series::new();
            s.record(slot, us);
            by_value.insert(key.to_owned(), s);
        }
    }

    /// Add one finished call (slotted by its end time).
    pub fn add(&mut self, r: &CallRecord) {
        let end_us = r.ts_us + (r.latency_ms * 1000.0) as u64;
        let slot = slot_of(end_us);
        self.add_point(slot, r);
        let us = (r.latency_ms * 1000.0) as u64;
        self.record("latency", "endpoint", &r.endpoint, slot, us);
        if let Some(m) = &r.model_requested {
            self.record("latency", "model", m, slot, us);
        }
        if let Some(m) = &r.model_resolved {
            self.record("latency", "route", m, slot, us);
        }
        if let Some(p) = &r.provider {
            self.record("latency", "provider", p, slot, us);
        }
        if let Some(t) = r.ttft_ms {
            let tus = (t * 1000.0) as u64;
            self.record("ttft", "endpoint", &r.endpoint, slot, tus);
            if let Some(m) = &r.model_requested {
                self.record("ttft", "model", m, slot, tus);
            }
        }
        if let Some(o) = r.overhead_ms {
            let ous = (o * 1000.0) as u64;
            self.record("overhead", "all", "", slot, ous);
            self.record("overhead", "endpoint", &r.endpoint, slot, ous);
        }
    }

    fn add_point(&mut self, slot: u64, r: &CallRecord) {
        let newest = self.timeline.back().map_or(0, |p| p.slot);
        if slot + TIMELINE_SLOTS <= newest {
            return;
        }
        // Calls arrive nearly in order: look from the back.
        let at = self.timeline.iter().rposition(|p| p.slot <= slot);
        match at {
            Some(i) if self.timeline[i].slot == slot => self.timeline[i].add(r),
            _ => {
                let mut p = Point::new(slot);
                p.add(r);
                self.timeline.insert(at.map_or(0, |i| i + 1), p);
            }
        }
        let newest = self.timeline.back().map_or(slot, |p| p.slot);
        while self
            .timeline
            .front()
            .is_some_and(|p| p.slot + TIMELINE_SLOTS <= newest)
        {
            self.timeline.pop_front();
        }
    }

    /// The last `slots` ten-second slots up to now, oldest first, empty slots included.
    pub fn timeline(&self, now_us: u64, slots: u64) -> Vec<TimelinePoint> {
        let now_slot = slot_of(now_us);
        let first = now_slot.saturating_sub(slots.clamp(1, TIMELINE_SLOTS) - 1);
        let secs = SLOT.as_secs();
        let mut points = self.timeline.iter().filter(|p| p.slot >= first).peekable();
        let mut out = Vec::new();
        for slot in first..=now_slot {
            let p = points.next_if(|p| p.slot == slot);
            let usd = super::record::pusd_to_usd;
            out.push(match p {
                Some(p) => TimelinePoint {
                    t: slot * secs,
                    calls: p.calls,
                    rps: p.calls as f64 / secs as f64,
                    errors: p.errors,
                    cache_hits: p.cache_hits,
                    local: p.local,
                    cloud: p.cloud,
                    cost_usd: usd(p.cost_pusd),
                    savings_usd: usd(p.savings_pusd),
                    latency: (!p.latency.is_empty()).then(|| Percentiles::of(&p.latency)),
                    ttft: (!p.ttft.is_empty()).then(|| Percentiles::of(&p.ttft)),
                },
                None => TimelinePoint {
                    t: slot * secs,
                    calls: 0,
                    rps: 0.0,
                    errors: 0,
                    cache_hits: 0,
                    local: 0,
                    cloud: 0,
                    cost_usd: 0.0,
                    savings_usd: 0.0,
                    latency: None,
                    ttft: None,
                },
            });
        }
        out
    }

    /// Percentiles of one series over `window` ending now.
    pub fn percentiles(
        &self,
        metric: &'static str,
        dim: &'static str,
        value: &str,
        now_us: u64,
        window: Duration,
    ) -> Option<Percentiles> {
        let s = self.series.get(&(metric, dim))?.get(value)?;
        Some(Percentiles::of(&s.window(slot_of(now_us), window)))
    }

    /// Everything: metric → dimension → value → window (or `all_time`) → percentiles.
    pub fn snapshot(&self, now_us: u64, windows: &[Duration]) -> Snapshot {
        let now_slot = slot_of(now_us);
        let mut out = Snapshot::new();
        for ((metric, dim), by_value) in &self.series {
            for (value, s) in by_value {
                let mut w = BTreeMap::new();
                for win in windows {
                    let p = Percentiles::of(&s.window(now_slot, *win));
                    if p.count > 0 {
                        w.insert(format!("{}s", win.as_secs()), p);
                    }
                }
                w.insert("all_time".to_owned(), Percentiles::of(&s.total));
                out.entry((*metric).to_owned())
                    .or_default()
                    .entry((*dim).to_owned())
                    .or_default()
                    .insert(value.clone(), w);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_forget_old_slots() {
        let mut s = Series::new();
        for i in 0..100u64 {
            s.record(0, 1_000 + i);
        }
        s.record(50, 500_000);
        let recent = Percentiles::of(&s.window(50, Duration::from_secs(60)));
        assert_eq!(recent.count, 1);
        assert!((recent.p50_ms - 500.0).abs() / 500.0 < 0.01, "{recent:?}");
        let wide = Percentiles::of(&s.window(50, Duration::from_secs(900)));
        assert_eq!(wide.count, 101);
        s.record(200, 2_000);
        assert_eq!(s.slots.len(), 1, "slots beyond 15 minutes are dropped");
        assert_eq!(s.total.len(), 102);
    }

    fn call(ts_s: u64, latency_ms: f64, ok: bool) -> CallRecord {
        CallRecord {
            ts_us: ts_s * 1_000_000,
            latency_ms,
            outcome: if ok { Outcome::Ok } else { Outcome::Error },
            tier: Tier::Cloud,
            cost_pusd: 1_000_000,
            ..CallRecord::default()
        }
    }

    #[test]
    fn the_timeline_fills_gaps_and_takes_late_calls() {
        let mut st = LatencyStats::default();
        let base = 1_800_000_000u64;
        st.add(&call(base, 100.0, true));
        st.add(&call(base + 30, 300.0, false));
        // A late call for the first slot, after a newer one.
        st.add(&call(base + 1, 200.0, true));
        let tl = st.timeline((base + 30) * 1_000_000, 4);
        assert_eq!(tl.len(), 4);
        assert_eq!(tl.iter().map(|p| p.calls).collect::<Vec<_>>(), [2, 0, 0, 1]);
        assert_eq!(tl[0].t, base / 10 * 10);
        assert_eq!(tl[3].errors, 1);
        assert!(tl[1].latency.is_none());
        let p = tl[0].latency.expect("latency of the first slot");
        assert!((p.max_ms - 200.0).abs() < 3.0, "{p:?}");
        assert!((tl[0].cost_usd - 2e-6).abs() < 1e-12);
        // An hour later, the first points are gone.
        st.add(&call(base + 3_700, 10.0, true));
        let tl = st.timeline((base + 3_700) * 1_000_000, TIMELINE_SLOTS);
        assert_eq!(tl.iter().map(|p| p.calls).sum::<u64>(), 1);
    }
}
