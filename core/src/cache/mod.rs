//! The response cache: exact (hash of the normalised request) and semantic (MiniLM embedding of
//! the question, checked by a trained verifier), persistent in sled and partitioned by tenant.
//!
//! Each tenant has its own sled tree (`cache/<tenant>`) and its own semantic indexes: a lookup
//! names its tenant and can only ever see that tenant's entries. Exact lookups read sled
//! directly from the handler (a concurrent B-tree read of a few microseconds); the
//! [`CacheActor`], on its own thread, owns everything that changes: writes, the ANN indexes,
//! size accounting with cost-aware eviction, TTL sweeps and purges. Sled is the source of truth;
//! the indexes are rebuilt from it on start, and entries that fail their checksum are dropped.

pub mod config;
pub mod entry;
pub mod index;
pub mod key;
pub mod learn;
pub mod stream;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use switchyard_models::verify::Verifier;

pub use config::{Mode, RawCache};
pub use entry::{Entry, Semantic};
use index::{AnnIndex, Flat, Graph};

use crate::metrics::Metrics;

/// The verifier shipped with Switchyard (trained by `scripts/cache-eval.sh` on QQP pairs).
const BUILTIN_VERIFIER: &[u8] = include_bytes!("verifier.json");

/// How often expired entries are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Candidates verified per semantic lookup.
const CANDIDATES: usize = 4;

/// Tree name prefix; the tenant follows.
const TREE_PREFIX: &str = "cache/";

