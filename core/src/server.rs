//! Starting the runtime: storage, the actor system, and the HTTP server, in one function that
//! `switchyard serve` and the end-to-end tests both call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::Addr;
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

use crate::api::{self, auth::Authenticator, AppState};
use crate::config::Config;
use crate::router::policy::Policy;
use crate::router::ModelMap;
use crate::storage::{Storage, StorageError};
use crate::supervisor::{SuperviseError, Supervisor};

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An actor could not be started.
    #[error(transparent)]
    Actors(#[from] SuperviseError),
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::StoreError),
    /// The jobs store could not open.
    #[error("jobs: {0}")]
    Jobs(String),
    /// The cache could not open.
    #[error("cache: {0}")]
    Cache(#[from] crate::cache::CacheError),
    /// The routing policy is invalid.
    #[error("routing policy: {0}")]
    Routing(crate::error::ApiError),
    /// Metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A started runtime.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Stops the HTTP server.
    pub handle: ServerHandle,
    /// The supervisor (tests inspect actors through it).
    pub supervisor: Addr<Supervisor>,
    /// The shared state.
    pub state: web::Data<AppState>,
    server: actix_web::dev::Server,
}

impl Running {
    /// Serve until the server stops (signal or [`ServerHandle::stop`]).
    pub async fn wait(self) -> std::io::Result<()> {
        self.server.await
    }

    /// Serve in the background on the current actix system; returns the control handle.
    pub fn spawn(self) -> (SocketAddr, ServerHandle, web::Data<AppState>) {
        let Self {
            addr,
            handle,
            server,
            state,
            ..
        } = self;
        actix_rt::spawn(server);
        (addr, handle, state)
    }
}

/// Open storage, start the actors and bind the HTTP server. Must run inside an actix system.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let storage = Storage::open(&config.server.data_dir)?;
    let (supervisor, registry) = Supervisor::start(&config)?;
    let metrics = Arc::new(crate::metrics::Metrics::new()?);
    let ledger = Arc::new(crate::ledger::Ledger::start(
        &config,
        storage.db(),
        metrics,
    )?);
    let cache = Arc::new(
        crate::cache::Cache::open(
            config.cache.clone(),
            storage.db(),
            Arc::clone(&ledger.metrics),
        )
        .map_err(StartError::Cache)?,
    );
    let models = Arc::new(ModelMap::new(&config, &registry));
    let routing: crate::router::policy::PolicySlot = Arc::default();
    let routing_history = crate::router::history::PolicyHistory::open(storage.db())?;
    let start_with = routing_history.startup(config.routing.as_ref())?;
    let known = |m: &str| models.resolve(m).is_ok() || crate::api::chat::is_local_chat(m);
    let mut raw = start_with.policy.clone();
    if start_with.source != crate::router::history::Source::Config {
        // A policy applied through the API over this same config file: keep it, unless the
        // models it names are gone.
        let restored = raw
            .clone()
            .map(|r| crate::router::build_policy(r, &known, &ledger.store))
            .transpose();
        match restored {
            Ok(p) => {
                tracing::info!(
                    version = start_with.version,
                    "routing policy restored from its last applied version"
                );
                routing.store(p.map(Arc::new));
                raw = None;
            }
            Err(e) => {
                tracing::warn!(version = start_with.version, error = %e, "the last applied routing policy no longer validates; the config file's is used");
                raw = config.routing.clone();
                routing_history.record(
                    raw.clone(),
                    crate::router::history::Source::Config,
                    None,
                    &crate::router::history::config_digest(config.routing.as_ref()),
                )?;
            }
        }
    }
    if let Some(raw) = raw {
        let policy =
            crate::router::build_policy(raw, &known, &ledger.store).map_err(StartError::Routing)?;
        routing.store(Some(Arc::new(policy)));
    }
    let upstreams = registry
        .providers
        .values()
        .map(|(_, u)| Arc::clone(u))
        .collect();
    // The job workers' credential: random per process, only ever in memory.
    let internal_token = format!("sy-internal-{}", uuid::Uuid::new_v4().simple());
    let auth = Arc::new(Authenticator::new(&config.auth).with_internal(&internal_token));
    let jobs = Arc::new(
        crate::jobs::actor::Jobs::open(config.jobs.clone(), storage.db())
            .map_err(|e| StartError::Jobs(e.to_string()))?,
    );
    let workers = config.server.workers;
    let listen = config.server.listen;
    let state = web::Data::new(AppState {
        config: Arc::new(config),
        models,
        auth,
        supervisor: supervisor.clone(),
        storage,
        local: registry.local.clone(),
        ledger,
        routing,
        routing_history,
        cache,
        jobs,
        upstreams,
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let listener = std::net::TcpListener::bind(listen).map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                crate::error::ApiError::InvalidParam {
                    param: None,
                    message: format!("Invalid query string: {e}"),
                }
                .into()
            }))
            .app_data(web::PathConfig::default().error_handler(|e, _| {
                crate::error::ApiError::InvalidParam {
                    param: None,
                    message: format!("Invalid path: {e}"),
                }
                .into()
            }))
            .wrap_fn(api::with_request_id)
            .configure(api::configure)
    })
    .workers(workers)
    .tcp_nodelay(true)
    .shutdown_timeout(30)
    .listen(listener)
    .map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?
    .run();
    let handle = server.handle();
    log_summary(&state, addr);
    let own = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    state.jobs.start(format!("http://{own}"), internal_token);
    actix_rt::spawn(recalibrate_loop(Arc::downgrade(
        &state.clone().into_inner(),
    )));
    Ok(Running {
        addr,
        handle,
        supervisor,
        state,
        server,
    })
}

