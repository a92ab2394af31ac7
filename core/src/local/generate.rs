//! The generation service: SmolLM2 in a `SyncArbiter` worker, with an admission bound, serving
//! chat completions (whole or streamed) for `local/smollm2`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::{device_choice, LocalError, ModelState, PANIC_TRIGGER};
use crate::config::LocalConfig;
use crate::error::ApiError;
use crate::providers::chain::{Served, StreamStart};
use crate::providers::ProviderError;
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, Delta, Extra,
    ResponseMessage, Role, Stop, Usage,
};
use switchyard_models::{select_device, Finish, GenOutput, GenParams, Generator, ModelStore};

/// Public name of the local chat model.
pub const CHAT_MODEL: &str = "local/smollm2";
/// Largest `max_tokens` honoured locally.
pub const MAX_LOCAL_TOKENS: u32 = 2048;
/// Completion budget when the request gives none.
pub const DEFAULT_LOCAL_TOKENS: u32 = 256;

struct GenWorker {
    gen: Generator,
    fault_injection: bool,
}

impl Actor for GenWorker {
    type Context = SyncContext<Self>;
}

#[derive(Message)]
#[rtype(result = "Result<GenOutput, LocalError>")]
struct Generate {
    prompt: String,
    params: GenParams,
    sink: Option<mpsc::UnboundedSender<String>>,
}

impl Handler<Generate> for GenWorker {
    type Result = Result<GenOutput, LocalError>;

    fn handle(&mut self, msg: Generate, ctx: &mut Self::Context) -> Self::Result {
        let inject = self.fault_injection && msg.prompt.contains(PANIC_TRIGGER);
        let gen = &mut self.gen;
        let sink = msg.sink;
        let result = catch_unwind(AssertUnwindSafe(|| {
            if inject {
                #[allow(clippy::panic)] // the test-only fault, by design
                {
                    panic!("injected fault in the generation worker");
                }
            }
            // A closed sink means the client went away: stop generating.
            gen.generate(&msg.prompt, &msg.params, |piece| {
                sink.as_ref()
                    .is_none_or(|s| s.send(piece.to_owned()).is_ok())
            })
        }));
        match result {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(switchyard_models::ModelError::Input(m))) => Err(LocalError::Input(m)),
            Ok(Err(e)) => Err(LocalError::Inference(e.to_string())),
            Err(_) => {
                tracing::error!(
                    model = CHAT_MODEL,
                    "generation worker panicked; rebuilding it"
                );
                ctx.stop();
                Err(LocalError::Crashed(CHAT_MODEL.to_owned()))
            }
        }
    }
}

/// What a summary in progress reports.
#[derive(Debug)]
pub enum SummaryEvent {
    /// Chunks done out of planned.
    Progress(switchyard_models::summarize::Progress),
    /// The finished summary.
    Done(switchyard_models::summarize::Summary),
    /// It failed.
    Failed(LocalError),
}

#[derive(Message)]
#[rtype(result = "()")]
struct Summarize {
    text: String,
    max_tokens: usize,
    events: mpsc::UnboundedSender<SummaryEvent>,
    permit: OwnedSemaphorePermit,
}

/// The next chunk of a summary in progress. Each chunk is its own message at the back of the
/// worker's queue, so requests that arrived meanwhile run between chunks: a long document
/// shares the model instead of holding it for minutes.
#[derive(Message)]
#[rtype(result = "()")]
struct SummarizeStep {
    run: Box<switchyard_models::summarize::Summarizing>,
    events: mpsc::UnboundedSender<SummaryEvent>,
    /// The admission permit, held until the summary ends.
    _permit: OwnedSemaphorePermit,
}

fn summary_failure(e: switchyard_models::ModelError) -> SummaryEvent {
    match e {
        switchyard_models::ModelError::Input(m) => SummaryEvent::Failed(LocalError::Input(m)),
        e => SummaryEvent::Failed(LocalError::Inference(e.to_string())),
    }
}

