//! The embedding service: a `SyncArbiter` worker owning the MiniLM model, a front actor that
//! folds concurrent requests into one batch while the worker is busy, and an admission bound.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use actix::prelude::*;
use arc_swap::ArcSwap;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::{device_choice, LocalError, ModelState, EMBED_MODEL, PANIC_TRIGGER};
use crate::config::LocalConfig;
use switchyard_models::{select_device, Embedder, ModelStore};

/// Vectors and per-text token counts.
pub type EmbedOutput = (Vec<Vec<f32>>, Vec<usize>);

/// The worker: owns the model on its own thread.
struct EmbedWorker {
    model: Arc<Embedder>,
    fault_injection: bool,
}

impl Actor for EmbedWorker {
    type Context = SyncContext<Self>;
}

#[derive(Message)]
#[rtype(result = "Result<EmbedOutput, LocalError>")]
struct EmbedBatch(Vec<String>, Vec<usize>);

impl Handler<EmbedBatch> for EmbedWorker {
    type Result = Result<EmbedOutput, LocalError>;

    fn handle(&mut self, msg: EmbedBatch, ctx: &mut Self::Context) -> Self::Result {
        let inject = self.fault_injection && msg.0.iter().any(|t| t == PANIC_TRIGGER);
        let model = Arc::clone(&self.model);
        let result = catch_unwind(AssertUnwindSafe(|| {
            if inject {
                #[allow(clippy::panic)] // the test-only fault, by design
                {
                    panic!("injected fault in the embedding worker");
                }
            }
            let texts: Vec<&str> = msg.0.iter().map(String::as_str).collect();
            model.embed_windows(&texts, &msg.1)
        }));
        match result {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(match e {
                switchyard_models::ModelError::Input(m) => LocalError::Input(m),
                other => LocalError::Inference(other.to_string()),
            }),
            Err(_) => {
                tracing::error!(
                    model = EMBED_MODEL,
                    "embedding worker panicked; rebuilding it"
                );
                // SyncArbiter builds a fresh worker from its factory when this one stops.
                ctx.stop();
                Err(LocalError::Crashed(EMBED_MODEL.to_owned()))
            }
        }
    }
}

/// One caller's share of a batch.
struct Pending {
    texts: Vec<String>,
    /// Tokens of each text read.
    window: usize,
    reply: oneshot::Sender<Result<EmbedOutput, LocalError>>,
}

/// The front actor: batching and lifecycle.
struct EmbedFront {
    worker: Option<Addr<EmbedWorker>>,
    pending: Vec<Pending>,
    in_flight: bool,
    state: Arc<ArcSwap<ModelState>>,
    fault_injection: bool,
}

impl Actor for EmbedFront {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Loaded(Result<Arc<Embedder>, String>);

impl Handler<Loaded> for EmbedFront {
    type Result = ();