/// Calibrate a strong-share policy's threshold again every [`crate::router::RECALIBRATE_EVERY`]
/// on the newest calls, unless an admin replaced the policy meanwhile. Holds the state weakly,
/// so a stopped server's state (and its store) is released, and ends with it.
async fn recalibrate_loop(weak: std::sync::Weak<AppState>) {
    let mut tick = actix_rt::time::interval(crate::router::RECALIBRATE_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(state) = weak.upgrade().map(web::Data::from) else {
            return;
        };
        let Some(current) = state
            .routing
            .load_full()
            .filter(|p| p.raw.strong_share.is_some())
        else {
            continue;
        };
        state.ledger.flush().await;
        let (st, policy) = (state.clone(), Policy::clone(&current));
        let fresh = web::block(move || crate::router::calibrate(policy, &st.ledger.store)).await;
        match fresh {
            Ok(Ok(p)) => {
                tracing::debug!(calibration = ?p.calibration(), "routing threshold recalibrated");
                state
                    .routing
                    .compare_and_swap(&Some(current), Some(Arc::new(p)));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "routing recalibration failed"),
            Err(e) => tracing::warn!(error = %e, "routing recalibration failed"),
        }
    }
}

fn log_summary(state: &AppState, addr: SocketAddr) {
    let c = &state.config;
    let providers: Vec<String> = c
        .providers
        .values()
        .map(|p| format!("{} ({})", p.name, p.base_url))
        .collect();
    tracing::info!(
        listen = %addr,
        data_dir = %state.storage.path().display(),
        workers = c.server.workers,
        "switchyard serving OpenAI-compatible API at http://{addr}/v1"
    );
    tracing::info!(
        providers = %if providers.is_empty() { "none".to_owned() } else { providers.join(", ") },
        models = %if c.models.is_empty() { "none".to_owned() } else { c.models.keys().cloned().collect::<Vec<_>>().join(", ") },
        "upstreams"
    );
    tracing::info!(
        keys = c.auth.keys.len(),
        unauthenticated_loopback = c.auth.allow_unauthenticated_loopback,
        "authentication"
    );
}