impl GenWorker {
    /// Run one chunk; queue the next, or report the end. A panic rebuilds the worker.
    fn summary_step(&mut self, mut step: SummarizeStep, ctx: &mut SyncContext<Self>) {
        let gen = &mut self.gen;
        let result = catch_unwind(AssertUnwindSafe(|| step.run.step(gen)));
        match result {
            Ok(Ok(Some(summary))) => {
                let _ = step
                    .events
                    .send(SummaryEvent::Progress(step.run.progress()));
                let _ = step.events.send(SummaryEvent::Done(summary));
            }
            Ok(Ok(None)) => {
                // Nobody listening any more (client gone, job cancelled): stop here.
                if step
                    .events
                    .send(SummaryEvent::Progress(step.run.progress()))
                    .is_ok()
                {
                    ctx.address().do_send(step);
                }
            }
            Ok(Err(e)) => {
                let _ = step.events.send(summary_failure(e));
            }
            Err(_) => {
                tracing::error!(
                    model = CHAT_MODEL,
                    "summariser panicked; rebuilding the worker"
                );
                ctx.stop();
                let _ = step.events.send(SummaryEvent::Failed(LocalError::Crashed(
                    CHAT_MODEL.to_owned(),
                )));
            }
        }
    }
}

impl Handler<Summarize> for GenWorker {
    type Result = ();

    fn handle(&mut self, msg: Summarize, ctx: &mut Self::Context) {
        let inject = self.fault_injection && msg.text.contains(PANIC_TRIGGER);
        let gen = &self.gen;
        let started = catch_unwind(AssertUnwindSafe(|| {
            if inject {
                #[allow(clippy::panic)] // the test-only fault, by design
                {
                    panic!("injected fault in the summariser");
                }
            }
            switchyard_models::summarize::Summarizing::start(gen, &msg.text, msg.max_tokens)
        }));
        match started {
            Ok(Ok(run)) => self.summary_step(
                SummarizeStep {
                    run: Box::new(run),
                    events: msg.events,
                    _permit: msg.permit,
                },
                ctx,
            ),
            Ok(Err(e)) => {
                let _ = msg.events.send(summary_failure(e));
            }
            Err(_) => {
                tracing::error!(
                    model = CHAT_MODEL,
                    "summariser panicked; rebuilding the worker"
                );
                ctx.stop();
                let _ = msg.events.send(SummaryEvent::Failed(LocalError::Crashed(
                    CHAT_MODEL.to_owned(),
                )));
            }
        }
    }
}

impl Handler<SummarizeStep> for GenWorker {
    type Result = ();

    fn handle(&mut self, msg: SummarizeStep, ctx: &mut Self::Context) {
        self.summary_step(msg, ctx);
    }
}

/// The local chat model as the rest of the runtime sees it.
pub struct GenService {
    worker: OnceLock<Addr<GenWorker>>,
    tokenizer: OnceLock<tokenizers::Tokenizer>,
    permits: Arc<Semaphore>,
    capacity: usize,
    state: ArcSwap<ModelState>,
}

impl GenService {
    /// Load the model in the background and start its worker when warm.
    pub fn start(cfg: &LocalConfig) -> Arc<Self> {
        let svc = Arc::new(Self {
            worker: OnceLock::new(),
            tokenizer: OnceLock::new(),
            permits: Arc::new(Semaphore::new(cfg.queue)),
            capacity: cfg.queue,
            state: ArcSwap::from_pointee(ModelState::Loading),
        });
        let (dir, device, fault_injection, hub, precision) = (
            cfg.models_dir.clone(),
            cfg.device,
            cfg.fault_injection,
            cfg.hub_download,
            cfg.precision,
        );
        let me = Arc::clone(&svc);
        actix_rt::spawn(async move {
            let loaded = tokio::task::spawn_blocking(move || -> Result<Generator, String> {
                let files = ModelStore::new(dir)
                    .with_hub(hub)
                    .resolve("smollm2")
                    .map_err(|e| e.to_string())?;
                let device = select_device(device_choice(device)).map_err(|e| e.to_string())?;
                let mut gen = Generator::load_as(&files, &device, precision.into())
                    .map_err(|e| e.to_string())?;
                let warm = GenParams {
                    max_tokens: 1,
                    ..GenParams::default()
                };
                gen.generate(&Generator::chat_prompt([("user", "hi")]), &warm, |_| true)
                    .map_err(|e| e.to_string())?;
                Ok(gen)
            })
            .await
            .unwrap_or_else(|e| Err(format!("loader thread failed: {e}")));
            match loaded {
                Ok(template) => {
                    let _ = me.tokenizer.set(template.tokenizer().clone());
                    let worker = SyncArbiter::start(1, move || GenWorker {
                        gen: template.clone(),
                        fault_injection,
                    });
                    let _ = me.worker.set(worker);
                    me.state.store(Arc::new(ModelState::Ready));
                    tracing::info!(model = CHAT_MODEL, "local model ready");
                }
                Err(reason) => {
                    tracing::error!(model = CHAT_MODEL, %reason, "local model failed to load");
                    me.state.store(Arc::new(ModelState::Failed(reason)));
                }
            }
        });
        svc
    }

