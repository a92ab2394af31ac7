//! The jobs actor: owns the queue (priority, then age), starts jobs while their tier has
//! capacity, takes back jobs whose lease ran out (a dead worker) and every job left running by a
//! crash, expires deadlines, sweeps old jobs, and resumes webhook deliveries after a restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use futures_util::StreamExt;
use serde_json::Value;

use super::{assemble, now_s, unit_call, webhook, Job, JobStore, RawJobs, State, Unit};

/// Header with which the daemon's own job workers call its API on an owner's behalf.
pub const ON_BEHALF_TENANT: &str = "x-switchyard-on-behalf-tenant";
/// The owner's key id, for the same calls.
pub const ON_BEHALF_KEY: &str = "x-switchyard-on-behalf-key";

/// What the HTTP handlers hold.
pub struct Jobs {
    /// Settings.
    pub config: RawJobs,
    /// The store.
    pub store: JobStore,
    addr: OnceLock<Addr<JobsActor>>,
    arbiter: std::sync::Mutex<Option<Arbiter>>,
}

impl Drop for Jobs {
    fn drop(&mut self) {
        if let Some(a) = self.arbiter.lock().ok().and_then(|mut a| a.take()) {
            a.stop();
        }
    }
}

impl Jobs {
    /// Open the store (the actor starts once the server knows its address).
    pub fn open(config: RawJobs, db: &sled::Db) -> Result<Self, super::StoreError> {
        config.validate().map_err(super::StoreError)?;
        Ok(Self {
            config,
            store: JobStore::open(db)?,
            addr: OnceLock::new(),
            arbiter: std::sync::Mutex::new(None),
        })
    }

    /// Start the actor on its own thread; `base` is the daemon's own URL, `token` the internal
    /// credential its workers present.
    pub fn start(&self, base: String, token: String) {
        if !self.config.enabled {
            return;
        }
        let arbiter = Arbiter::new();
        let actor = JobsActor {
            store: self.store.clone(),
            cfg: self.config.clone(),
            base,
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(3600))
                .build()
                .unwrap_or_default(),
            queue: BTreeSet::new(),
            local_of: HashMap::new(),
            running: HashMap::new(),
        };
        let addr = JobsActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        let _ = self.addr.set(addr);
        if let Ok(mut a) = self.arbiter.lock() {
            *a = Some(arbiter);
        }
    }

    /// Tell the actor a job was queued.
    pub fn enqueue(&self, id: &str) {
        if let Some(a) = self.addr.get() {
            a.do_send(Enqueue(id.to_owned()));
        }
    }
}

type QueueKey = (std::cmp::Reverse<u8>, u64, String);

/// See the module docs.
pub struct JobsActor {
    store: JobStore,
    cfg: RawJobs,
    base: String,
    token: String,
    client: reqwest::Client,
    queue: BTreeSet<QueueKey>,
    /// Queued or running jobs: whether they run locally, and their deadline.
    local_of: HashMap<String, (bool, Option<u64>)>,
    running: HashMap<String, bool>,
}

impl Actor for JobsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let mut resumed = 0;
        for job in self.store.all().collect::<Vec<_>>() {
            match job.state {
                // Whoever ran it died with the previous process: take it back.
                State::Running | State::Queued => {
                    if job.state == State::Running {
                        resumed += 1;
                        let _ = self.store.update(&job.id, |j| {
                            j.state = State::Queued;
                            j.lease_until = None;
                        });
                    }
                    self.push(&job);
                }
                _ => {
                    if job
                        .webhook
                        .as_ref()
                        .is_some_and(|w| !w.delivered && !w.gave_up)
                    {
                        self.deliver(ctx, job.id.clone());
                    }
                }
            }
        }
        tracing::info!(queued = self.queue.len(), resumed, "jobs actor started");
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.tick(ctx));
        self.pump(ctx);
    }
}

impl JobsActor {
    fn push(&mut self, job: &Job) {
        self.local_of
            .insert(job.id.clone(), (job.operation.is_local(), job.deadline));
        self.queue.insert((
            std::cmp::Reverse(job.priority),
            job.created_at,
            job.id.clone(),
        ));
    }

