//! Per-upstream resilience: circuit breaker, client-side RPM/TPM limits, cooling after 429s,
//! retry back-off, and the providers' rate-limit headers.
//!
//! The breaker is a small state machine of our own because it feeds `/readyz`, logs and the
//! failover chain's "when is anything available again" question; the limits use `governor`'s
//! GCRA, which is exact and lock-free.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde::Serialize;

use crate::config::{BreakerSpec, LimitSpec, RetrySpec};

/// Breaker state as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// No traffic until the cool-down ends.
    Open,
    /// One probe is allowed through to test the upstream.
    HalfOpen,
}

#[derive(Debug)]
struct BreakerInner {
    state: BreakerState,
    open_until: Instant,
    cooldown: Duration,
    probe_in_flight: bool,
    consecutive_failures: u32,
    window_start: Instant,
    window_requests: u32,
    window_failures: u32,
}

/// A circuit breaker: opens on a run of failures or a high error rate, probes when the
/// cool-down ends, and doubles the cool-down each time a probe fails.
#[derive(Debug)]
pub struct Breaker {
    spec: BreakerSpec,
    inner: Mutex<BreakerInner>,
}

/// What the breaker allows right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// A normal call.
    Normal,
    /// The half-open probe: its outcome decides the state.
    Probe,
    /// Refused until this instant.
    RefusedUntil(Instant),
}

impl Breaker {
    /// A closed breaker.
    pub fn new(spec: BreakerSpec) -> Self {
        let now = Instant::now();
        Self {
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                open_until: now,
                cooldown: spec.cooldown,
                probe_in_flight: false,
                consecutive_failures: 0,
                window_start: now,
                window_requests: 0,
                window_failures: 0,
            }),
            spec,
        }
    }

    /// Ask to send a call.
    pub fn permit(&self, provider: &str) -> Permit {
        let Ok(mut b) = self.inner.lock() else {
            return Permit::Normal;
        };
        let now = Instant::now();
        match b.state {
            BreakerState::Closed => Permit::Normal,
            BreakerState::Open if now < b.open_until => Permit::RefusedUntil(b.open_until),
            BreakerState::Open | BreakerState::HalfOpen => {
                if b.probe_in_flight {
                    // One probe at a time; others wait a little and look again.
                    Permit::RefusedUntil(now + Duration::from_millis(50).min(b.cooldown))
                } else {
                    b.state = BreakerState::HalfOpen;
                    b.probe_in_flight = true;
                    tracing::info!(provider, "circuit half-open: sending a probe");
                    Permit::Probe
                }
            }
        }
    }

    /// Record a success.
    pub fn success(&self, provider: &str, probe: bool) {
        let Ok(mut b) = self.inner.lock() else { return };
        self.roll_window(&mut b);
        b.window_requests += 1;
        b.consecutive_failures = 0;
        if probe || b.state != BreakerState::Closed {
            b.probe_in_flight = false;
            if b.state != BreakerState::Closed {
                tracing::info!(provider, "circuit closed: upstream recovered");
            }
            b.state = BreakerState::Closed;
            b.cooldown = self.spec.cooldown;
            b.window_start = Instant::now();
            b.window_requests = 0;
            b.window_failures = 0;
        }
    }

    /// Record a failure that says something about the upstream's health.
    pub fn failure(&self, provider: &str, probe: bool, why: &str) {
        let Ok(mut b) = self.inner.lock() else { return };
        self.roll_window(&mut b);
        b.window_requests += 1;
        b.window_failures += 1;
        b.consecutive_failures = b.consecutive_failures.saturating_add(1);
        let now = Instant::now();
        if probe || b.state == BreakerState::HalfOpen {
            b.probe_in_flight = false;
            b.cooldown = (b.cooldown * 2).min(self.spec.max_cooldown);
            b.state = BreakerState::Open;
            b.open_until = now + b.cooldown;
            tracing::warn!(
                provider,
                cooldown_ms = b.cooldown.as_millis() as u64,
                error = why,
                "circuit re-opened: probe failed"
            );
            return;
        }
        if b.state == BreakerState::Open {
            return;
        }
        let by_run = b.consecutive_failures >= self.spec.consecutive_failures;
        let by_rate = b.window_requests >= self.spec.min_requests
            && f64::from(b.window_failures) / f64::from(b.window_requests) >= self.spec.error_rate;
        if by_run || by_rate {
            b.state = BreakerState::Open;
            b.open_until = now + b.cooldown;
            tracing::warn!(
                provider,
                consecutive_failures = b.consecutive_failures,
                window_failures = b.window_failures,
                window_requests = b.window_requests,
                cooldown_ms = b.cooldown.as_millis() as u64,
                error = why,
                "circuit opened"
            );
        }
    }

    /// A call that ended without telling us anything (cancelled, rejected as invalid).
    pub fn neutral(&self, probe: bool) {
        if probe {
            if let Ok(mut b) = self.inner.lock() {
                b.probe_in_flight = false;
            }
        }
    }

    fn roll_window(&self, b: &mut BreakerInner) {
        if b.window_start.elapsed() >= self.spec.window {
            b.window_start = Instant::now();
            b.window_requests = 0;
            b.window_failures = 0;
        }
    }

    /// State and failures in a row.
    pub fn snapshot(&self) -> (BreakerState, u32, Option<Duration>) {
        match self.inner.lock() {
            Ok(b) => {
                let left = (b.state == BreakerState::Open)
                    .then(|| b.open_until.saturating_duration_since(Instant::now()));
                (b.state, b.consecutive_failures, left)
            }
            Err(_) => (BreakerState::Closed, 0, None),
        }
    }
}