/// Why the cache could not open.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
    /// Sled failed.
    #[error("cache storage: {0}")]
    Storage(#[from] sled::Error),
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A semantic hit.
#[derive(Debug, Clone)]
pub struct SemanticHit {
    /// The entry's exact key.
    pub key: [u8; 32],
    /// Verifier probability.
    pub probability: f32,
    /// Cosine similarity of the questions.
    pub cosine: f32,
}

/// The handle the HTTP handlers use.
pub struct Cache {
    /// Settings.
    pub config: RawCache,
    db: sled::Db,
    trees: RwLock<HashMap<String, sled::Tree>>,
    addr: Addr<CacheActor>,
    arbiter: Option<Arbiter>,
    /// Entries dropped at start because they failed their checksum.
    pub dropped_corrupt: u64,
}

impl Drop for Cache {
    fn drop(&mut self) {
        // Stopping the actor's thread releases its handle on the store.
        if let Some(a) = self.arbiter.take() {
            a.stop();
        }
    }
}

impl Cache {
    /// Open the cache in `db`: check every stored entry, rebuild the indexes and start the
    /// actor on its own thread.
    pub fn open(
        config: RawCache,
        db: &sled::Db,
        metrics: Arc<Metrics>,
    ) -> Result<Self, CacheError> {
        config.validate().map_err(CacheError::Config)?;
        let verifier = match &config.verifier {
            Some(path) => Verifier::load(path)
                .map_err(|e| CacheError::Config(format!("cache.verifier: {e}")))?,
            None => Verifier::from_json(BUILTIN_VERIFIER)
                .map_err(|e| CacheError::Config(format!("built-in verifier: {e}")))?,
        };
        let mut actor = CacheActor {
            db: db.clone(),
            entries: HashMap::new(),
            parts: HashMap::new(),
            bytes: 0,
            clock: 0.0,
            uses: 0,
            hits: BTreeMap::new(),
            max_bytes: config.max_bytes,
            flat_max: config.flat_max,
            min_cosine: config.min_cosine,
            threshold: config.threshold.unwrap_or(verifier.threshold),
            verifier,
            metrics,
        };
        let mut dropped = 0u64;
        let mut trees = HashMap::new();
        let now = now_s();
        for name in db.tree_names() {
            let Some(tenant) = std::str::from_utf8(&name)
                .ok()
                .and_then(|n| n.strip_prefix(TREE_PREFIX))
                .map(str::to_owned)
            else {
                continue;
            };
            let tree = db.open_tree(&name)?;
            for item in tree.iter() {
                let (k, v) = item?;
                let key: Option<[u8; 32]> = k.as_ref().try_into().ok();
                match (key, Entry::decode(&v)) {
                    (Some(key), Ok(e)) if !e.expired(now) => {
                        actor.index(&tenant, key, &e, v.len() as u64);
                    }
                    (_, Ok(_)) => {
                        tree.remove(&k)?;
                    }
                    (_, Err(err)) => {
                        tracing::warn!(tenant = %tenant, error = %err, "dropping a damaged cache entry");
                        tree.remove(&k)?;
                        dropped += 1;
                    }
                }
            }
            trees.insert(tenant, tree);
        }
        actor
            .metrics
            .cache_removed
            .with_label_values(&["corrupt"])
            .inc_by(dropped);
        actor.publish();
        tracing::info!(
            entries = actor.entries.len(),
            bytes = actor.bytes,
            dropped,
            "cache opened"
        );
        let arbiter = Arbiter::new();
        let addr = CacheActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        Ok(Self {
            config,
            db: db.clone(),
            trees: RwLock::new(trees),
            addr,
            arbiter: Some(arbiter),
            dropped_corrupt: dropped,
        })
    }

    fn tree(&self, tenant: &str) -> Option<sled::Tree> {
        if let Some(t) = self.trees.read().ok()?.get(tenant) {
            return Some(t.clone());
        }
        let tree = self.db.open_tree(format!("{TREE_PREFIX}{tenant}")).ok()?;
        self.trees
            .write()
            .ok()?
            .insert(tenant.to_owned(), tree.clone());
        Some(tree)
    }

    /// The live entry under `key` in `tenant`'s partition.
    pub fn get(&self, tenant: &str, key: &[u8; 32]) -> Option<Entry> {
        let bytes = self.tree(tenant)?.get(key).ok()??;
        match Entry::decode(&bytes) {
            Ok(e) if !e.expired(now_s()) => {
                self.addr.do_send(Touch {
                    tenant: tenant.to_owned(),
                    key: *key,
                });
                Some(e)
            }
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(tenant, error = %err, "damaged cache entry; removing it");
                self.addr.do_send(Remove {
                    tenant: tenant.to_owned(),
                    key: *key,
                    reason: "corrupt",
                });
                None
            }
        }
    }

    /// The best verified paraphrase of `question` in `tenant`'s `partition`; on a miss, the
    /// verifier's best score among the candidates, if any was close enough to check.
    pub async fn semantic(
        &self,
        tenant: &str,
        partition: &str,
        embedding: Vec<f32>,
        question: String,
    ) -> Result<(Entry, SemanticHit), Option<f32>> {
        let (hit, nearest) = self
            .addr
            .send(Lookup {
                tenant: tenant.to_owned(),
                partition: partition.to_owned(),
                embedding,
                question,
            })
            .await
            .map_err(|_| None)?;
        let hit = hit.ok_or(nearest)?;
        let entry = self.get(tenant, &hit.key).ok_or(nearest)?;
        Ok((entry, hit))
    }

    /// Store an answer (in the background, on the cache's thread).
    pub fn put(&self, tenant: &str, key: [u8; 32], entry: Entry) {
        self.addr.do_send(Put {
            tenant: tenant.to_owned(),
            key,
            entry,
        });
    }

    /// Per-tenant statistics.
    pub async fn stats(&self) -> Option<CacheStats> {
        let mut s = self.addr.send(Stats).await.ok()?;
        s.dropped_corrupt = self.dropped_corrupt;
        Some(s)
    }

    /// Remove entries matching every given filter; returns how many.
    pub async fn purge(&self, p: Purge) -> Option<u64> {
        self.addr.send(p).await.ok()
    }

    /// Wait until every write sent so far is applied (tests, shutdown).
    pub async fn settle(&self) {
        let _ = self.addr.send(Stats).await;
    }
}

struct Meta {
    bytes: u64,
    expires_s: u64,
    created_s: u64,
    model: String,
    cost_pusd: u64,
    hits: u64,
    priority: f64,
    /// Last use, in the actor's own order: breaks ties in priority (least recently used first).
    used: u64,
    slot: Option<(String, usize)>,
}

struct Slot {
    key: [u8; 32],
    question: String,
    embedding: Vec<f32>,
}

struct Part {
    index: Box<dyn AnnIndex>,
    slots: Vec<Option<Slot>>,
    live: usize,
}

