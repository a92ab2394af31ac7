//! Async jobs: long work (chat, embeddings over many inputs, long-document summaries,
//! classification of many texts, lists of requests, OpenAI batches) queued in sled, run by the
//! [`actor::JobsActor`] with leases, retries and per-tier concurrency, with progress, results
//! kept for a while, and signed webhooks (Standard Webhooks) delivered at least once.
//!
//! Every unit of a job is sent through the daemon's own HTTP API on loopback, on behalf of the
//! job's owner, so it is routed, cached, budgeted and recorded exactly like an interactive
//! request. Each unit's result is stored as it completes: after a crash a job resumes from its
//! unfinished units, and its result is assembled once.

pub mod actor;
pub mod batch;
pub mod webhook;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `[jobs]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobs {
    /// Whether the jobs API runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Units running at once against cloud upstreams.
    #[serde(default = "eight")]
    pub concurrency: usize,
    /// Units running at once on the local models (kept low so interactive local requests are
    /// not starved).
    #[serde(default = "one")]
    pub local_concurrency: usize,
    /// Attempts per unit before it counts as failed (retryable failures only).
    #[serde(default = "three")]
    pub max_attempts: u32,
    /// How long finished jobs (and batch files) are kept, in seconds.
    #[serde(default = "week")]
    pub retention_s: u64,
    /// A running job's lease: another worker takes it over when it is not renewed in time.
    #[serde(default = "minute")]
    pub lease_s: u64,
    /// Largest uploaded file (`POST /v1/files`).
    #[serde(default = "hundred_mib")]
    pub max_file_bytes: usize,
    /// Most units in one job (requests in a list, batch lines, inputs / 64).
    #[serde(default = "max_units")]
    pub max_units: usize,
}

fn yes() -> bool {
    true
}
fn eight() -> usize {
    8
}
fn one() -> usize {
    1
}
fn three() -> u32 {
    3
}
fn week() -> u64 {
    7 * 86_400
}
fn minute() -> u64 {
    60
}
fn hundred_mib() -> usize {
    100 << 20
}
fn max_units() -> usize {
    50_000
}

impl Default for RawJobs {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: eight(),
            local_concurrency: one(),
            max_attempts: three(),
            retention_s: week(),
            lease_s: minute(),
            max_file_bytes: hundred_mib(),
            max_units: max_units(),
        }
    }
}

impl RawJobs {
    /// Check ranges; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.local_concurrency == 0 {
            return Err(
                "jobs.concurrency and jobs.local_concurrency must be at least 1".to_owned(),
            );
        }
        if !(1..=20).contains(&self.max_attempts) {
            return Err("jobs.max_attempts must be between 1 and 20".to_owned());
        }
        if self.lease_s < 5 {
            return Err("jobs.lease_s must be at least 5".to_owned());
        }
        Ok(())
    }
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// One chat completion (`request` is its body).
    Chat {
        /// The `/v1/chat/completions` body.
        request: Value,
    },
    /// Embeddings of many inputs.
    Embeddings {
        /// Embedding model (default: the local one).
        #[serde(default)]
        model: Option<String>,
        /// The texts.
        input: Vec<String>,
    },
    /// A summary of a long document with the local model (map-reduce over chunks).
    Summarize {
        /// The document.
        input: String,
        /// Summary length.
        #[serde(default)]
        max_tokens: Option<u32>,
    },
    /// Classification of many texts.
    Classify {
        /// The texts.
        input: Vec<String>,
        /// Candidate labels (zero-shot), if the classifier needs them.
        #[serde(default)]
        labels: Option<Value>,
    },
    /// A list of API requests, each answered on its own (a batch).
    Requests {
        /// The requests.
        requests: Vec<RequestLine>,
    },
}

/// One request of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLine {
    /// The caller's id for it.
    #[serde(default)]
    pub custom_id: Option<String>,
    /// HTTP method (only POST).
    #[serde(default = "post")]
    pub method: String,
    /// `/v1/chat/completions` or `/v1/embeddings`.
    pub url: String,
    /// The body.
    pub body: Value,
}

fn post() -> String {
    "POST".to_owned()
}

/// Inputs per embeddings or classification unit.
pub const INPUTS_PER_UNIT: usize = 64;

impl Operation {
    /// How many units the job has.
    pub fn units(&self) -> usize {
        match self {
            Self::Chat { .. } | Self::Summarize { .. } => 1,
            Self::Embeddings { input, .. } | Self::Classify { input, .. } => {
                input.len().div_ceil(INPUTS_PER_UNIT).max(1)
            }
            Self::Requests { requests } => requests.len(),
        }
    }

    /// Whether it runs on the local models.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Summarize { .. } | Self::Classify { .. } => true,
            Self::Embeddings { model, .. } => model
                .as_deref()
                .is_none_or(|m| m.starts_with("local") || m == crate::local::EMBED_MODEL),
            Self::Chat { request } => request["model"]
                .as_str()
                .is_some_and(crate::api::chat::is_local_chat),
            Self::Requests { .. } => false,
        }
    }

    /// The name, for lists and events.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Chat { .. } => "chat",
            Self::Embeddings { .. } => "embeddings",
            Self::Summarize { .. } => "summarize",
            Self::Classify { .. } => "classify",
            Self::Requests { .. } => "requests",
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for a worker.
    Queued,
    /// A worker holds its lease.
    Running,
    /// Done; `result` holds the answer.
    Succeeded,
    /// Done with an error.
    Failed,
    /// Cancelled by its owner.
    Cancelled,
    /// Its deadline passed before it finished.
    Expired,
}

impl State {
    /// Whether it will not change any more.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// A webhook as configured on a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    /// `whsec_…` signing secret (never shown).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub secret: String,
    /// Delivery attempts so far.
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
    /// Delivered (a 2xx answer).
    #[serde(default)]
    pub delivered: bool,
    /// Gave up after the last attempt.
    #[serde(default)]
    pub gave_up: bool,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Unix seconds.
    pub at: u64,
    /// HTTP status, if one came back.
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One unit's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    /// Finished (successfully or not); never run again.
    pub done: bool,
    /// HTTP status of its answer.
    pub status: Option<u16>,
    /// The answer's body (or error body).
    pub body: Option<Value>,
    /// Attempts made.
    pub attempts: u32,
}

/// OpenAI Batch API view of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchInfo {
    /// Input file.
    pub input_file_id: String,
    /// `/v1/chat/completions` or `/v1/embeddings`.
    pub endpoint: String,
    /// As given (e.g. `24h`).
    pub completion_window: String,
    /// Caller's metadata.
    pub metadata: Option<Value>,
    /// Output file, once done.
    pub output_file_id: Option<String>,
    /// Error file (lines that failed), once done.
    pub error_file_id: Option<String>,
    /// Input lines that could not be parsed: (line number, message).
    pub invalid_lines: Vec<(usize, String)>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `job_…`.
    pub id: String,
    /// Owner's tenant.
    pub tenant: String,
    /// Owner's key id.
    pub key_id: Option<String>,
    /// The work.
    pub operation: Operation,
    /// Where it is.
    pub state: State,
    /// 0 (lowest) to 9 (highest); default 5.
    pub priority: u8,
    /// Unix seconds after which it expires unfinished.
    pub deadline: Option<u64>,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// When a worker first started it.
    pub started_at: Option<u64>,
    /// When it finished.
    pub finished_at: Option<u64>,
    /// Times a worker took it (more than one after a crash or a lost lease).
    pub runs: u32,
    /// A running job's lease end (unix seconds).
    pub lease_until: Option<u64>,
    /// Per-unit outcomes.
    pub units: Vec<Unit>,
    /// Sub-progress inside a single unit (summaries: chunks done, total).
    pub inner: Option<(u64, u64)>,
    /// The assembled result.
    pub result: Option<Value>,
    /// The error, when it failed.
    pub error: Option<Value>,
    /// Webhook, if any.
    pub webhook: Option<Webhook>,
    /// Batch API view, for batches.
    pub batch: Option<BatchInfo>,
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Job {
    /// Units done and total (sub-progress for single-unit summaries).
    pub fn progress(&self) -> (u64, u64) {
        // A summary counts its chunks (and the final assembly) as it goes.
        if let (1, Some((d, t))) = (self.units.len(), self.inner) {
            return if self.units[0].done {
                (t + 1, t + 1)
            } else {
                (d, t + 1)
            };
        }
        let done = self.units.iter().filter(|u| u.done).count() as u64;
        (done, self.units.len() as u64)
    }

    /// Seconds left at the pace so far.
    pub fn eta_s(&self) -> Option<f64> {
        let (done, total) = self.progress();
        let started = self.started_at?;
        if self.state.is_final() || done == 0 {
            return None;
        }
        let elapsed = now_s().saturating_sub(started).max(1) as f64;
        Some(elapsed / done as f64 * (total - done) as f64)
    }

    /// The API view: no secret, progress and ETA added, results only when asked.
    pub fn view(&self, with_result: bool) -> Value {
        let (done, total) = self.progress();
        let failed_units = self
            .units
            .iter()
            .filter(|u| u.done && u.status.is_none_or(|s| s >= 400))
            .count();
        let mut v = serde_json::json!({
            "id": self.id,
            "object": "job",
            "operation": self.operation.name(),
            "state": self.state,
            "priority": self.priority,
            "deadline": self.deadline,
            "idempotency_key": self.idempotency_key,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "runs": self.runs,
            "progress": {"done": done, "total": total, "failed": failed_units, "eta_s": self.eta_s()},
            "error": self.error,
            "urls": {"self": format!("/v1/jobs/{}", self.id), "events": format!("/v1/jobs/{}/events", self.id)},
        });
        if let Some(w) = &self.webhook {
            v["webhook"] = serde_json::json!({
                "url": w.url, "id": webhook::message_id(&self.id), "delivered": w.delivered,
                "gave_up": w.gave_up, "deliveries": w.deliveries,
            });
        }
        if with_result {
            v["result"] = self.result.clone().unwrap_or(Value::Null);
        }
        v
    }
}

/// Jobs, their queue order and idempotency keys in sled.
#[derive(Clone)]
pub struct JobStore {
    jobs: sled::Tree,
    idem: sled::Tree,
    /// Uploaded files' metadata and bytes.
    pub files: sled::Tree,
    /// File bytes.
    pub file_data: sled::Tree,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
#[error("job storage: {0}")]
pub struct StoreError(pub String);

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self(e.to_string())
    }
}

impl JobStore {
    /// Open the trees.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            jobs: db.open_tree("jobs")?,
            idem: db.open_tree("jobs_idem")?,
            files: db.open_tree("files")?,
            file_data: db.open_tree("file_data")?,
        })
    }

    /// One job.
    pub fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        match self.jobs.get(id)? {
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StoreError(e.to_string())),
            None => Ok(None),
        }
    }

    /// Insert a new job unless its owner already submitted one with the same idempotency key;
    /// returns the job that stands (the new one, or the earlier one).
    pub fn create(&self, job: Job) -> Result<(Job, bool), StoreError> {
        if let Some(k) = &job.idempotency_key {
            let ik = format!("{}\0{k}", job.tenant);
            match self.idem.compare_and_swap(
                ik.as_bytes(),
                None as Option<&[u8]>,
                Some(job.id.as_bytes()),
            )? {
                Ok(()) => {}
                Err(e) => {
                    let earlier = e
                        .current
                        .and_then(|id| self.get(&String::from_utf8_lossy(&id)).ok().flatten());
                    if let Some(j) = earlier {
                        return Ok((j, false));
                    }
                    self.idem.insert(ik.as_bytes(), job.id.as_bytes())?;
                }
            }
        }
        self.put(&job)?;
        self.jobs.flush()?;
        Ok((job, true))
    }

    /// Write a job whole.
    pub fn put(&self, job: &Job) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(job).map_err(|e| StoreError(e.to_string()))?;
        self.jobs.insert(job.id.as_bytes(), bytes)?;
        Ok(())
    }

    /// Change a job atomically; returns the new version (none if it does not exist).
    pub fn update(&self, id: &str, mut f: impl FnMut(&mut Job)) -> Result<Option<Job>, StoreError> {
        let mut out = None;
        self.jobs.fetch_and_update(id.as_bytes(), |old| {
            let mut job: Job = serde_json::from_slice(old?).ok()?;
            f(&mut job);
            let bytes = serde_json::to_vec(&job).ok();
            out = Some(job);
            bytes
        })?;
        Ok(out)
    }

    /// Every job (for start-up and sweeps).
    pub fn all(&self) -> impl Iterator<Item = Job> + '_ {
        self.jobs
            .iter()
            .values()
            .filter_map(|v| v.ok())
            .filter_map(|v| serde_json::from_slice(&v).ok())
    }

    /// A tenant's jobs, newest first, optionally in one state.
    pub fn list(&self, tenant: Option<&str>, state: Option<State>, limit: usize) -> Vec<Job> {
        let mut jobs: Vec<Job> = self
            .all()
            .filter(|j| tenant.is_none_or(|t| t == j.tenant))
            .filter(|j| state.is_none_or(|s| s == j.state))
            .collect();
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        jobs.truncate(limit);
        jobs
    }

    /// Remove a job (retention).
    pub fn remove(&self, job: &Job) -> Result<(), StoreError> {
        self.jobs.remove(job.id.as_bytes())?;
        if let Some(k) = &job.idempotency_key {
            self.idem
                .remove(format!("{}\0{k}", job.tenant).as_bytes())?;
        }
        Ok(())
    }

    /// Make sure everything written is on disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.jobs.flush()?;
        Ok(())
    }
}

/// New job ids: time-ordered.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", crate::ledger::new_id().simple())
}

/// Build a job for a submission (validated elsewhere).
pub fn new_job(
    tenant: &str,
    key_id: Option<&str>,
    operation: Operation,
    priority: u8,
    deadline: Option<u64>,
    idempotency_key: Option<String>,
    webhook: Option<Webhook>,
) -> Job {
    let units = vec![Unit::default(); operation.units()];
    Job {
        id: new_id("job_"),
        tenant: tenant.to_owned(),
        key_id: key_id.map(str::to_owned),
        operation,
        state: State::Queued,
        priority,
        deadline,
        idempotency_key,
        created_at: now_s(),
        started_at: None,
        finished_at: None,
        runs: 0,
        lease_until: None,
        units,
        inner: None,
        result: None,
        error: None,
        webhook,
        batch: None,
    }
}

/// Shared by the API and the actor: a unit's HTTP call.
#[derive(Debug, Clone)]
pub struct UnitCall {
    /// Path on the daemon.
    pub path: String,
    /// JSON body.
    pub body: Value,
}

/// The calls a job's units make.
pub fn unit_call(op: &Operation, i: usize) -> Option<UnitCall> {
    let chunk = |input: &[String]| -> Vec<String> {
        input
            .iter()
            .skip(i * INPUTS_PER_UNIT)
            .take(INPUTS_PER_UNIT)
            .cloned()
            .collect()
    };
    Some(match op {
        Operation::Chat { request } => {
            let mut body = request.clone();
            body["stream"] = Value::Bool(false);
            UnitCall {
                path: "/v1/chat/completions".to_owned(),
                body,
            }
        }
        Operation::Embeddings { model, input } => UnitCall {
            path: "/v1/embeddings".to_owned(),
            body: serde_json::json!({
                "model": model.clone().unwrap_or_else(|| crate::local::EMBED_MODEL.to_owned()),
                "input": chunk(input),
            }),
        },
        Operation::Classify { input, labels } => {
            let mut body = serde_json::json!({"input": chunk(input)});
            if let Some(l) = labels {
                body["labels"] = l.clone();
            }
            UnitCall {
                path: "/v1/classify".to_owned(),
                body,
            }
        }
        Operation::Summarize { input, max_tokens } => UnitCall {
            path: "/v1/summarize".to_owned(),
            body: serde_json::json!({"input": input, "max_tokens": max_tokens, "stream": true}),
        },
        Operation::Requests { requests } => {
            let r = requests.get(i)?;
            let mut body = r.body.clone();
            if r.url == "/v1/chat/completions" {
                body["stream"] = Value::Bool(false);
            }
            UnitCall {
                path: r.url.clone(),
                body,
            }
        }
    })
}

/// The job's result from its units: the answer itself for one-unit jobs, concatenated data for
/// embeddings and classification, one line per request for lists.
pub fn assemble(job: &Job) -> Value {
    let bodies = || {
        job.units
            .iter()
            .map(|u| u.body.clone().unwrap_or(Value::Null))
    };
    match &job.operation {
        Operation::Chat { .. } | Operation::Summarize { .. } => job
            .units
            .first()
            .and_then(|u| u.body.clone())
            .unwrap_or(Value::Null),
        Operation::Embeddings { .. } | Operation::Classify { .. } => {
            let mut data = Vec::new();
            let mut usage = BTreeMap::<String, u64>::new();
            for (i, body) in bodies().enumerate() {
                for mut item in body["data"].as_array().cloned().unwrap_or_default() {
                    if let Some(idx) = item["index"].as_u64() {
                        item["index"] = Value::from(idx + (i * INPUTS_PER_UNIT) as u64);
                    }
                    data.push(item);
                }
                if let Some(u) = body["usage"].as_object() {
                    for (k, v) in u {
                        *usage.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                    }
                }
            }
            serde_json::json!({"object": "list", "data": data, "usage": usage})
        }
        Operation::Requests { requests } => Value::Array(
            requests
                .iter()
                .zip(&job.units)
                .map(|(r, u)| {
                    serde_json::json!({
                        "custom_id": r.custom_id,
                        "status": u.status,
                        "body": u.body,
                    })
                })
                .collect(),
        ),
    }
}
