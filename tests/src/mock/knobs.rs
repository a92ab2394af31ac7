//! The mock's knobs: per instance (flags, `POST /_mock/config`) and per request (a `mock`
//! object in the request body, which the gateway passes through untouched).

use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Deserializer, Serialize};

/// A latency: fixed, uniform in a range, or log-normal (heavy-tailed, as real providers are).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(into = "String")]
pub enum Latency {
    /// Always this many milliseconds.
    Fixed(u64),
    /// Uniform between the two bounds, in milliseconds.
    Uniform(u64, u64),
    /// Log-normal with this median and 99th percentile, in milliseconds.
    LogNormal {
        /// Median.
        median_ms: f64,
        /// 99th percentile.
        p99_ms: f64,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Self::Fixed(0)
    }
}

impl Latency {
    /// Parse `250`, `500..10000` or `lognormal:800,8000`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let num = |t: &str| {
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("bad latency `{s}`"))
        };
        if let Some(rest) = s.strip_prefix("lognormal:") {
            let (m, p) = rest
                .split_once(',')
                .ok_or_else(|| format!("bad latency `{s}`"))?;
            let (m, p) = (num(m)? as f64, num(p)? as f64);
            if m <= 0.0 || p < m {
                return Err(format!("bad latency `{s}`: need 0 < median <= p99"));
            }
            return Ok(Self::LogNormal {
                median_ms: m,
                p99_ms: p,
            });
        }
        if let Some((a, b)) = s.split_once("..") {
            let (a, b) = (num(a)?, num(b)?);
            if b < a {
                return Err(format!("bad latency `{s}`: empty range"));
            }
            return Ok(Self::Uniform(a, b));
        }
        Ok(Self::Fixed(num(s)?))
    }

    /// Draw one latency.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        let ms = match *self {
            Self::Fixed(ms) => ms as f64,
            Self::Uniform(a, b) => rng.gen_range(a as f64..=b as f64),
            Self::LogNormal { median_ms, p99_ms } => {
                // p99 = median * exp(2.326 * sigma)
                let sigma = ((p99_ms / median_ms).ln() / 2.326).max(1e-6);
                LogNormal::new(median_ms.ln(), sigma).map_or(median_ms, |d| d.sample(rng))
            }
        };
        Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }
}

impl From<Latency> for String {
    fn from(l: Latency) -> Self {
        match l {
            Latency::Fixed(ms) => ms.to_string(),
            Latency::Uniform(a, b) => format!("{a}..{b}"),
            Latency::LogNormal { median_ms, p99_ms } => format!("lognormal:{median_ms},{p99_ms}"),
        }
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Self::Fixed(n)),
            Raw::S(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A way to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 500 with an error body.
    Status500,
    /// HTTP 503 with an error body.
    Status503,
    /// HTTP 429 with `Retry-After`.
    Status429,
    /// HTTP 400 (the request is "invalid"): must not fail over.
    Status400,
    /// Close the connection without answering.
    Reset,
    /// Answer, then cut the body off half-way.
    Truncate,
    /// Answer 200 with a body that is not valid JSON.
    Malformed,
    /// Never answer (until the client gives up).
    Hang,
}

/// Fault probabilities, each in [0, 1]; their sum should not exceed 1.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRates {
    /// P(500).
    #[serde(default)]
    pub status_500: f64,
    /// P(503).
    #[serde(default)]
    pub status_503: f64,
    /// P(429).
    #[serde(default)]
    pub status_429: f64,
    /// P(reset).
    #[serde(default)]
    pub reset: f64,
    /// P(truncated body).
    #[serde(default)]
    pub truncate: f64,
    /// P(malformed JSON).
    #[serde(default)]
    pub malformed: f64,
    /// P(hang).
    #[serde(default)]
    pub hang: f64,
}