    fn handle(&mut self, msg: Loaded, _: &mut Self::Context) {
        match msg.0 {
            Ok(model) => {
                let fault_injection = self.fault_injection;
                self.worker = Some(SyncArbiter::start(1, move || EmbedWorker {
                    model: Arc::clone(&model),
                    fault_injection,
                }));
                self.state.store(Arc::new(ModelState::Ready));
                tracing::info!(model = EMBED_MODEL, "local model ready");
            }
            Err(reason) => {
                tracing::error!(model = EMBED_MODEL, %reason, "local model failed to load");
                self.state.store(Arc::new(ModelState::Failed(reason)));
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<EmbedOutput, LocalError>")]
struct Embed(Vec<String>, usize);

impl Handler<Embed> for EmbedFront {
    type Result = ResponseFuture<Result<EmbedOutput, LocalError>>;

    fn handle(&mut self, msg: Embed, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.pending.push(Pending {
            texts: msg.0,
            window: msg.1,
            reply: tx,
        });
        self.flush(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(LocalError::Crashed(EMBED_MODEL.to_owned())))
        })
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct BatchDone;

impl Handler<BatchDone> for EmbedFront {
    type Result = ();

    fn handle(&mut self, _: BatchDone, ctx: &mut Self::Context) {
        self.in_flight = false;
        self.flush(ctx);
    }
}

impl EmbedFront {
    /// Send everything pending as one batch, unless a batch is already running (then the
    /// requests wait and go together when it ends: batching without a fixed delay).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || self.pending.is_empty() {
            return;
        }
        let Some(worker) = self.worker.clone() else {
            for p in self.pending.drain(..) {
                let _ = p
                    .reply
                    .send(Err(LocalError::Loading(EMBED_MODEL.to_owned())));
            }
            return;
        };
        let batch = std::mem::take(&mut self.pending);
        let texts: Vec<String> = batch.iter().flat_map(|p| p.texts.iter().cloned()).collect();
        let windows: Vec<usize> = batch
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.window, p.texts.len()))
            .collect();
        self.in_flight = true;
        let me = ctx.address();
        actix_rt::spawn(async move {
            let result = match worker.send(EmbedBatch(texts, windows)).await {
                Ok(r) => r,
                Err(_) => Err(LocalError::Crashed(EMBED_MODEL.to_owned())),
            };
            match result {
                Ok((mut vectors, mut tokens)) => {
                    for p in batch.into_iter().rev() {
                        let at = vectors.len() - p.texts.len();
                        let v = vectors.split_off(at);
                        let t = tokens.split_off(at);
                        let _ = p.reply.send(Ok((v, t)));
                    }
                }
                Err(LocalError::Input(m)) if batch.len() > 1 => {
                    // One caller's bad input must not fail the others: retry them alone.
                    for p in batch {
                        let windows = vec![p.window; p.texts.len()];
                        let r = worker.send(EmbedBatch(p.texts, windows)).await;
                        let _ =
                            p.reply.send(r.unwrap_or_else(|_| {
                                Err(LocalError::Crashed(EMBED_MODEL.to_owned()))
                            }));
                    }
                    let _ = m;
                }
                Err(e) => {
                    for p in batch {
                        let _ = p.reply.send(Err(e.clone()));
                    }
                }
            }
            me.do_send(BatchDone);
        });
    }
}

/// One unit vector per label.
pub type Centroids = Arc<Vec<Vec<f32>>>;

/// Label sets whose centroids are kept.
const CENTROID_SETS: usize = 256;

/// Centroids of recently used zero-shot label sets. Callers send the same labels call after
/// call, and embedding their descriptions and examples would otherwise be most of the work of
/// classifying one short text.
#[derive(Default)]
pub struct CentroidCache {
    inner: std::sync::Mutex<CentroidSets>,
}

#[derive(Default)]
struct CentroidSets {
    /// Centroids and when they were last used, by label-set key.
    sets: std::collections::HashMap<[u8; 32], (Centroids, u64)>,
    tick: u64,
}

impl CentroidCache {
    /// The key of a label set: its texts and which label each describes, in order.
    pub fn key(texts: &[&str], owner: &[usize]) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (t, o) in texts.iter().zip(owner) {
            h.update((*o as u64).to_le_bytes());
            h.update((t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
        }
        h.finalize().into()
    }

    /// The centroids of a label set seen recently.
    pub fn get(&self, key: &[u8; 32]) -> Option<Centroids> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.tick += 1;
        let tick = g.tick;
        g.sets.get_mut(key).map(|(c, used)| {
            *used = tick;
            Arc::clone(c)
        })
    }

    /// Keep a label set's centroids, dropping the least recently used set when full.
    pub fn put(&self, key: [u8; 32], centroids: Centroids) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.tick += 1;
        let tick = g.tick;
        if g.sets.len() >= CENTROID_SETS && !g.sets.contains_key(&key) {
            if let Some(oldest) = g.sets.iter().min_by_key(|(_, (_, u))| *u).map(|(k, _)| *k) {
                g.sets.remove(&oldest);
            }
        }
        g.sets.insert(key, (centroids, tick));
    }