/// Owns the cache's mutable state; see the module docs.
pub struct CacheActor {
    db: sled::Db,
    entries: HashMap<(String, [u8; 32]), Meta>,
    parts: HashMap<(String, String), Part>,
    bytes: u64,
    /// GreedyDual-Size "inflation": the priority of the last entry evicted.
    clock: f64,
    /// Use counter for [`Meta::used`].
    uses: u64,
    hits: BTreeMap<String, (u64, u64)>,
    max_bytes: u64,
    flat_max: usize,
    min_cosine: f32,
    threshold: f32,
    verifier: Verifier,
    metrics: Arc<Metrics>,
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_EVERY, |act, _| act.sweep());
    }
}

impl CacheActor {
    /// Cost-aware value (GreedyDual-Size-Frequency): what keeping the entry saves per byte,
    /// weighted by how often it is used, on top of the clock. Local and free answers still
    /// count a little (the time they save).
    fn priority(&self, m: &Meta) -> f64 {
        let value = (m.cost_pusd as f64 + 1e6) * (m.hits + 1) as f64;
        self.clock + value / m.bytes.max(1) as f64
    }

    fn index(&mut self, tenant: &str, key: [u8; 32], e: &Entry, bytes: u64) {
        self.unindex(tenant, &key);
        let mut rebuilt = false;
        let slot = e.semantic.as_ref().map(|s| {
            let pk = (tenant.to_owned(), s.partition.clone());
            let flat_max = self.flat_max;
            let part = self.parts.entry(pk).or_insert_with(|| Part {
                index: Box::new(Flat::default()),
                slots: Vec::new(),
                live: 0,
            });
            let id = part.slots.len();
            part.slots.push(Some(Slot {
                key,
                question: s.question.clone(),
                embedding: s.embedding.clone(),
            }));
            part.live += 1;
            part.index.insert(id, &s.embedding);
            if part.index.kind() == "flat" && part.index.len() > flat_max {
                rebuild(part, true);
                rebuilt = true;
            }
            (s.partition.clone(), id)
        });
        let pk = slot.as_ref().map(|(p, _)| (tenant.to_owned(), p.clone()));
        let mut meta = Meta {
            bytes,
            expires_s: e.expires_s,
            created_s: e.created_s,
            model: e.model.clone(),
            cost_pusd: e.cost_pusd,
            hits: 0,
            priority: 0.0,
            used: self.uses,
            slot,
        };
        self.uses += 1;
        meta.priority = self.priority(&meta);
        self.bytes += bytes;
        self.entries.insert((tenant.to_owned(), key), meta);
        if let (true, Some(pk)) = (rebuilt, pk) {
            self.renumber(&pk);
        }
    }

    fn unindex(&mut self, tenant: &str, key: &[u8; 32]) -> bool {
        let Some(meta) = self.entries.remove(&(tenant.to_owned(), *key)) else {
            return false;
        };
        self.bytes = self.bytes.saturating_sub(meta.bytes);
        if let Some((partition, id)) = meta.slot {
            let pk = (tenant.to_owned(), partition);
            if let Some(part) = self.parts.get_mut(&pk) {
                if let Some(s) = part.slots.get_mut(id) {
                    *s = None;
                    part.live -= 1;
                }
                if part.live == 0 {
                    self.parts.remove(&pk);
                } else if part.live * 2 < part.slots.len() {
                    let graph = part.index.kind() == "hnsw" && part.live > self.flat_max;
                    rebuild(part, graph);
                    self.renumber(&pk);
                }
            }
        }
        true
    }

    /// After a rebuild compacted a partition's slots, point the entries at their new ids.
    fn renumber(&mut self, pk: &(String, String)) {
        let Some(part) = self.parts.get(pk) else {
            return;
        };
        for (id, slot) in part.slots.iter().enumerate() {
            if let Some(s) = slot {
                if let Some(m) = self.entries.get_mut(&(pk.0.clone(), s.key)) {
                    m.slot = Some((pk.1.clone(), id));
                }
            }
        }
    }

    fn remove(&mut self, tenant: &str, key: &[u8; 32], reason: &str) {
        if let Ok(tree) = self.db.open_tree(format!("{TREE_PREFIX}{tenant}")) {
            if let Err(e) = tree.remove(key) {
                tracing::warn!(error = %e, "cache remove failed");
            }
        }
        if self.unindex(tenant, key) || reason == "corrupt" {
            self.metrics
                .cache_removed
                .with_label_values(&[reason])
                .inc();
        }
    }

