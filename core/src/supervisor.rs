//! The supervisor: starts every long-lived actor, restarts the ones that stop, and hands the
//! rest of the runtime a [`Registry`] of their addresses.
//!
//! Each child runs under [`actix::Supervisor`], so a child that stops (a bug, an injected
//! fault, an admin reset) is rebuilt in place behind the same address: callers keep their
//! [`Addr`] and only the message in flight is lost (its sender sees an error and fails over).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use serde::Serialize;

use crate::config::Config;
use crate::local::{LocalModels, ModelState};
use crate::providers::{GetHealth, ProviderActor, ProviderError, ProviderHealth, Upstream};

/// Addresses of the supervised actors, shared read-only with request handlers.
#[derive(Clone, Default)]
pub struct Registry {
    /// Provider actors by name, with the upstream state each owns.
    pub providers: BTreeMap<String, (Addr<ProviderActor>, Arc<Upstream>)>,
    /// Local-inference services (front actors over `SyncArbiter` workers).
    pub local: LocalModels,
}

/// The actor that owns the others.
pub struct Supervisor {
    registry: Registry,
    provider_arbiter: Arbiter,
}

/// Why the actors could not start.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// A provider could not be built.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl Supervisor {
    /// Start the supervisor and its children on the current actix system.
    pub fn start(config: &Config) -> Result<(Addr<Self>, Registry), SuperviseError> {
        // Provider actors own lifecycle and state, not traffic, so one thread serves them all;
        // the HTTP exchanges themselves run on the request workers.
        let provider_arbiter = Arbiter::new();
        let mut registry = Registry::default();
        for (name, spec) in &config.providers {
            let upstream = Arc::new(Upstream::new(Arc::new(spec.clone()))?);
            let actor = ProviderActor::new(Arc::clone(&upstream));
            let addr =
                actix::Supervisor::start_in_arbiter(&provider_arbiter.handle(), move |_| actor);
            registry.providers.insert(name.clone(), (addr, upstream));
        }
        registry.local = LocalModels::start(&config.local);
        let sup = Self {
            registry: registry.clone(),
            provider_arbiter,
        };
        Ok((sup.start(), registry))
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!(
            providers = self.registry.providers.len(),
            "supervisor started"
        );
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.provider_arbiter.stop();
    }
}

/// Ask every child for its health.
#[derive(Message)]
#[rtype(result = "SystemHealth")]
pub struct CheckHealth;

/// The runtime's health, as `/readyz` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SystemHealth {
    /// Every child answered.
    pub actors_ok: bool,
    /// Per-provider detail.
    pub providers: Vec<ProviderHealth>,
    /// Local models and their states.
    pub local: BTreeMap<&'static str, ModelState>,
}

impl Handler<CheckHealth> for Supervisor {
    type Result = ResponseFuture<SystemHealth>;

    fn handle(&mut self, _: CheckHealth, _: &mut Self::Context) -> Self::Result {
        let providers: Vec<(Addr<ProviderActor>, Arc<Upstream>)> =
            self.registry.providers.values().cloned().collect();
        let local = self.registry.local.states().into_iter().collect();
        Box::pin(async move {
            let asks = providers
                .iter()
                .map(|(a, _)| a.send(GetHealth).timeout(Duration::from_secs(2)));
            let answers = join_all(asks).await;
            let mut actors_ok = true;
            let mut out = Vec::with_capacity(answers.len());
            for ((_, upstream), answer) in providers.into_iter().zip(answers) {
                match answer {
                    Ok(h) => out.push(h),
                    Err(e) => {
                        actors_ok = false;
                        let mut h = upstream.health();
                        h.healthy = false;
                        h.last_error = Some(format!("provider actor did not answer: {e}"));
                        out.push(h);
                    }
                }
            }
            SystemHealth {
                actors_ok,
                providers: out,
                local,
            }
        })
    }
}
