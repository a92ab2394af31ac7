//! The ledger's sled trees: call records in time order, an index by request id, daily totals
//! per dimension, and events. A batch of records and the totals it adds commit in one
//! transaction, so after a crash the totals always equal the records that survived.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use super::record::{dimension_values, CallRecord, Totals};

const LEDGER: &str = "ledger";
const EVENTS: &str = "events";

/// A storage failure, as text (sled's own error type is not `Clone`).
#[derive(Debug, thiserror::Error)]
#[error("ledger storage: {0}")]
pub struct StoreError(pub String);

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self(e.to_string())
    }
}

/// Filters of `GET /admin/requests`.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Not before (unix µs).
    pub since_us: Option<u64>,
    /// Before (unix µs).
    pub until_us: Option<u64>,
    /// Tenant.
    pub tenant: Option<String>,
    /// End user.
    pub user: Option<String>,
    /// Requested or resolved model.
    pub model: Option<String>,
    /// HTTP status, or `ok` / `error`.
    pub status: Option<String>,
    /// Most records returned (newest first).
    pub limit: usize,
}

impl Query {
    fn matches(&self, r: &CallRecord) -> bool {
        let eq = |want: &Option<String>, have: Option<&String>| {
            want.as_ref().is_none_or(|w| have.is_some_and(|h| h == w))
        };
        eq(&self.tenant, Some(&r.tenant))
            && eq(&self.user, r.user.as_ref())
            && self.model.as_ref().is_none_or(|m| {
                r.model_requested.as_ref() == Some(m) || r.model_resolved.as_ref() == Some(m)
            })
            && self.status.as_deref().is_none_or(|s| match s {
                "ok" => r.status < 400 && r.outcome == super::record::Outcome::Ok,
                "error" => r.status >= 400 || r.outcome != super::record::Outcome::Ok,
                code => code.parse::<u16>().is_ok_and(|c| c == r.status),
            })
    }
}

/// The ledger's tree. Records, the id index, daily totals and the record count share one sled
/// tree under distinct key prefixes, so one atomic batch commits a set of records together
/// with everything they add (sled batches are atomic within a tree, and much cheaper than
/// multi-tree transactions).
#[derive(Clone)]
pub struct LedgerStore {
    db: sled::Db,
    tree: sled::Tree,
    events: sled::Tree,
}

/// Key prefixes in the ledger tree.
const CALL: u8 = b'c';
const ID: u8 = b'i';
const DAY: u8 = b'd';
const COUNT: &[u8] = b"n";

static SEQ: AtomicU32 = AtomicU32::new(0);

fn call_key(ts_us: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = CALL;
    k[1..9].copy_from_slice(&ts_us.to_be_bytes());
    k[9..].copy_from_slice(&SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    k
}

fn id_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1);
    k.push(ID);
    k.extend_from_slice(id.as_bytes());
    k
}

fn daily_key(day: &str, dim: &str, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(day.len() + dim.len() + value.len() + 3);
    k.push(DAY);
    k.extend_from_slice(day.as_bytes());
    k.push(0);
    k.extend_from_slice(dim.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k
}

fn u64_of(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0)
}