    fn busy(&self, local: bool) -> usize {
        self.running.values().filter(|l| **l == local).count()
    }

    /// Start queued jobs, highest priority first, while their tier has room.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let keys: Vec<QueueKey> = self.queue.iter().cloned().collect();
        for key in keys {
            let id = key.2.clone();
            let local = self.local_of.get(&id).is_some_and(|l| l.0);
            let cap = if local {
                self.cfg.local_concurrency
            } else {
                self.cfg.concurrency
            };
            if self.busy(local) >= cap {
                continue;
            }
            self.queue.remove(&key);
            self.running.insert(id.clone(), local);
            let run = Runner {
                store: self.store.clone(),
                cfg: self.cfg.clone(),
                base: self.base.clone(),
                token: self.token.clone(),
                client: self.client.clone(),
            };
            let fut = async move {
                run.run(&id).await;
                id
            }
            .into_actor(self)
            .map(|id, act, ctx| {
                act.running.remove(&id);
                act.local_of.remove(&id);
                if let Ok(Some(job)) = act.store.get(&id) {
                    if job.state == State::Queued {
                        // Lost its lease to nobody (e.g. a transient store error): again.
                        act.push(&job);
                    } else if job
                        .webhook
                        .as_ref()
                        .is_some_and(|w| !w.delivered && !w.gave_up)
                    {
                        act.deliver(ctx, id);
                    }
                }
                act.pump(ctx);
            });
            ctx.spawn(fut);
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = now_s();
        // Queued jobs past their deadline expire without running.
        let expired: Vec<QueueKey> = self
            .queue
            .iter()
            .filter(|k| {
                self.local_of
                    .get(&k.2)
                    .and_then(|l| l.1)
                    .is_some_and(|d| d <= now)
            })
            .cloned()
            .collect();
        for k in expired {
            self.queue.remove(&k);
            self.local_of.remove(&k.2);
            let _ = self.store.update(&k.2, |j| {
                if j.state == State::Queued {
                    j.state = State::Expired;
                    j.finished_at = Some(now);
                    j.error = Some(serde_json::json!({"code": "deadline_exceeded",
                        "message": "The job's deadline passed before it could start."}));
                }
            });
            self.deliver(ctx, k.2);
        }
        // Running jobs whose lease ran out and that no worker of ours holds: take them back.
        if now % 10 == 0 {
            for job in self.store.all().collect::<Vec<_>>() {
                let lost = job.state == State::Running
                    && job.lease_until.is_some_and(|l| l < now)
                    && !self.running.contains_key(&job.id);
                if lost {
                    let _ = self.store.update(&job.id, |j| {
                        j.state = State::Queued;
                        j.lease_until = None;
                    });
                    self.push(&job);
                }
                let old = job.state.is_final()
                    && job
                        .finished_at
                        .is_some_and(|f| f + self.cfg.retention_s < now);
                if old {
                    let _ = self.store.remove(&job);
                }
            }
        }
        self.pump(ctx);
    }

    /// Deliver a finished job's webhook, retrying with backoff; attempts are kept in the job.
    fn deliver(&mut self, ctx: &mut Context<Self>, id: String) {
        let (store, client) = (self.store.clone(), self.client.clone());
        ctx.spawn(
            async move {
                deliver(&store, &client, &id).await;
            }
            .into_actor(self),
        );
    }
}

/// Attempts before a webhook is given up.
const WEBHOOK_ATTEMPTS: usize = 10;

