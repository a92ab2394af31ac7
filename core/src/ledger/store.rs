//! The ledger's sled trees: call records in time order, an index by request id, daily totals
//! per dimension, and events. A batch of records and the totals it adds commit in one
//! transaction, so after a crash the totals always equal the records that survived.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

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

/// Where a record sits: its page's key time and its index in the page (a paging cursor).
pub type Place = (u64, u32);

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
    /// Resume after this place (page key time, record index): where the previous page of
    /// results ended, from [`LedgerStore::query_page`].
    pub after: Option<(u64, u32)>,
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

/// The ledger's tree. Records are stored in pages, one per committed batch (compact binary,
/// `postcard`), beside an id index, the daily totals and the record count, all in one sled tree
/// under distinct key prefixes: one atomic sled batch commits a page with everything it adds.
/// A page costs one insert however many records it holds, which keeps the writer cheap.
#[derive(Clone)]
pub struct LedgerStore {
    db: sled::Db,
    tree: sled::Tree,
    events: sled::Tree,
    pending: Arc<Mutex<Pending>>,
}

/// Daily totals added since they were last folded into sled. Folding every batch would cost a
/// read-modify-write per user, tenant, tag... per batch; instead they are folded every
/// [`FOLD_PAGES`] pages, in the same atomic batch as a page, together with a watermark naming
/// that page. On open, pages after the watermark are replayed, so after a crash the totals
/// still equal the records kept.
#[derive(Default)]
struct Pending {
    deltas: HashMap<Vec<u8>, Totals>,
    pages: u32,
}

/// Pages between folds of the daily totals (about 5 s at the default flush interval).
const FOLD_PAGES: u32 = 50;
/// Key of the last page whose records the stored daily totals include.
const WATERMARK: &[u8] = b"w";