fn ts_of(call_key: &[u8]) -> u64 {
    call_key
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

impl LedgerStore {
    /// Open the trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            tree: db.open_tree(LEDGER)?,
            events: db.open_tree(EVENTS)?,
        })
    }

    /// Records held.
    pub fn count(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.tree.get(COUNT)?))
    }

    /// Commit a batch of records and their totals atomically, then sync to disk. Only the
    /// ledger writer calls this, so reading the totals before the batch is race-free.
    pub fn append(&self, batch: &[CallRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut out = sled::Batch::default();
        let mut sums: BTreeMap<Vec<u8>, Totals> = BTreeMap::new();
        for r in batch {
            let key = call_key(r.ts_us);
            out.insert(&key[..], serde_json::to_vec(r)?);
            out.insert(id_key(&r.id), &key[..]);
            let day = r.day();
            for (dim, value) in dimension_values(r) {
                sums.entry(daily_key(&day, dim, &value)).or_default().add(r);
            }
        }
        for (key, add) in &sums {
            let mut t = match self.tree.get(key)? {
                Some(v) => serde_json::from_slice::<Totals>(&v)?,
                None => Totals::default(),
            };
            t.merge(add);
            out.insert(key.as_slice(), serde_json::to_vec(&t)?);
        }
        let count = self.count()? + batch.len() as u64;
        out.insert(COUNT, &count.to_be_bytes());
        self.tree.apply_batch(out)?;
        self.db.flush()?;
        Ok(())
    }

    /// Delete records older than `cutoff_us` and beyond `max_records`, oldest first, at most
    /// `max_batch` per call. Returns how many went.
    pub fn prune(
        &self,
        cutoff_us: u64,
        max_records: u64,
        max_batch: usize,
    ) -> Result<u64, StoreError> {
        let count = self.count()?;
        let excess = count.saturating_sub(max_records);
        let mut out = sled::Batch::default();
        let mut n = 0u64;
        for item in self.tree.scan_prefix([CALL]) {
            let (k, v) = item?;
            if (ts_of(&k) >= cutoff_us && n >= excess) || n as usize >= max_batch {
                break;
            }
            if let Ok(r) = serde_json::from_slice::<CallRecord>(&v) {
                let ik = id_key(&r.id);
                if self.tree.get(&ik)?.as_deref() == Some(k.as_ref()) {
                    out.remove(ik);
                }
            }
            out.remove(k);
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        out.insert(COUNT, &count.saturating_sub(n).to_be_bytes());
        self.tree.apply_batch(out)?;
        Ok(n)
    }

    /// Newest first, filtered; scans at most `max_scan` records.
    pub fn query(&self, q: &Query, max_scan: usize) -> Result<Vec<CallRecord>, StoreError> {
        let bound = |ts: u64| {
            let mut k = [0u8; 9];
            k[0] = CALL;
            k[1..].copy_from_slice(&ts.to_be_bytes());
            k
        };
        let (lo, hi) = (
            bound(q.since_us.unwrap_or(0)),
            bound(q.until_us.unwrap_or(u64::MAX)),
        );
        let mut out = Vec::new();
        for item in self.tree.range(&lo[..]..&hi[..]).rev().take(max_scan) {
            let (_, v) = item?;
            let r: CallRecord = serde_json::from_slice(&v)?;
            if q.matches(&r) {
                out.push(r);
                if out.len() >= q.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// One record by request id.
    pub fn get(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let Some(key) = self.tree.get(id_key(id))? else {
            return Ok(None);
        };
        match self.tree.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Every record, oldest first (tests and exports).
    pub fn scan_all(&self) -> impl Iterator<Item = Result<CallRecord, StoreError>> + '_ {
        self.tree.scan_prefix([CALL]).map(|item| {
            let (_, v) = item?;
            Ok(serde_json::from_slice(&v)?)
        })
    }

    /// Daily totals of one day: dimension → value → totals.
    pub fn day(&self, day: &str) -> Result<BTreeMap<String, BTreeMap<String, Totals>>, StoreError> {
        let mut prefix = vec![DAY];
        prefix.extend_from_slice(day.as_bytes());
        prefix.push(0);
        let mut out: BTreeMap<String, BTreeMap<String, Totals>> = BTreeMap::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            let rest = &k[prefix.len()..];
            let mut parts = rest.splitn(2, |b| *b == 0);
            let dim = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let value = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            out.entry(dim)
                .or_default()
                .insert(value, serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// Append an event (JSON) and keep at most `keep` of them.
    pub fn push_event(&self, event: &serde_json::Value, keep: usize) -> Result<(), StoreError> {
        let key = call_key(super::now_us());
        self.events.insert(&key[..], serde_json::to_vec(event)?)?;
        while self.events.len() > keep {
            match self.events.pop_min()? {
                Some(_) => {}
                None => break,
            }
        }
        Ok(())
    }

    /// Newest events first.
    pub fn events(&self, limit: usize) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut out = Vec::new();
        for item in self.events.iter().rev().take(limit) {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }
}