    fn evict(&mut self) {
        if self.bytes <= self.max_bytes {
            return;
        }
        let target = self.max_bytes / 10 * 9;
        let mut order: Vec<((String, [u8; 32]), f64, u64)> = self
            .entries
            .iter()
            .map(|(k, m)| (k.clone(), m.priority, m.used))
            .collect();
        order.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)));
        for ((tenant, key), priority, _) in order {
            if self.bytes <= target {
                break;
            }
            self.clock = priority;
            self.remove(&tenant, &key, "size");
        }
    }

    fn sweep(&mut self) {
        let now = now_s();
        let expired: Vec<(String, [u8; 32])> = self
            .entries
            .iter()
            .filter(|(_, m)| m.expires_s != 0 && m.expires_s <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (tenant, key) in expired {
            self.remove(&tenant, &key, "ttl");
        }
        self.publish();
    }

    fn publish(&self) {
        let g = &self.metrics.cache_state;
        g.with_label_values(&["entries"])
            .set(self.entries.len() as i64);
        g.with_label_values(&["bytes"]).set(self.bytes as i64);
        g.with_label_values(&["semantic_entries"])
            .set(self.parts.values().map(|p| p.live as i64).sum());
    }
}

fn rebuild(part: &mut Part, graph: bool) {
    let slots: Vec<Slot> = part.slots.drain(..).flatten().collect();
    let mut index: Box<dyn AnnIndex> = if graph {
        Box::new(Graph::new(slots.len() * 2))
    } else {
        Box::new(Flat::default())
    };
    for (id, s) in slots.iter().enumerate() {
        index.insert(id, &s.embedding);
    }
    part.live = slots.len();
    part.slots = slots.into_iter().map(Some).collect();
    part.index = index;
}

/// Store an entry.
#[derive(Message)]
#[rtype(result = "()")]
struct Put {
    tenant: String,
    key: [u8; 32],
    entry: Entry,
}

impl Handler<Put> for CacheActor {
    type Result = ();

    fn handle(&mut self, m: Put, _: &mut Self::Context) {
        let bytes = m.entry.encode();
        let tree = match self.db.open_tree(format!("{TREE_PREFIX}{}", m.tenant)) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cache write failed");
                return;
            }
        };
        if let Err(e) = tree.insert(m.key, bytes.as_slice()) {
            tracing::warn!(error = %e, "cache write failed");
            return;
        }
        self.index(&m.tenant, m.key, &m.entry, bytes.len() as u64);
        self.evict();
        self.publish();
    }
}

/// An entry was served.
#[derive(Message)]
#[rtype(result = "()")]
struct Touch {
    tenant: String,
    key: [u8; 32],
}

impl Handler<Touch> for CacheActor {
    type Result = ();

    fn handle(&mut self, m: Touch, _: &mut Self::Context) {
        let k = (m.tenant, m.key);
        if let Some(mut meta) = self.entries.remove(&k) {
            meta.hits += 1;
            meta.priority = self.priority(&meta);
            meta.used = self.uses;
            self.uses += 1;
            self.hits.entry(k.0.clone()).or_default().0 += 1;
            self.entries.insert(k, meta);
        }
    }
}

/// Drop an entry.
#[derive(Message)]
#[rtype(result = "()")]
struct Remove {
    tenant: String,
    key: [u8; 32],
    reason: &'static str,
}

impl Handler<Remove> for CacheActor {
    type Result = ();

    fn handle(&mut self, m: Remove, _: &mut Self::Context) {
        self.remove(&m.tenant, &m.key, m.reason);
        self.publish();
    }
}

/// Find a verified paraphrase.
#[derive(Message)]
#[rtype(result = "(Option<SemanticHit>, Option<f32>)")]
struct Lookup {
    tenant: String,
    partition: String,
    embedding: Vec<f32>,
    question: String,
}

impl Handler<Lookup> for CacheActor {
    type Result = MessageResult<Lookup>;