/// Client-side request and token limits for one upstream.
pub struct Limits {
    rpm: Option<DefaultDirectRateLimiter>,
    tpm: Option<(DefaultDirectRateLimiter, u32)>,
    /// Longest a request waits for capacity before failing over.
    pub max_wait: Duration,
    rpm_limit: Option<u32>,
    tpm_limit: Option<u32>,
    used: Mutex<MinuteWindow>,
}

/// Requests and estimated tokens admitted in the last minute, in one-second buckets: what the
/// control UI shows as rate-limit headroom (`governor` answers only "may I", not "how much").
struct MinuteWindow {
    /// (unix second, requests, tokens) per bucket, indexed by second % 60.
    buckets: [(u64, u32, u64); 60],
}

impl Default for MinuteWindow {
    fn default() -> Self {
        Self {
            buckets: [(0, 0, 0); 60],
        }
    }
}

impl MinuteWindow {
    fn add(&mut self, now_s: u64, tokens: u32) {
        let b = &mut self.buckets[(now_s % 60) as usize];
        if b.0 != now_s {
            *b = (now_s, 0, 0);
        }
        b.1 = b.1.saturating_add(1);
        b.2 += u64::from(tokens);
    }

    fn sum(&self, now_s: u64) -> (u32, u64) {
        self.buckets
            .iter()
            .filter(|b| b.0 + 60 > now_s && b.0 <= now_s)
            .fold((0, 0), |(r, t), b| (r.saturating_add(b.1), t + b.2))
    }
}

/// What the provider itself last said about its limits (OpenAI's `x-ratelimit-*`, Anthropic's
/// `anthropic-ratelimit-*` headers).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Reported {
    /// Requests allowed per window.
    pub requests_limit: Option<u64>,
    /// Requests left in the window.
    pub requests_remaining: Option<u64>,
    /// Tokens allowed per window.
    pub tokens_limit: Option<u64>,
    /// Tokens left in the window.
    pub tokens_remaining: Option<u64>,
    /// When they were seen, unix seconds.
    pub seen_at: u64,
}