/// Key prefixes in the ledger tree.
const PAGE: u8 = b'p';
const ID: u8 = b'i';
const DAY: u8 = b'd';
const COUNT: &[u8] = b"n";
/// Format of a page's value (first byte).
const PAGE_V1: u8 = 1;
/// Longest a call may take and still be found by a `until` filter (pages are keyed by commit
/// time, records by start time).
const PAGE_SLACK_US: u64 = 3_600_000_000;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn time_key(prefix: u8, ts_us: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = prefix;
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

fn ts_of(page_key: &[u8]) -> u64 {
    page_key
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn encode_page(records: &[CallRecord]) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![PAGE_V1];
    postcard::to_io(records, &mut out).map_err(|e| StoreError(e.to_string()))?;
    Ok(out)
}

fn decode_page(v: &[u8]) -> Result<Vec<CallRecord>, StoreError> {
    match v.split_first() {
        Some((&PAGE_V1, rest)) => postcard::from_bytes(rest).map_err(|e| StoreError(e.to_string())),
        _ => Err(StoreError("unknown ledger page format".to_owned())),
    }
}

/// How far a UUIDv7 id's embedded time may be from the call's start and still be trusted.
const V7_SKEW_US: u64 = 60_000_000;
/// How long after its start a call's page is searched for (the default request deadline is
/// five minutes; streams and retries stay well inside this).
const FIND_WINDOW_US: u64 = 15 * 60_000_000;

/// The unix time (µs) a UUIDv7 id was made, if `id` is one.
fn v7_time_us(id: &str) -> Option<u64> {
    let u = uuid::Uuid::parse_str(id).ok()?;
    if u.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = u.get_timestamp()?.to_unix();
    Some(secs * 1_000_000 + u64::from(nanos) / 1_000)
}

/// Whether a record can be found from its id alone: a UUIDv7 (the gateway's own request ids)
/// made when the call started. Only other ids (chosen by clients) need an index entry, which
/// saves the writer one sled insert per call.
fn findable_by_time(r: &CallRecord) -> bool {
    v7_time_us(&r.id).is_some_and(|t| t.abs_diff(r.ts_us) <= V7_SKEW_US)
}

/// Where a record lives: its page's key and its index there.
fn locator(page: &[u8; 13], index: usize) -> [u8; 17] {
    let mut l = [0u8; 17];
    l[..13].copy_from_slice(page);
    l[13..].copy_from_slice(&(index as u32).to_be_bytes());
    l
}

impl LedgerStore {
    /// Open the trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let store = Self {
            db: db.clone(),
            tree: db.open_tree(LEDGER)?,
            events: db.open_tree(EVENTS)?,
            pending: Arc::default(),
        };
        // Replay the pages written after the last fold into the pending totals.
        let start = match store.tree.get(WATERMARK)? {
            Some(w) => {
                let mut k = w.to_vec();
                k.push(0);
                k
            }
            None => vec![PAGE],
        };
        let mut replayed = HashMap::new();
        for item in store.tree.range(start..vec![PAGE + 1]) {
            let (_, v) = item?;
            add_totals(&mut replayed, &decode_page(&v)?);
        }
        if let Ok(mut p) = store.pending.lock() {
            p.deltas = replayed;
        }
        Ok(store)
    }

    /// Records held.
    pub fn count(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.tree.get(COUNT)?))
    }

    /// Commit a batch of records as one page with its index entries and the totals it adds,
    /// atomically (durable after [`LedgerStore::sync`]). Only the ledger writer calls this, so reading the totals
    /// before the batch is race-free.
    pub fn append(&self, batch: &[CallRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut out = sled::Batch::default();
        let page = time_key(PAGE, super::now_us());
        out.insert(&page[..], encode_page(batch)?);
        for (i, r) in batch.iter().enumerate() {
            if !findable_by_time(r) {
                out.insert(id_key(&r.id), &locator(&page, i)[..]);
            }
        }
        let count = self.count()? + batch.len() as u64;
        out.insert(COUNT, &count.to_be_bytes());
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| StoreError("ledger totals lock poisoned".to_owned()))?;
        add_totals(&mut pending.deltas, batch);
        pending.pages += 1;
        let fold = pending.pages >= FOLD_PAGES;
        if fold {
            self.fold_into(&mut out, &pending.deltas)?;
            out.insert(WATERMARK, &page[..]);
        }
        self.tree.apply_batch(out)?;
        if fold {
            pending.deltas.clear();
            pending.pages = 0;
        }
        Ok(())
    }

    /// Add `deltas` to the stored totals, in `out`.
    fn fold_into(
        &self,
        out: &mut sled::Batch,
        deltas: &HashMap<Vec<u8>, Totals>,
    ) -> Result<(), StoreError> {
        for (key, add) in deltas {
            let mut t = match self.tree.get(key)? {
                Some(v) => serde_json::from_slice::<Totals>(&v)?,
                None => Totals::default(),
            };
            t.merge(add);
            out.insert(key.as_slice(), serde_json::to_vec(&t)?);
        }
        Ok(())
    }

    /// Fold the pending totals into sled now (before pruning, and at shutdown).
    pub fn fold(&self) -> Result<(), StoreError> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| StoreError("ledger totals lock poisoned".to_owned()))?;
        if pending.deltas.is_empty() {
            return Ok(());
        }
        let Some((last, _)) = self.tree.scan_prefix([PAGE]).next_back().transpose()? else {
            return Ok(());
        };
        let mut out = sled::Batch::default();
        self.fold_into(&mut out, &pending.deltas)?;
        out.insert(WATERMARK, last);
        self.tree.apply_batch(out)?;
        pending.deltas.clear();
        pending.pages = 0;
        Ok(())
    }

    /// Make everything committed so far durable (fsync).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Delete pages of records older than `cutoff_us` and beyond `max_records`, oldest first,
    /// at most about `max_batch` records per call. Returns how many records went.
    pub fn prune(
        &self,
        cutoff_us: u64,
        max_records: u64,
        max_batch: usize,
    ) -> Result<u64, StoreError> {
        // Totals must not depend on pages about to go.
        self.fold()?;
        let count = self.count()?;
        let excess = count.saturating_sub(max_records);
        let mut out = sled::Batch::default();
        let mut n = 0u64;
        for item in self.tree.scan_prefix([PAGE]) {
            let (k, v) = item?;
            if (ts_of(&k) >= cutoff_us && n >= excess) || n as usize >= max_batch {
                break;
            }
            let records = decode_page(&v).unwrap_or_default();
            for (i, r) in records.iter().enumerate() {
                if findable_by_time(r) {
                    continue;
                }
                let ik = id_key(&r.id);
                // Only if the id still points here (ids supplied by clients may repeat).
                if self.tree.get(&ik)?.is_some_and(|l| {
                    l.get(..13) == Some(k.as_ref())
                        && l.get(13..) == Some(&(i as u32).to_be_bytes()[..])
                }) {
                    out.remove(ik);
                }
            }
            out.remove(k);
            n += records.len() as u64;
        }
        if n == 0 {
            return Ok(0);
        }
        out.insert(COUNT, &count.saturating_sub(n).to_be_bytes());
        self.tree.apply_batch(out)?;
        Ok(n)
    }

    /// Newest first, filtered; decodes at most `max_scan` records.
    pub fn query(&self, q: &Query, max_scan: usize) -> Result<Vec<CallRecord>, StoreError> {
        Ok(self.query_page(q, max_scan)?.0)
    }

    /// As [`Self::query`], with the place of the last record returned: pass it back as
    /// `after` for the next page (stable however many calls arrive in between).
    pub fn query_page(
        &self,
        q: &Query,
        max_scan: usize,
    ) -> Result<(Vec<CallRecord>, Option<Place>), StoreError> {
        let bound = |ts: u64| {
            let mut k = [0u8; 9];
            k[0] = PAGE;
            k[1..].copy_from_slice(&ts.to_be_bytes());
            k
        };
        let since = q.since_us.unwrap_or(0);
        let until = q.until_us.unwrap_or(u64::MAX);
        let mut hi_ts = until.saturating_add(PAGE_SLACK_US);
        if let Some((page_ts, _)) = q.after {
            hi_ts = hi_ts.min(page_ts.saturating_add(1));
        }
        let (lo, hi) = (bound(since), bound(hi_ts));
        let mut out = Vec::new();
        let mut last = None;
        let mut scanned = 0usize;
        for item in self.tree.range(&lo[..]..&hi[..]).rev() {
            let (k, v) = item?;
            let page_ts = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            let records = decode_page(&v)?;
            // In the page the previous results ended in, start below where they stopped.
            let end = match q.after {
                Some((ts, index)) if ts == page_ts => (index as usize).min(records.len()),
                _ => records.len(),
            };
            for (i, r) in records.into_iter().enumerate().take(end).rev() {
                scanned += 1;
                if r.ts_us >= since && r.ts_us < until && q.matches(&r) {
                    out.push(r);
                    last = Some((page_ts, i as u32));
                    if out.len() >= q.limit {
                        return Ok((out, last));
                    }
                }
            }
            if scanned >= max_scan {
                break;
            }
        }
        Ok((out, last))
    }

    /// Every record that started at or after `since_us`, oldest page first (the timeline's
    /// warm start after a restart); stops after `max` records.
    pub fn for_each_since(
        &self,
        since_us: u64,
        max: usize,
        mut f: impl FnMut(&CallRecord),
    ) -> Result<usize, StoreError> {
        let mut lo = [0u8; 9];
        lo[0] = PAGE;
        lo[1..].copy_from_slice(&since_us.to_be_bytes());
        let mut n = 0;
        for item in self.tree.range(&lo[..]..&[PAGE + 1][..]) {
            let (_, v) = item?;
            for r in decode_page(&v)?.iter().filter(|r| r.ts_us >= since_us) {
                f(r);
                n += 1;
            }
            if n >= max {
                break;
            }
        }
        Ok(n)
    }

    /// One record by request id.
    pub fn get(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let Some(loc) = self.tree.get(id_key(id))? else {
            return self.find_by_time(id);
        };
        let (Some(page), Some(index)) = (loc.get(..13), loc.get(13..17)) else {
            return Ok(None);
        };
        let index = index.try_into().map_or(0, u32::from_be_bytes) as usize;
        match self.tree.get(page)? {
            Some(v) => Ok(decode_page(&v)?.into_iter().nth(index)),
            None => Ok(None),
        }
    }

    /// A record with a time-ordered id, from the pages committed after it started.
    fn find_by_time(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let Some(start) = v7_time_us(id) else {
            return Ok(None);
        };
        let bound = |ts: u64| {
            let mut k = [0u8; 9];
            k[0] = PAGE;
            k[1..].copy_from_slice(&ts.to_be_bytes());
            k
        };
        let lo = bound(start.saturating_sub(V7_SKEW_US));
        let hi = bound(start.saturating_add(V7_SKEW_US + FIND_WINDOW_US));
        for item in self.tree.range(&lo[..]..&hi[..]) {
            let (_, v) = item?;
            if let Some(r) = decode_page(&v)?.into_iter().find(|r| r.id == id) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Every record, oldest first (tests and exports).
    pub fn scan_all(&self) -> impl Iterator<Item = Result<CallRecord, StoreError>> + '_ {
        self.tree.scan_prefix([PAGE]).flat_map(|item| {
            let page = item
                .map_err(StoreError::from)
                .and_then(|(_, v)| decode_page(&v));
            match page {
                Ok(records) => records.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
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
        if let Ok(p) = self.pending.lock() {
            for (k, t) in &p.deltas {
                let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                    continue;
                };
                let mut parts = rest.splitn(2, |b| *b == 0);
                let dim = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let value = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                out.entry(dim)
                    .or_default()
                    .entry(value)
                    .or_default()
                    .merge(t);
            }
        }
        Ok(out)
    }

    /// Append an event (JSON) and keep at most `keep` of them.
    pub fn push_event(&self, event: &serde_json::Value, keep: usize) -> Result<(), StoreError> {
        let key = time_key(b'e', super::now_us());
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

/// Add a batch's records to per-(day, dimension, value) totals. Days are formatted once per
/// distinct day, not per record.
fn add_totals(into: &mut HashMap<Vec<u8>, Totals>, batch: &[CallRecord]) {
    let mut days: Vec<(u64, String)> = Vec::new();
    let mut sums: HashMap<(usize, &'static str, &str), Totals> = HashMap::new();
    for r in batch {
        let d = r.ts_us / 86_400_000_000;
        let day = match days.iter().position(|(n, _)| *n == d) {
            Some(p) => p,
            None => {
                days.push((d, r.day()));
                days.len() - 1
            }
        };
        for (dim, value) in dimension_values(r) {
            sums.entry((day, dim, value)).or_default().add(r);
        }
    }
    for ((day, dim, value), t) in sums {
        into.entry(daily_key(&days[day].1, dim, value))
            .or_default()
            .merge(&t);
    }
}