    fn handle(&mut self, m: Lookup, _: &mut Self::Context) -> Self::Result {
        let Some(part) = self.parts.get(&(m.tenant.clone(), m.partition)) else {
            return MessageResult((None, None));
        };
        let now = now_s();
        let mut best: Option<SemanticHit> = None;
        let mut nearest: Option<f32> = None;
        for (id, cosine) in part.index.search(&m.embedding, CANDIDATES) {
            if cosine < self.min_cosine {
                continue;
            }
            let Some(Some(slot)) = part.slots.get(id) else {
                continue;
            };
            let live = self
                .entries
                .get(&(m.tenant.clone(), slot.key))
                .is_some_and(|meta| meta.expires_s == 0 || meta.expires_s > now);
            if !live {
                continue;
            }
            let p = self.verifier.probability(
                &m.embedding,
                &m.question,
                &slot.embedding,
                &slot.question,
            );
            nearest = Some(nearest.map_or(p, |n: f32| n.max(p)));
            if p >= self.threshold && best.as_ref().is_none_or(|b| p > b.probability) {
                best = Some(SemanticHit {
                    key: slot.key,
                    probability: p,
                    cosine,
                });
            }
        }
        if best.is_some() {
            self.hits.entry(m.tenant).or_default().1 += 1;
        }
        MessageResult((best, nearest))
    }
}

/// Per-tenant figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantStats {
    /// Entries stored.
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Entries that may answer semantically.
    pub semantic_entries: u64,
    /// Hits served since start (exact and semantic reads).
    pub hits: u64,
    /// Of which semantic.
    pub semantic_hits: u64,
    /// Semantic partitions and how each is searched.
    pub indexes: BTreeMap<String, u64>,
}

/// The whole cache's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheStats {
    /// Entries stored.
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The size limit.
    pub max_bytes: u64,
    /// Entries dropped at start because they failed their checksum.
    pub dropped_corrupt: u64,
    /// Per tenant.
    pub tenants: BTreeMap<String, TenantStats>,
}

/// Ask for the statistics.
#[derive(Message)]
#[rtype(result = "CacheStats")]
struct Stats;

impl Handler<Stats> for CacheActor {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Self::Context) -> Self::Result {
        let mut s = CacheStats {
            entries: self.entries.len() as u64,
            bytes: self.bytes,
            max_bytes: self.max_bytes,
            dropped_corrupt: 0,
            tenants: BTreeMap::new(),
        };
        for ((tenant, _), m) in &self.entries {
            let t = s.tenants.entry(tenant.clone()).or_default();
            t.entries += 1;
            t.bytes += m.bytes;
            t.semantic_entries += u64::from(m.slot.is_some());
        }
        for ((tenant, _), part) in &self.parts {
            let t = s.tenants.entry(tenant.clone()).or_default();
            *t.indexes.entry(part.index.kind().to_owned()).or_default() += 1;
        }
        for (tenant, (hits, semantic)) in &self.hits {
            let t = s.tenants.entry(tenant.clone()).or_default();
            t.hits = *hits;
            t.semantic_hits = *semantic;
        }
        MessageResult(s)
    }
}

/// Remove entries matching every filter given (`DELETE`-style admin purge).
#[derive(Debug, Default, Message, serde::Deserialize)]
#[rtype(result = "u64")]
#[serde(deny_unknown_fields)]
pub struct Purge {
    /// Only this tenant's.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only answers for this public model name.
    #[serde(default)]
    pub model: Option<String>,
    /// Only entries stored at least this many seconds ago.
    #[serde(default)]
    pub older_than_s: Option<u64>,
    /// Only this exact key (hex, as in `x-switchyard-cache-key`).
    #[serde(default)]
    pub key: Option<String>,
}

impl Handler<Purge> for CacheActor {
    type Result = u64;

    fn handle(&mut self, p: Purge, _: &mut Self::Context) -> u64 {
        let now = now_s();
        let victims: Vec<(String, [u8; 32])> = self
            .entries
            .iter()
            .filter(|((tenant, key), m)| {
                p.tenant.as_ref().is_none_or(|t| t == tenant)
                    && p.model.as_ref().is_none_or(|x| *x == m.model)
                    && p.older_than_s
                        .is_none_or(|age| now.saturating_sub(m.created_s) >= age)
                    && p.key.as_ref().is_none_or(|k| *k == hex::encode(key))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (tenant, key) in &victims {
            self.remove(tenant, key, "purge");
        }
        self.publish();
        victims.len() as u64
    }
}