async fn deliver(store: &JobStore, client: &reqwest::Client, id: &str) {
    let Ok(Some(job)) = store.get(id) else {
        return;
    };
    let Some(hook) = job.webhook.clone() else {
        return;
    };
    if hook.delivered || hook.gave_up {
        return;
    }
    let Ok(key) = webhook::key_of(&hook.secret) else {
        return;
    };
    let msg_id = webhook::message_id(id);
    let kind = match job.state {
        State::Succeeded => "job.succeeded",
        State::Failed => "job.failed",
        State::Cancelled => "job.cancelled",
        State::Expired => "job.expired",
        State::Queued | State::Running => return,
    };
    let mut attempt = hook.deliveries.len();
    while attempt < WEBHOOK_ATTEMPTS {
        if attempt > 0 {
            let backoff = Duration::from_secs((1u64 << attempt.min(8)).min(300));
            actix_rt::time::sleep(backoff).await;
        }
        attempt += 1;
        let ts = now_s();
        let body = serde_json::to_vec(&serde_json::json!({
            "type": kind,
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "data": job.view(true),
        }))
        .unwrap_or_default();
        let sent = client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                webhook::signature(&key, &msg_id, ts, &body),
            )
            .timeout(Duration::from_secs(15))
            .body(body)
            .send()
            .await;
        let (status, error) = match &sent {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let _ = store.update(id, |j| {
            if let Some(w) = &mut j.webhook {
                w.deliveries.push(super::Delivery {
                    at: ts,
                    status,
                    error: error.clone(),
                });
                w.delivered = ok;
                w.gave_up = !ok && w.deliveries.len() >= WEBHOOK_ATTEMPTS;
            }
        });
        let _ = store.flush();
        if ok {
            return;
        }
        tracing::debug!(job = id, ?status, error = ?error, "webhook delivery failed; will retry");
    }
}

/// Queue a job.
#[derive(Message)]
#[rtype(result = "()")]
struct Enqueue(String);

impl Handler<Enqueue> for JobsActor {
    type Result = ();

    fn handle(&mut self, m: Enqueue, ctx: &mut Self::Context) {
        if let Ok(Some(job)) = self.store.get(&m.0) {
            if job.state == State::Queued && !self.running.contains_key(&job.id) {
                self.push(&job);
                self.pump(ctx);
            }
        }
    }
}

/// Runs one job's units.
struct Runner {
    store: JobStore,
    cfg: RawJobs,
    base: String,
    token: String,
    client: reqwest::Client,
}

/// Unit calls of one job in flight at once (cloud work; local work runs one at a time).
const UNITS_IN_FLIGHT: usize = 4;

impl Runner {
    async fn run(&self, id: &str) {
        let now = now_s();
        let lease = self.cfg.lease_s;
        let taken = self.store.update(id, |j| {
            if j.state == State::Queued {
                j.state = State::Running;
                j.runs += 1;
                j.started_at.get_or_insert(now);
                j.lease_until = Some(now + lease);
            }
        });
        let job = match taken {
            Ok(Some(j)) if j.state == State::Running => j,
            _ => return,
        };
        let pending: Vec<usize> = (0..job.units.len())
            .filter(|&i| !job.units[i].done)
            .collect();
        let in_flight = if job.operation.is_local() {
            1
        } else {
            UNITS_IN_FLIGHT
        };
        let op = Arc::new(job.operation.clone());
        let (tenant, key_id, deadline) = (job.tenant.as_str(), job.key_id.as_deref(), job.deadline);
        let stopped = futures_util::stream::iter(pending)
            .map(|i| {
                let op = Arc::clone(&op);
                async move { self.unit(id, tenant, key_id, &op, i, deadline).await }
            })
            .buffer_unordered(in_flight)
            .any(|keep_going| futures_util::future::ready(!keep_going))
            .await;
        if stopped {
            return;
        }
        let finished = now_s();
        let done = self.store.update(id, |j| {
            if j.state != State::Running {
                return;
            }
            let result = assemble(j);
            let single_failed = matches!(
                j.operation,
                super::Operation::Chat { .. } | super::Operation::Summarize { .. }
            ) && j
                .units
                .first()
                .is_some_and(|u| u.status.is_none_or(|s| s >= 400));
            if single_failed {
                j.state = State::Failed;
                j.error = j.units.first().and_then(|u| u.body.clone());
            } else {
                j.state = State::Succeeded;
                j.result = Some(result);
            }
            j.finished_at = Some(finished);
            j.lease_until = None;
        });
        if let Ok(Some(job)) = done {
            if job.batch.is_some() && job.state == State::Succeeded {
                if let Err(e) = super::batch::write_outputs(&self.store, &job) {
                    tracing::warn!(job = id, error = %e, "writing the batch output failed");
                }
            }
        }
        let _ = self.store.flush();
    }

