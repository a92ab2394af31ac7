//! The router: decides where a request goes.
//!
//! Today it resolves a public model name to its ordered failover chain, from an immutable
//! snapshot built at start-up, so handlers never queue behind an actor to read it. A name of
//! the form `provider/model` addresses a configured provider directly.

pub mod history;
pub mod learn;
pub mod policy;

use crate::config::Price;
use crate::ledger::{LedgerStore, Prices, Query};
use policy::{Policy, RawRouting};

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::error::ApiError;
use crate::providers::chain::Route;
use crate::supervisor::Registry;

/// Public model names and their chains.
pub struct ModelMap {
    models: HashMap<String, Arc<[Route]>>,
    local_fallback: std::collections::BTreeSet<String>,
    registry: Registry,
    names: Vec<String>,
}

impl ModelMap {
    /// Build from config and the started actors. Targets whose provider has no actor are
    /// impossible after config validation, and are skipped rather than trusted.
    pub fn new(config: &Config, registry: &Registry) -> Self {
        let mut models = HashMap::new();
        for (name, targets) in &config.models {
            let routes: Vec<Route> = targets
                .iter()
                .filter_map(|t| {
                    registry
                        .providers
                        .get(&t.provider)
                        .map(|(addr, upstream)| Route {
                            provider: t.provider.clone(),
                            upstream: Arc::clone(upstream),
                            addr: addr.clone(),
                            model: t.model.clone(),
                        })
                })
                .collect();
            models.insert(name.clone(), Arc::from(routes));
        }
        Self {
            local_fallback: config.local_fallback.clone(),
            names: config.models.keys().cloned().collect(),
            models,
            registry: registry.clone(),
        }
    }

    /// The chain for a model name.
    pub fn resolve(&self, model: &str) -> Result<Arc<[Route]>, ApiError> {
        if let Some(routes) = self.models.get(model) {
            return Ok(Arc::clone(routes));
        }
        if let Some((provider, upstream)) = model.split_once('/') {
            if let Some((addr, state)) = self.registry.providers.get(provider) {
                if !upstream.is_empty() {
                    return Ok(Arc::from(vec![Route {
                        provider: provider.to_owned(),
                        upstream: Arc::clone(state),
                        addr: addr.clone(),
                        model: upstream.to_owned(),
                    }]));
                }
            }
        }
        Err(ApiError::ModelNotFound(model.to_owned()))
    }

    /// Whether the local model is this model's last resort.
    pub fn local_fallback(&self, model: &str) -> bool {
        self.local_fallback.contains(model)
    }

    /// Public model names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Validate a policy and, when it asks for a strong-tier share, calibrate its threshold on the
/// ledger's recent routed calls.
pub fn build_policy(
    raw: RawRouting,
    known: &dyn Fn(&str) -> bool,
    store: &LedgerStore,
) -> Result<Policy, ApiError> {
    calibrate(Policy::new(raw, known)?, store)
}

/// How often a policy with a strong-tier share is calibrated again on the latest calls.
pub const RECALIBRATE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// `policy` with its threshold calibrated on the ledger's recent routed calls (unchanged when
/// it sets no strong-tier share).
pub fn calibrate(policy: Policy, store: &LedgerStore) -> Result<Policy, ApiError> {
    if policy.raw.strong_share.is_none() {
        return Ok(policy);
    }
    let records = store
        .query(
            &Query {
                model: Some(policy.raw.model.clone()),
                limit: policy.raw.calibrate_calls,
                ..Query::default()
            },
            2_000_000,
        )
        .map_err(|e| ApiError::Internal(format!("ledger storage: {e}")))?;
    let recent = records
        .iter()
        .filter_map(|r| r.route_inputs.as_ref()?.features.as_deref());
    Ok(policy.calibrated(recent))
}

/// The price of a public model name: its first target's upstream model, or the name itself;
/// the local model is free.
pub fn price_of(models: &ModelMap, prices: &Prices, model: &str) -> Option<Price> {
    if crate::api::chat::is_local_chat(model) {
        return Some(Price::default());
    }
    let upstream = models
        .resolve(model)
        .ok()
        .and_then(|r| r.first().map(|t| (t.provider.clone(), t.model.clone())));
    match upstream {
        Some((p, m)) => prices.lookup(&[&format!("{p}/{m}"), &m, model]),
        None => prices.lookup(&[model]),
    }
}

/// Reason prefix of a cascade whose local answer was unsure and went to the stronger tier.
pub const CASCADE_ESCALATED: &str = "cascade:";
/// Reason prefix of a cascade whose local answer was confident enough to keep.
pub const CASCADE_KEPT: &str = "cascade_kept:";

/// The training label a routed call's outcome gives, from its ledger `route_reason`
/// (`route:<tier>:<reason>...`): 1 when its cascade had to escalate (the weak tier was not
/// good enough), 0 when the local answer was kept; none for calls that did not cascade.
pub fn outcome_label(route_reason: &str) -> Option<f32> {
    let rest = route_reason.strip_prefix("route:")?;
    let (_, reason) = rest.split_once(':')?;
    if reason.starts_with(CASCADE_KEPT) {
        Some(0.0)
    } else if reason.starts_with(CASCADE_ESCALATED) {
        Some(1.0)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_come_from_cascades_only() {
        assert_eq!(
            outcome_label("route:large:cascade:rule:0:confidence=-2.10"),
            Some(1.0)
        );
        assert_eq!(
            outcome_label("route:local:cascade_kept:rule:0:confidence=-0.40"),
            Some(0.0)
        );
        assert_eq!(outcome_label("route:large:score:0.910"), None);
        assert_eq!(outcome_label("budget_downgrade"), None);
    }
}