    /// Sets kept.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sets
            .len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The embedding model as the rest of the runtime sees it.
pub struct EmbedService {
    front: Addr<EmbedFront>,
    permits: Arc<Semaphore>,
    capacity: usize,
    state: Arc<ArcSwap<ModelState>>,
    /// Zero-shot label centroids of recent label sets.
    pub centroids: CentroidCache,
}

impl EmbedService {
    /// Start the front actor and load the model in the background.
    pub fn start(cfg: &LocalConfig) -> Self {
        let state = Arc::new(ArcSwap::from_pointee(ModelState::Loading));
        let front = EmbedFront {
            worker: None,
            pending: Vec::new(),
            in_flight: false,
            state: Arc::clone(&state),
            fault_injection: cfg.fault_injection,
        }
        .start();
        let (dir, device, hub) = (cfg.models_dir.clone(), cfg.device, cfg.hub_download);
        let loader = front.clone();
        actix_rt::spawn(async move {
            // Reading, checking and warming the model is CPU work: keep it off the executors.
            let loaded = tokio::task::spawn_blocking(move || -> Result<Arc<Embedder>, String> {
                let files = ModelStore::new(dir)
                    .with_hub(hub)
                    .resolve("minilm")
                    .map_err(|e| e.to_string())?;
                let device = select_device(device_choice(device)).map_err(|e| e.to_string())?;
                let model = Embedder::load(&files, &device).map_err(|e| e.to_string())?;
                model.embed(&["warm-up"]).map_err(|e| e.to_string())?;
                Ok(Arc::new(model))
            })
            .await
            .unwrap_or_else(|e| Err(format!("loader thread failed: {e}")));
            loader.do_send(Loaded(loaded));
        });
        Self {
            front,
            permits: Arc::new(Semaphore::new(cfg.queue)),
            capacity: cfg.queue,
            state,
            centroids: CentroidCache::default(),
        }
    }

    /// Current lifecycle state.
    pub fn state(&self) -> ModelState {
        ModelState::clone(&self.state.load())
    }

    /// Requests admitted and not finished (queued or running), for the queue-depth gauge.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// Admit a request, or refuse at once when the queue is full or the model not ready.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, LocalError> {
        match self.state() {
            ModelState::Ready => {}
            ModelState::Loading => return Err(LocalError::Loading(EMBED_MODEL.to_owned())),
            ModelState::Failed(reason) => {
                return Err(LocalError::Failed {
                    model: EMBED_MODEL.to_owned(),
                    reason,
                })
            }
        }
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| LocalError::Busy(EMBED_MODEL.to_owned()))
    }

    /// Embed texts (holding an admission permit).
    pub async fn embed(
        &self,
        permit: &OwnedSemaphorePermit,
        texts: Vec<String>,
    ) -> Result<EmbedOutput, LocalError> {
        self.embed_head(permit, texts, switchyard_models::embed::MAX_TOKENS)
            .await
    }

    /// Embed the first `window` tokens of each text (the token counts are the whole texts').
    pub async fn embed_head(
        &self,
        _permit: &OwnedSemaphorePermit,
        texts: Vec<String>,
        window: usize,
    ) -> Result<EmbedOutput, LocalError> {
        match self.front.send(Embed(texts, window)).await {
            Ok(r) => r,
            Err(_) => Err(LocalError::Crashed(EMBED_MODEL.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centroid_cache_keys_on_texts_and_owners_and_drops_the_least_recent() {
        let a = CentroidCache::key(&["sports", "politics"], &[0, 1]);
        assert_ne!(a, CentroidCache::key(&["politics", "sports"], &[0, 1]));
        assert_ne!(a, CentroidCache::key(&["sports", "politics"], &[0, 0]));
        // Lengths are part of the key: moving a boundary changes it.
        assert_ne!(
            CentroidCache::key(&["ab", "c"], &[0, 1]),
            CentroidCache::key(&["a", "bc"], &[0, 1])
        );
        let cache = CentroidCache::default();
        let set = |i: usize| Arc::new(vec![vec![i as f32]]);
        for i in 0..CENTROID_SETS {
            cache.put(CentroidCache::key(&[&i.to_string()], &[0]), set(i));
        }
        // Touch the oldest, then overflow: the second oldest goes, the touched one stays.
        let first = CentroidCache::key(&["0"], &[0]);
        assert_eq!(cache.get(&first).unwrap()[0][0], 0.0);
        cache.put(CentroidCache::key(&["new"], &[0]), set(999));
        assert_eq!(cache.len(), CENTROID_SETS);
        assert!(cache.get(&first).is_some());
        assert!(cache.get(&CentroidCache::key(&["1"], &[0])).is_none());
        assert!(cache.get(&CentroidCache::key(&["new"], &[0])).is_some());
    }
}