    /// Current lifecycle state.
    pub fn state(&self) -> ModelState {
        ModelState::clone(&self.state.load())
    }

    /// Requests admitted and not finished (queued or running), for the queue-depth gauge.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// The model's tokenizer once loaded, for counting tokens upstreams did not report.
    pub fn tokenizer(&self) -> Option<&tokenizers::Tokenizer> {
        self.tokenizer.get()
    }

    fn admit(&self) -> Result<(OwnedSemaphorePermit, Addr<GenWorker>), LocalError> {
        match self.state() {
            ModelState::Ready => {}
            ModelState::Loading => return Err(LocalError::Loading(CHAT_MODEL.to_owned())),
            ModelState::Failed(reason) => {
                return Err(LocalError::Failed {
                    model: CHAT_MODEL.to_owned(),
                    reason,
                })
            }
        }
        let worker = self
            .worker
            .get()
            .cloned()
            .ok_or_else(|| LocalError::Loading(CHAT_MODEL.to_owned()))?;
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| LocalError::Busy(CHAT_MODEL.to_owned()))?;
        Ok((permit, worker))
    }

    /// Summarise a text; events arrive on the returned channel (progress per chunk, then the
    /// summary or the failure). Dropping the receiver cancels the work.
    pub fn summarize(
        &self,
        text: String,
        max_tokens: usize,
    ) -> Result<mpsc::UnboundedReceiver<SummaryEvent>, LocalError> {
        let (permit, worker) = self.admit()?;
        let (tx, rx) = mpsc::unbounded_channel();
        actix_rt::spawn(async move {
            let failed = tx.clone();
            // The permit travels with the summary's steps and is released when it ends.
            if worker
                .send(Summarize {
                    text,
                    max_tokens,
                    events: tx,
                    permit,
                })
                .await
                .is_err()
            {
                let _ = failed.send(SummaryEvent::Failed(LocalError::Crashed(
                    CHAT_MODEL.to_owned(),
                )));
            }
        });
        Ok(rx)
    }

    /// A whole answer.
    pub async fn complete(&self, req: &ChatRequest) -> Result<(ChatResponse, f32), ApiError> {
        let (prompt, params) = to_prompt(req)?;
        let (permit, worker) = self.admit()?;
        let out = send(&worker, prompt, params, None).await?;
        drop(permit);
        let id = completion_id();
        let usage = usage(&out);
        let confidence = out.mean_logprob;
        let response = ChatResponse {
            id,
            object: "chat.completion".to_owned(),
            created: now(),
            model: CHAT_MODEL.to_owned(),
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: Role::Assistant,
                    content: Some(out.text),
                    tool_calls: None,
                    extra: Extra::new(),
                },
                finish_reason: Some(finish_reason(&out.finish).to_owned()),
                extra: Extra::new(),
                stop_sequence: stop_sequence(&out.finish),
            }],
            usage: Some(usage),
            extra: Extra::new(),
        };
        Ok((response, confidence))
    }

    /// A streamed answer: returns once the first text exists (or with the error, as a proper
    /// status, if generation fails before that).
    pub async fn stream(&self, req: &ChatRequest) -> Result<StreamStart, ApiError> {
        let (prompt, params) = to_prompt(req)?;
        let (permit, worker) = self.admit()?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (done_tx, mut done_rx) = oneshot::channel();
        actix_rt::spawn(async move {
            let r = send(&worker, prompt, params, Some(tx)).await;
            drop(permit);
            let _ = done_tx.send(r);
        });
        let id = completion_id();
        let created = now();
        let chunk = move |delta: Delta, finish: Option<String>, usage: Option<Usage>| ChatChunk {
            id: id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created,
            model: CHAT_MODEL.to_owned(),
            choices: if usage.is_some() {
                Vec::new()
            } else {
                vec![ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: finish,
                    extra: Extra::new(),
                    stop_sequence: None,
                }]
            },
            usage,
            extra: Extra::new(),
        };
        // Wait for the first piece of text, or an early end (error or empty answer).
        let first_piece = tokio::select! {
            piece = rx.recv() => piece,
            done = &mut done_rx => match done {
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(_)) | Err(_) => rx.recv().await,
            },
        };
        let first = chunk(
            Delta {
                role: Some(Role::Assistant),
                content: Some(first_piece.unwrap_or_default()),
                ..Delta::default()
            },
            None,
            None,
        );
        let pieces =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|p| (p, rx)) },
            );
        let text_chunks = {
            let chunk = chunk.clone();
            pieces.map(move |p| {
                Ok(chunk(
                    Delta {
                        content: Some(p),
                        ..Delta::default()
                    },
                    None,
                    None,
                ))
            })
        };
        let tail = futures_util::stream::once(async move {
            match done_rx.await {
                Ok(Ok(out)) => {
                    let finish = chunk(
                        Delta::default(),
                        Some(finish_reason(&out.finish).to_owned()),
                        None,
                    );
                    let usage = chunk(Delta::default(), None, Some(usage(&out)));
                    vec![Ok(finish), Ok(usage)]
                }
                Ok(Err(e)) => vec![Err(ProviderError::Stream {
                    provider: "local".to_owned(),
                    message: e.to_string(),
                })],
                Err(_) => vec![Err(ProviderError::Stream {
                    provider: "local".to_owned(),
                    message: "the local worker stopped".to_owned(),
                })],
            }
        })
        .flat_map(futures_util::stream::iter);
        Ok(StreamStart {
            first,
            rest: text_chunks.chain(tail).boxed(),
            served: served(),
        })
    }
}

