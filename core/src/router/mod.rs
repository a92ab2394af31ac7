//! The router: decides where a request goes.
//!
//! Today it resolves a public model name to its ordered failover chain, from an immutable
//! snapshot built at start-up, so handlers never queue behind an actor to read it. A name of
//! the form `provider/model` addresses a configured provider directly.

pub mod learn;
pub mod policy;

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
