//! Token prices: a built-in table of common models, overridden and extended by `[prices]`.
//! Amounts are integer picodollars per token, so per-user and per-day totals are exact.

use std::collections::BTreeMap;

use crate::config::{Price, PricesConfig};

/// USD per million tokens (input, output, cached input) of widely used models, as published
/// by their providers; `[prices.models]` overrides any of them.
const BUILT_IN: &[(&str, f64, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60, 0.075),
    ("gpt-4o", 2.50, 10.00, 1.25),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10),
    ("gpt-4.1", 2.00, 8.00, 0.50),
    ("gpt-4-turbo", 10.00, 30.00, 10.00),
    ("gpt-3.5-turbo", 0.50, 1.50, 0.50),
    ("o4-mini", 1.10, 4.40, 0.275),
    ("o3-mini", 1.10, 4.40, 0.55),
    ("o3", 2.00, 8.00, 0.50),
    ("o1", 15.00, 60.00, 7.50),
    ("text-embedding-3-small", 0.02, 0.0, 0.02),
    ("text-embedding-3-large", 0.13, 0.0, 0.13),
    ("claude-3-haiku", 0.25, 1.25, 0.03),
    ("claude-3-5-haiku", 0.80, 4.00, 0.08),
    ("claude-haiku-4-5", 1.00, 5.00, 0.10),
    ("claude-3-5-sonnet", 3.00, 15.00, 0.30),
    ("claude-3-7-sonnet", 3.00, 15.00, 0.30),
    ("claude-sonnet-4", 3.00, 15.00, 0.30),
    ("claude-opus-4", 15.00, 75.00, 1.50),
    ("gemini-1.5-flash", 0.075, 0.30, 0.01875),
    ("gemini-1.5-pro", 1.25, 5.00, 0.3125),
    ("gemini-2.0-flash-lite", 0.075, 0.30, 0.075),
    ("gemini-2.0-flash", 0.10, 0.40, 0.025),
    ("gemini-2.5-flash", 0.30, 2.50, 0.075),
    ("gemini-2.5-pro", 1.25, 10.00, 0.31),
];

/// The price table in force.
#[derive(Debug, Clone)]
pub struct Prices {
    table: BTreeMap<String, Price>,
    baseline: Option<Price>,
}

impl Prices {
    /// Built-ins plus configuration.
    pub fn new(cfg: &PricesConfig) -> Self {
        let mut table: BTreeMap<String, Price> = BUILT_IN
            .iter()
            .map(|(m, i, o, c)| ((*m).to_owned(), Price::per_million(*i, *o, Some(*c))))
            .collect();
        table.extend(cfg.models.iter().map(|(k, v)| (k.clone(), *v)));
        let mut p = Self {
            table,
            baseline: None,
        };
        p.baseline = cfg.savings_baseline.as_deref().and_then(|m| p.lookup(&[m]));
        p
    }

    /// The first of `names` with a price: exact names first, then the longest built-in or
    /// configured prefix (dated snapshots like `gpt-4o-mini-2024-07-18`).
    pub fn lookup(&self, names: &[&str]) -> Option<Price> {
        for n in names {
            if let Some(p) = self.table.get(*n) {
                return Some(*p);
            }
        }
        for n in names {
            let bare = n.rsplit('/').next().unwrap_or(n);
            let best = self
                .table
                .iter()
                .filter(|(k, _)| bare.starts_with(k.as_str()))
                .max_by_key(|(k, _)| k.len());
            if let Some((_, p)) = best {
                return Some(*p);
            }
        }
        None
    }

    /// Cost in picodollars of a call priced at `price`.
    pub fn cost(price: Price, prompt: u64, completion: u64, cached: u64) -> u64 {
        let cached = cached.min(prompt);
        (prompt - cached)
            .saturating_mul(price.input)
            .saturating_add(cached.saturating_mul(price.cached_input))
            .saturating_add(completion.saturating_mul(price.output))
    }

    /// The savings baseline's price, if configured and known.
    pub fn baseline(&self) -> Option<Price> {
        self.baseline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_prices_win_and_prefixes_match_snapshots() {
        let mut cfg = PricesConfig::default();
        cfg.models
            .insert("gpt-4o".to_owned(), Price::per_million(1.0, 2.0, None));
        let p = Prices::new(&cfg);
        assert_eq!(
            p.lookup(&["gpt-4o"]),
            Some(Price::per_million(1.0, 2.0, None))
        );
        // A dated snapshot takes its family's price, not the shorter `gpt-4o` one.
        assert_eq!(
            p.lookup(&["gpt-4o-mini-2024-07-18"]),
            Some(Price::per_million(0.15, 0.60, Some(0.075)))
        );
        assert_eq!(p.lookup(&["no-such-model"]), None);
        // 1,000 prompt tokens (200 cached) and 500 completion tokens on gpt-4o-mini:
        // 800 * 0.15 + 200 * 0.075 + 500 * 0.60 = 435 micro-dollars.
        let price = Price::per_million(0.15, 0.60, Some(0.075));
        assert_eq!(Prices::cost(price, 1_000, 500, 200), 435_000_000);
    }
}
