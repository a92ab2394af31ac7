//! Latency percentiles over sliding windows: HDR histograms in 10-second slots, kept for 15
//! minutes, per endpoint, model, route and provider (plus time to first token and the
//! gateway's own overhead).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::record::CallRecord;

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

/// Latency series by (metric, dimension, value).
#[derive(Default)]
pub struct LatencyStats {
    series: HashMap<(&'static str, &'static str), HashMap<String, Series>>,
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
}