impl Reported {
    /// The rate-limit figures in a response's headers, if it carries any.
    pub fn from_headers(h: &reqwest::header::HeaderMap) -> Option<Self> {
        let num = |names: [&str; 2]| {
            names.iter().find_map(|k| {
                h.get(*k)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
        };
        let r = Self {
            requests_limit: num([
                "x-ratelimit-limit-requests",
                "anthropic-ratelimit-requests-limit",
            ]),
            requests_remaining: num([
                "x-ratelimit-remaining-requests",
                "anthropic-ratelimit-requests-remaining",
            ]),
            tokens_limit: num([
                "x-ratelimit-limit-tokens",
                "anthropic-ratelimit-tokens-limit",
            ]),
            tokens_remaining: num([
                "x-ratelimit-remaining-tokens",
                "anthropic-ratelimit-tokens-remaining",
            ]),
            seen_at: unix_s(),
        };
        (r.requests_remaining.is_some() || r.tokens_remaining.is_some()).then_some(r)
    }
}

/// Client-side limits beside what the last minute used of them.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Headroom {
    /// Configured requests per minute (`None`: unlimited).
    pub rpm_limit: Option<u32>,
    /// Requests admitted in the last 60 s.
    pub rpm_used: u32,
    /// Configured tokens per minute (`None`: unlimited).
    pub tpm_limit: Option<u32>,
    /// Estimated tokens admitted in the last 60 s.
    pub tpm_used: u64,
    /// What the provider last reported, if it sends rate-limit headers.
    pub upstream: Option<Reported>,
}

fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Limits {
    /// Build from config; `None` limits are unlimited.
    pub fn new(spec: &LimitSpec) -> Self {
        let rpm = spec.rpm.and_then(NonZeroU32::new).map(|rpm| {
            let burst = NonZeroU32::new(spec.rpm_burst.max(1)).unwrap_or(NonZeroU32::MIN);
            RateLimiter::direct(Quota::per_minute(rpm).allow_burst(burst))
        });
        let tpm = spec.tpm.and_then(NonZeroU32::new).map(|tpm| {
            // Up to ten seconds' worth of tokens may go at once.
            let cap = (tpm.get() / 6).max(1);
            let burst = NonZeroU32::new(cap).unwrap_or(NonZeroU32::MIN);
            (
                RateLimiter::direct(Quota::per_minute(tpm).allow_burst(burst)),
                cap,
            )
        });
        Self {
            rpm,
            tpm,
            max_wait: spec.max_wait,
            rpm_limit: spec.rpm.filter(|n| *n > 0),
            tpm_limit: spec.tpm.filter(|n| *n > 0),
            used: Mutex::new(MinuteWindow::default()),
        }
    }

    /// The last minute's use beside the limits.
    pub fn headroom(&self) -> Headroom {
        let (rpm_used, tpm_used) = self.used.lock().map_or((0, 0), |w| w.sum(unix_s()));
        Headroom {
            rpm_limit: self.rpm_limit,
            rpm_used,
            tpm_limit: self.tpm_limit,
            tpm_used,
            upstream: None,
        }
    }

    fn note(&self, tokens: u32) {
        if let Ok(mut w) = self.used.lock() {
            w.add(unix_s(), tokens);
        }
    }

    /// How long until a request of `tokens` estimated tokens may go; `None` if it may go now
    /// (and its capacity is then taken).
    fn try_take(&self, tokens: u32) -> Option<Duration> {
        let clock = DefaultClock::default();
        if let Some(l) = &self.rpm {
            if let Err(not_until) = l.check() {
                return Some(not_until.wait_time_from(clock.now()));
            }
        }
        if let Some((l, cap)) = &self.tpm {
            let n = NonZeroU32::new(tokens.clamp(1, *cap)).unwrap_or(NonZeroU32::MIN);
            match l.check_n(n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => return Some(not_until.wait_time_from(clock.now())),
                Err(_) => return Some(Duration::from_secs(1)),
            }
        }
        None
    }

    /// Take capacity, waiting up to `max_wait` (and never past `deadline`). On refusal,
    /// returns how long until capacity is expected.
    pub async fn acquire(&self, tokens: u32, deadline: Instant) -> Result<(), Duration> {
        if self.rpm.is_none() && self.tpm.is_none() {
            self.note(tokens);
            return Ok(());
        }
        let give_up = (Instant::now() + self.max_wait).min(deadline);
        loop {
            let Some(wait) = self.try_take(tokens) else {
                self.note(tokens);
                return Ok(());
            };
            let wait = wait.max(Duration::from_millis(1));
            if Instant::now() + wait > give_up {
                return Err(wait);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Retry back-off: truncated exponential with full jitter.
pub fn backoff(spec: &RetrySpec, attempt: u32) -> Duration {
    let exp = spec.base.saturating_mul(1u32 << attempt.min(16));
    let cap = exp.min(spec.max);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
}

/// When the provider's rate-limit headers say the request budget is spent, how long until
/// it resets (OpenAI `x-ratelimit-*-requests`, Anthropic `anthropic-ratelimit-requests-*`).
pub fn exhausted_for(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
    if get("x-ratelimit-remaining-requests") == Some("0") {
        if let Some(d) = get("x-ratelimit-reset-requests").and_then(parse_go_duration) {
            return Some(d);
        }
    }
    if get("anthropic-ratelimit-requests-remaining") == Some("0") {
        if let Some(reset) = get("anthropic-ratelimit-requests-reset") {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(reset) {
                let left = t.with_timezone(&chrono::Utc) - chrono::Utc::now();
                return left.to_std().ok();
            }
        }
    }
    None
}

/// Parse durations such as `1s`, `6m0s`, `20ms`, `1h2m3.5s` (OpenAI's reset headers).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_end..];
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            consecutive_failures: 3,
            error_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            cooldown: Duration::from_millis(50),
            max_cooldown: Duration::from_millis(400),
        }
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let b = Breaker::new(spec());
        for _ in 0..3 {
            assert_eq!(b.permit("p"), Permit::Normal);
            b.failure("p", false, "x");
        }
        assert!(matches!(b.permit("p"), Permit::RefusedUntil(_)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.permit("p"), Permit::Probe);
        assert!(
            matches!(b.permit("p"), Permit::RefusedUntil(_)),
            "one probe at a time"
        );
        b.failure("p", true, "still down");
        assert_eq!(b.snapshot().0, BreakerState::Open);
        std::thread::sleep(Duration::from_millis(110));
        assert_eq!(b.permit("p"), Permit::Probe);
        b.success("p", true);
        assert_eq!(b.snapshot().0, BreakerState::Closed);
        assert_eq!(b.permit("p"), Permit::Normal);
    }

    #[test]
    fn breaker_opens_on_error_rate() {
        let b = Breaker::new(spec());
        // alternate, never three failures in a row; the 11th call (a failure) tips the rate
        for i in 0..11 {
            if i % 2 == 0 {
                b.failure("p", false, "x");
            } else {
                b.success("p", false);
            }
        }
        assert_eq!(b.snapshot().0, BreakerState::Open);
    }

    #[test]
    fn spent_budgets_in_headers_are_noticed() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
        h.insert(
            "x-ratelimit-reset-requests",
            HeaderValue::from_static("1m30s"),
        );
        assert_eq!(exhausted_for(&h), Some(Duration::from_secs(90)));
        let r = Reported::from_headers(&h).expect("figures");
        assert_eq!(r.requests_remaining, Some(0));
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("5"),
        );
        assert_eq!(exhausted_for(&h), None);
        let mut a = HeaderMap::new();
        let reset = (chrono::Utc::now() + chrono::Duration::seconds(20)).to_rfc3339();
        a.insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("0"),
        );
        a.insert(
            "anthropic-ratelimit-requests-reset",
            HeaderValue::from_str(&reset).unwrap(),
        );
        let d = exhausted_for(&a).unwrap();
        assert!(
            d > Duration::from_secs(18) && d <= Duration::from_secs(20),
            "{d:?}"
        );
        a.insert(
            "anthropic-ratelimit-tokens-limit",
            HeaderValue::from_static("80000"),
        );
        a.insert(
            "anthropic-ratelimit-tokens-remaining",
            HeaderValue::from_static("79000"),
        );
        let r = Reported::from_headers(&a).expect("figures");
        assert_eq!(
            (r.requests_remaining, r.tokens_limit, r.tokens_remaining),
            (Some(0), Some(80000), Some(79000))
        );
        assert_eq!(Reported::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(parse_go_duration("soon"), None);
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let s = RetrySpec {
            max_retries: 3,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for attempt in 0..10 {
            let d = backoff(&s, attempt);
            assert!(d <= Duration::from_millis(1000));
        }
        assert!(backoff(&s, 0) >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn rpm_limit_spaces_requests() {
        let l = Limits::new(&LimitSpec {
            rpm: Some(600),
            rpm_burst: 1,
            tpm: None,
            max_wait: Duration::from_millis(0),
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(l.acquire(1, deadline).await.is_ok());
        let wait = l.acquire(1, deadline).await.err();
        assert!(
            wait.is_some_and(|w| w <= Duration::from_millis(100)),
            "{wait:?}"
        );
    }
}
