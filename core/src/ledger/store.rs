//! The ledger's sled trees: call records in time order, an index by request id, daily totals
//! per dimension, and events. A batch of records and the totals it adds commit in one
//! transaction, so after a crash the totals always equal the records that survived.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::record::{dimension_values, CallRecord, Totals};

const CALLS: &str = "ledger.calls";
const IDS: &str = "ledger.ids";
const DAILY: &str = "ledger.daily";
const META: &str = "ledger.meta";
const EVENTS: &str = "events";
const COUNT_KEY: &[u8] = b"count";

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

/// The ledger's trees.
#[derive(Clone)]
pub struct LedgerStore {
    db: sled::Db,
    calls: sled::Tree,
    ids: sled::Tree,
    daily: sled::Tree,
    meta: sled::Tree,
    events: sled::Tree,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn call_key(ts_us: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&ts_us.to_be_bytes());
    k[8..].copy_from_slice(&SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    k
}

fn daily_key(day: &str, dim: &str, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(day.len() + dim.len() + value.len() + 2);
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

impl LedgerStore {
    /// Open the trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            db: db.clone(),
            calls: db.open_tree(CALLS)?,
            ids: db.open_tree(IDS)?,
            daily: db.open_tree(DAILY)?,
            meta: db.open_tree(META)?,
            events: db.open_tree(EVENTS)?,
        })
    }

    /// Records held.
    pub fn count(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.meta.get(COUNT_KEY)?))
    }

    /// Commit a batch of records and their totals in one transaction, then sync to disk.
    pub fn append(&self, batch: &[CallRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut encoded = Vec::with_capacity(batch.len());
        let mut sums: BTreeMap<Vec<u8>, Totals> = BTreeMap::new();
        for r in batch {
            encoded.push((call_key(r.ts_us), r.id.as_bytes(), serde_json::to_vec(r)?));
            let day = r.day();
            for (dim, value) in dimension_values(r) {
                sums.entry(daily_key(&day, dim, &value)).or_default().add(r);
            }
        }
        let n = batch.len() as u64;
        let res: Result<(), TransactionError<StoreError>> =
            (&self.calls, &self.ids, &self.daily, &self.meta).transaction(
                |(calls, ids, daily, meta)| {
                    for (key, id, value) in &encoded {
                        calls.insert(&key[..], value.as_slice())?;
                        ids.insert(*id, &key[..])?;
                    }
                    for (key, add) in &sums {
                        let mut t = match daily.get(key)? {
                            Some(v) => serde_json::from_slice::<Totals>(&v).map_err(|e| {
                                ConflictableTransactionError::Abort(StoreError(e.to_string()))
                            })?,
                            None => Totals::default(),
                        };
                        t.merge(add);
                        let v = serde_json::to_vec(&t).map_err(|e| {
                            ConflictableTransactionError::Abort(StoreError(e.to_string()))
                        })?;
                        daily.insert(key.as_slice(), v)?;
                    }
                    let count = u64_of(meta.get(COUNT_KEY)?) + n;
                    meta.insert(COUNT_KEY, &count.to_be_bytes())?;
                    Ok(())
                },
            );
        match res {
            Ok(()) => {}
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        }
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
        let mut victims = Vec::new();
        for item in self.calls.iter() {
            let (k, v) = item?;
            let ts = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            if (ts >= cutoff_us && victims.len() as u64 >= excess) || victims.len() >= max_batch {
                break;
            }
            let id = serde_json::from_slice::<CallRecord>(&v).map(|r| r.id).ok();
            victims.push((k, id));
        }
        if victims.is_empty() {
            return Ok(0);
        }
        let n = victims.len() as u64;
        let res: Result<(), TransactionError<StoreError>> = (&self.calls, &self.ids, &self.meta)
            .transaction(|(calls, ids, meta)| {
                for (k, id) in &victims {
                    calls.remove(k)?;
                    if let Some(id) = id {
                        if ids.get(id.as_bytes())?.as_deref() == Some(k.as_ref()) {
                            ids.remove(id.as_bytes())?;
                        }
                    }
                }
                let count = u64_of(meta.get(COUNT_KEY)?).saturating_sub(n);
                meta.insert(COUNT_KEY, &count.to_be_bytes())?;
                Ok(())
            });
        match res {
            Ok(()) => Ok(n),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// Newest first, filtered; scans at most `max_scan` records.
    pub fn query(&self, q: &Query, max_scan: usize) -> Result<Vec<CallRecord>, StoreError> {
        let lo = q.since_us.unwrap_or(0).to_be_bytes();
        let hi = q.until_us.unwrap_or(u64::MAX).to_be_bytes();
        let mut out = Vec::new();
        for item in self.calls.range(&lo[..]..&hi[..]).rev().take(max_scan) {
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
        let Some(key) = self.ids.get(id.as_bytes())? else {
            return Ok(None);
        };
        match self.calls.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Every record, oldest first (tests and exports).
    pub fn scan_all(&self) -> impl Iterator<Item = Result<CallRecord, StoreError>> + '_ {
        self.calls.iter().map(|item| {
            let (_, v) = item?;
            Ok(serde_json::from_slice(&v)?)
        })
    }

    /// Daily totals of one day: dimension → value → totals.
    pub fn day(&self, day: &str) -> Result<BTreeMap<String, BTreeMap<String, Totals>>, StoreError> {
        let mut prefix = day.as_bytes().to_vec();
        prefix.push(0);
        let mut out: BTreeMap<String, BTreeMap<String, Totals>> = BTreeMap::new();
        for item in self.daily.scan_prefix(&prefix) {
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