impl FaultRates {
    /// Roll the dice.
    pub fn pick(&self, rng: &mut impl Rng) -> Option<Fault> {
        let table = [
            (self.status_500, Fault::Status500),
            (self.status_503, Fault::Status503),
            (self.status_429, Fault::Status429),
            (self.reset, Fault::Reset),
            (self.truncate, Fault::Truncate),
            (self.malformed, Fault::Malformed),
            (self.hang, Fault::Hang),
        ];
        let total: f64 = table.iter().map(|(p, _)| p.max(0.0)).sum();
        if total <= 0.0 {
            return None;
        }
        let mut x: f64 = rng.gen();
        for (p, f) in table {
            if x < p.max(0.0) {
                return Some(f);
            }
            x -= p.max(0.0);
        }
        None
    }
}

/// Instance-wide behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    /// Time before a non-streamed answer.
    #[serde(default)]
    pub latency: Latency,
    /// Time before the first streamed chunk.
    #[serde(default)]
    pub ttft: Latency,
    /// Time between streamed chunks.
    #[serde(default)]
    pub itl: Latency,
    /// Fault probabilities.
    #[serde(default)]
    pub faults: FaultRates,
    /// `Retry-After` seconds sent with 429.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
    /// Words in a generated reply.
    #[serde(default = "default_reply_words")]
    pub reply_words: usize,
    /// Require this credential, in each format's own header (`Authorization: Bearer`,
    /// `x-api-key` with `anthropic-version`, `x-goog-api-key`); 401 otherwise.
    #[serde(default)]
    pub api_key: Option<String>,
}

fn default_retry_after() -> u64 {
    1
}
fn default_reply_words() -> usize {
    12
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Latency::default(),
            ttft: Latency::default(),
            itl: Latency::default(),
            faults: FaultRates::default(),
            retry_after_secs: default_retry_after(),
            reply_words: default_reply_words(),
            api_key: None,
        }
    }
}

/// Per-request overrides, from the body's `mock` object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestKnobs {
    /// Force this fault (or none with `null`).
    #[serde(default)]
    pub fault: Option<Fault>,
    /// Override the latency.
    #[serde(default)]
    pub latency: Option<Latency>,
    /// Override time to first token.
    #[serde(default)]
    pub ttft: Option<Latency>,
    /// Override inter-token delay.
    #[serde(default)]
    pub itl: Option<Latency>,
    /// Exact reply text (split on spaces into stream chunks).
    #[serde(default)]
    pub reply: Option<String>,
    /// Number of words in a generated reply.
    #[serde(default)]
    pub reply_words: Option<usize>,
    /// Leave `usage` out of the answer (as some servers do).
    #[serde(default)]
    pub omit_usage: bool,
    /// Reply with the request body exactly as received (to check pass-through).
    #[serde(default)]
    pub echo: bool,
    /// Answer with this tool call instead of text.
    #[serde(default)]
    pub tool_call: Option<MockToolCall>,
}

/// A scripted tool call.
#[derive(Debug, Clone, Deserialize)]
pub struct MockToolCall {
    /// Function name.
    pub name: String,
    /// Arguments object.
    #[serde(default)]
    pub arguments: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_forms_parse_and_sample_in_range() -> Result<(), String> {
        let mut rng = rand::thread_rng();
        assert_eq!(Latency::parse("250")?, Latency::Fixed(250));
        let u = Latency::parse("500..10000")?;
        for _ in 0..100 {
            let d = u.sample(&mut rng).as_millis();
            assert!((500..=10000).contains(&d));
        }
        let l = Latency::parse("lognormal:100,1000")?;
        let mut v: Vec<u128> = (0..2000).map(|_| l.sample(&mut rng).as_millis()).collect();
        v.sort_unstable();
        let median = v[1000];
        assert!((70..=140).contains(&median), "median {median}");
        assert!(Latency::parse("10..5").is_err());
        Ok(())
    }

    #[test]
    fn fault_rates_hit_their_share() {
        let mut rng = rand::thread_rng();
        let r = FaultRates {
            status_500: 0.3,
            ..FaultRates::default()
        };
        let n = (0..10_000)
            .filter(|_| r.pick(&mut rng) == Some(Fault::Status500))
            .count();
        assert!((2700..3300).contains(&n), "{n}");
        assert_eq!(FaultRates::default().pick(&mut rng), None);
    }
}