    /// Run unit `i`; false when the job must stop (cancelled, expired, gone).
    async fn unit(
        &self,
        id: &str,
        tenant: &str,
        key_id: Option<&str>,
        op: &super::Operation,
        i: usize,
        deadline: Option<u64>,
    ) -> bool {
        let now = now_s();
        let lease = self.cfg.lease_s;
        // Renew the lease, and stop if the job was cancelled or has expired.
        let live = self.store.update(id, |j| {
            if j.state != State::Running {
                return;
            }
            if deadline.is_some_and(|d| d <= now) {
                j.state = State::Expired;
                j.finished_at = Some(now);
                j.error = Some(serde_json::json!({"code": "deadline_exceeded",
                    "message": "The job's deadline passed before it finished."}));
                return;
            }
            j.lease_until = Some(now + lease);
        });
        if !matches!(live, Ok(Some(ref j)) if j.state == State::Running) {
            return false;
        }
        let Some(call) = unit_call(op, i) else {
            return true;
        };
        let mut attempts = 0u32;
        let (status, body) = loop {
            attempts += 1;
            let (status, body, retry_after) = self.send(id, tenant, key_id, &call).await;
            let retryable = status.is_none_or(|s| s == 429 || s >= 500);
            if !retryable || attempts >= self.cfg.max_attempts {
                break (status, body);
            }
            let backoff = retry_after
                .unwrap_or_else(|| Duration::from_millis(500 * (1 << attempts.min(6))))
                .min(Duration::from_secs(60));
            actix_rt::time::sleep(backoff).await;
        };
        let _ = self.store.update(id, |j| {
            if let Some(u) = j.units.get_mut(i) {
                *u = Unit {
                    done: true,
                    status,
                    body: Some(body.clone()),
                    attempts,
                };
            }
        });
        true
    }

    /// One HTTP call on the owner's behalf: status (none when no answer came), body, and the
    /// upstream's Retry-After.
    async fn send(
        &self,
        id: &str,
        tenant: &str,
        key_id: Option<&str>,
        call: &super::UnitCall,
    ) -> (Option<u16>, Value, Option<Duration>) {
        let mut rb = self
            .client
            .post(format!("{}{}", self.base, call.path))
            .bearer_auth(&self.token)
            .header(ON_BEHALF_TENANT, tenant)
            .header(crate::api::call::TAG_HEADER, id)
            .json(&call.body);
        if let Some(k) = key_id {
            rb = rb.header(ON_BEHALF_KEY, k);
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                return (
                    None,
                    serde_json::json!({"error": {"message": format!("the call did not complete: {e}"), "type": "job_error"}}),
                    None,
                )
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !sse {
            let body = resp.json::<Value>().await.unwrap_or(Value::Null);
            return (Some(status), body, retry_after);
        }
        // Summaries stream progress per chunk; the last event is the summary (or an error).
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        let mut last: (Option<u16>, Value) = (None, Value::Null);
        while let Some(Ok(bytes)) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let name = event
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("message")
                    .to_owned();
                let data: Value = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .and_then(|d| serde_json::from_str(d).ok())
                    .unwrap_or(Value::Null);
                match name.as_str() {
                    "progress" => {
                        let (d, t) = (data["done"].as_u64(), data["total"].as_u64());
                        if let (Some(d), Some(t)) = (d, t) {
                            let _ = self.store.update(id, |j| j.inner = Some((d, t)));
                        }
                    }
                    "summary" => last = (Some(status), data),
                    "error" => last = (Some(500), data),
                    _ => {}
                }
            }
        }
        (last.0, last.1, None)
    }
}