/// Who served a local answer.
pub fn served() -> Served {
    Served {
        provider: "local".to_owned(),
        model: CHAT_MODEL.to_owned(),
        attempts: 1,
        upstream: std::time::Duration::ZERO,
        waited: std::time::Duration::ZERO,
    }
}

async fn send(
    worker: &Addr<GenWorker>,
    prompt: String,
    params: GenParams,
    sink: Option<mpsc::UnboundedSender<String>>,
) -> Result<GenOutput, LocalError> {
    match worker
        .send(Generate {
            prompt,
            params,
            sink,
        })
        .await
    {
        Ok(r) => r,
        Err(_) => Err(LocalError::Crashed(CHAT_MODEL.to_owned())),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn completion_id() -> String {
    format!("chatcmpl-local-{}", uuid::Uuid::new_v4().simple())
}

fn usage(out: &GenOutput) -> Usage {
    Usage::from_parts(out.prompt_tokens as u64, out.completion_tokens as u64, 0, 0)
}

fn finish_reason(f: &Finish) -> &'static str {
    match f {
        Finish::Length => "length",
        Finish::Stop | Finish::StopSequence(_) | Finish::Cancelled => "stop",
    }
}

fn stop_sequence(f: &Finish) -> Option<String> {
    match f {
        Finish::StopSequence(s) => Some(s.clone()),
        _ => None,
    }
}

/// The ChatML prompt and decoding settings for a request; what the local model cannot do is a
/// 400 naming the parameter.
fn to_prompt(req: &ChatRequest) -> Result<(String, GenParams), ApiError> {
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::param(
            "tools",
            format!("`{CHAT_MODEL}` does not support tools."),
        ));
    }
    if req.n.is_some_and(|n| n > 1) {
        return Err(ApiError::param(
            "n",
            format!("`{CHAT_MODEL}` returns one choice."),
        ));
    }
    let mut turns: Vec<(&str, String)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool | Role::Function => {
                return Err(ApiError::param(
                    format!("messages[{i}].role"),
                    format!("`{CHAT_MODEL}` does not support tool messages."),
                ))
            }
        };
        if let Some(Content::Parts(parts)) = &m.content {
            if parts.iter().any(|p| p.kind != "text") {
                return Err(ApiError::param(
                    format!("messages[{i}].content"),
                    format!("`{CHAT_MODEL}` takes text only."),
                ));
            }
        }
        turns.push((
            role,
            m.content.as_ref().map(Content::text).unwrap_or_default(),
        ));
    }
    let prompt = Generator::chat_prompt(turns.iter().map(|(r, t)| (*r, t.as_str())));
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(DEFAULT_LOCAL_TOKENS)
        .min(MAX_LOCAL_TOKENS) as usize;
    let stop = match &req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    let params = GenParams {
        max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed.map_or_else(rand::random, |s| s as u64),
        stop,
    };
    Ok((prompt, params))
}
