//! Operational events (budget levels crossed, latency budgets breached and recovered): logged,
//! counted, stored, and POSTed to the configured webhook with an HMAC-SHA256 signature.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::Sha256;

use super::stats::LatencyStats;
use crate::config::{LatencyBudget, LatencyScope};

/// Header carrying the webhook signature: `t=<unix seconds>,v1=<hex HMAC of "t.body">`.
pub const SIGNATURE_HEADER: &str = "x-switchyard-signature";

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Dotted type, e.g. `budget.hard_limit_reached`.
    pub kind: &'static str,
    /// Details.
    pub data: Value,
}

impl Event {
    /// A new event.
    pub fn new(kind: &str, data: Value) -> Self {
        Self {
            kind: intern(kind),
            data,
        }
    }

    /// The stored and delivered form.
    pub fn to_json(&self) -> Value {
        json!({
            "id": super::new_id().to_string(),
            "type": self.kind,
            "created": super::now_us() / 1_000_000,
            "data": self.data,
        })
    }
}

fn intern(kind: &str) -> &'static str {
    const KINDS: [&str; 4] = [
        "budget.soft_limit_reached",
        "budget.hard_limit_reached",
        "latency_budget.breached",
        "latency_budget.recovered",
    ];
    KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("other")
}

/// The signature of `body` sent at unix time `t`.
pub fn sign(secret: &SecretString, t: u64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// POST one event, retrying transient failures a few times.
pub async fn deliver(
    client: reqwest::Client,
    url: String,
    secret: Option<SecretString>,
    event: Value,
) {
    let body = match serde_json::to_vec(&event) {
        Ok(b) => b,
        Err(_) => return,
    };
    for attempt in 0..4u32 {
        let t = super::now_us() / 1_000_000;
        let mut req = client
            .post(&url)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(10))
            .body(body.clone());
        if let Some(s) = &secret {
            req = req.header(SIGNATURE_HEADER, sign(s, t, &body));
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                tracing::warn!(status = r.status().as_u16(), "webhook refused the event");
                return;
            }
            Ok(r) => {
                tracing::warn!(status = r.status().as_u16(), attempt, "webhook failed");
            }
            Err(e) => tracing::warn!(error = %e, attempt, "webhook unreachable"),
        }
        tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
    }
}

/// Breach state of the configured latency budgets.
pub struct LatencyWatch {
    budgets: Vec<LatencyBudget>,
    breached: Vec<[bool; 2]>,
}

impl LatencyWatch {
    /// For these budgets.
    pub fn new(budgets: Vec<LatencyBudget>) -> Self {
        let breached = vec![[false; 2]; budgets.len()];
        Self { budgets, breached }
    }

    /// Current state: (budget name, percentile label, breached).
    pub fn states(&self) -> impl Iterator<Item = (&str, &'static str, bool)> + '_ {
        self.budgets.iter().zip(&self.breached).flat_map(|(b, s)| {
            let mut v = Vec::new();
            if b.p95.is_some() {
                v.push((b.name.as_str(), "p95", s[0]));
            }
            if b.p99.is_some() {
                v.push((b.name.as_str(), "p99", s[1]));
            }
            v
        })
    }

    /// Compare each budget with its window; events for changes only. A breach starts when the
    /// percentile exceeds the target with enough samples, and ends only when it falls below
    /// `target * clear_ratio`, so a value hovering at the target does not flap.
    pub fn evaluate(&mut self, stats: &LatencyStats, now_us: u64) -> Vec<Event> {
        let mut out = Vec::new();
        for (b, state) in self.budgets.iter().zip(self.breached.iter_mut()) {
            let (dim, value) = match &b.scope {
                LatencyScope::Endpoint(e) => ("endpoint", e.as_str()),
                LatencyScope::Model(m) => ("model", m.as_str()),
            };
            let Some(p) = stats.percentiles("latency", dim, value, now_us, b.window) else {
                continue;
            };
            for (i, (label, target, observed)) in
                [("p95", b.p95, p.p95_ms), ("p99", b.p99, p.p99_ms)]
                    .into_iter()
                    .enumerate()
            {
                let Some(target) = target else { continue };
                let target_ms = target.as_secs_f64() * 1e3;
                let data = || {
                    json!({
                        "budget": b.name,
                        dim: value,
                        "percentile": label,
                        "observed_ms": observed,
                        "target_ms": target_ms,
                        "window_s": b.window.as_secs(),
                        "samples": p.count,
                    })
                };
                if !state[i] && p.count >= b.min_samples && observed > target_ms {
                    state[i] = true;
                    out.push(Event::new("latency_budget.breached", data()));
                } else if state[i] && observed < target_ms * b.clear_ratio {
                    state[i] = false;
                    out.push(Event::new("latency_budget.recovered", data()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_time_and_body() {
        let s = SecretString::from("whsec".to_owned());
        let sig = sign(&s, 1_700_000_000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec").unwrap();
        mac.update(b"1700000000.{}");
        assert_eq!(
            sig,
            format!(
                "t=1700000000,v1={}",
                hex::encode(mac.finalize().into_bytes())
            )
        );
    }
}
