//! OpenAI Batch API on top of jobs: uploaded JSONL files, batches as `requests` jobs, and the
//! output and error files written when a batch finishes.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{now_s, Job, JobStore, RequestLine, State, StoreError};

/// Endpoints a batch line may call.
pub const ENDPOINTS: &[&str] = &["/v1/chat/completions", "/v1/responses", "/v1/embeddings"];

/// An uploaded file's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// `file-…`.
    pub id: String,
    /// Owner's tenant.
    pub tenant: String,
    /// Size.
    pub bytes: usize,
    /// Unix seconds.
    pub created_at: u64,
    /// As uploaded.
    pub filename: String,
    /// `batch`, `batch_output`, …
    pub purpose: String,
}

impl FileMeta {
    /// The OpenAI file object.
    pub fn view(&self) -> Value {
        json!({
            "id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
            "filename": self.filename, "purpose": self.purpose, "status": "processed",
        })
    }
}

/// Store a file.
pub fn put_file(
    store: &JobStore,
    tenant: &str,
    filename: &str,
    purpose: &str,
    data: &[u8],
) -> Result<FileMeta, StoreError> {
    let meta = FileMeta {
        id: super::new_id("file-"),
        tenant: tenant.to_owned(),
        bytes: data.len(),
        created_at: now_s(),
        filename: filename.to_owned(),
        purpose: purpose.to_owned(),
    };
    store.file_data.insert(meta.id.as_bytes(), data)?;
    let m = serde_json::to_vec(&meta).map_err(|e| StoreError(e.to_string()))?;
    store.files.insert(meta.id.as_bytes(), m)?;
    store.files.flush()?;
    Ok(meta)
}

/// A tenant's file (none for another tenant's).
pub fn get_file(store: &JobStore, tenant: &str, id: &str) -> Result<Option<FileMeta>, StoreError> {
    let Some(b) = store.files.get(id.as_bytes())? else {
        return Ok(None);
    };
    let meta: FileMeta = serde_json::from_slice(&b).map_err(|e| StoreError(e.to_string()))?;
    Ok((meta.tenant == tenant).then_some(meta))
}

/// A file's bytes.
pub fn file_bytes(store: &JobStore, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(store.file_data.get(id.as_bytes())?.map(|v| v.to_vec()))
}

/// One input line as the Batch API writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    custom_id: String,
    method: String,
    url: String,
    body: Value,
}

/// Parse a batch input file: the good lines, and (line number, message) for each bad one (they
/// go to the error file; the batch still runs).
pub fn parse_lines(data: &[u8], endpoint: &str) -> (Vec<RequestLine>, Vec<(usize, String)>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let text = String::from_utf8_lossy(data);
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<InputLine>(line) {
            Err(e) => bad.push((n + 1, format!("line {}: {e}", n + 1))),
            Ok(l) if l.method != "POST" => {
                bad.push((n + 1, format!("line {}: method must be POST", n + 1)))
            }
            Ok(l) if l.url != endpoint => bad.push((
                n + 1,
                format!(
                    "line {}: url {} is not the batch's endpoint {endpoint}",
                    n + 1,
                    l.url
                ),
            )),
            Ok(l) if !l.body.is_object() => {
                bad.push((n + 1, format!("line {}: body must be an object", n + 1)))
            }
            Ok(l) if l.body["stream"] == Value::Bool(true) => {
                bad.push((n + 1, format!("line {}: batch lines cannot stream", n + 1)))
            }
            Ok(l) => good.push(RequestLine {
                custom_id: Some(l.custom_id),
                method: l.method,
                url: l.url,
                body: l.body,
            }),
        }
    }
    (good, bad)
}

/// Write the output file (answered lines) and the error file (failed and invalid lines) of a
/// finished batch, and note them on the job.
pub fn write_outputs(store: &JobStore, job: &Job) -> Result<(), StoreError> {
    let Some(info) = &job.batch else {
        return Ok(());
    };
    if info.output_file_id.is_some() {
        return Ok(());
    }
    let super::Operation::Requests { requests } = &job.operation else {
        return Ok(());
    };
    let (mut out, mut err) = (String::new(), String::new());
    for (i, (r, u)) in requests.iter().zip(&job.units).enumerate() {
        let status = u.status.unwrap_or(0);
        let line = if (200..300).contains(&status) {
            json!({"id": format!("batch_req_{}_{i}", job.id), "custom_id": r.custom_id,
                "response": {"status_code": status, "request_id": format!("{}-{i}", job.id), "body": u.body},
                "error": null})
        } else {
            json!({"id": format!("batch_req_{}_{i}", job.id), "custom_id": r.custom_id,
                "response": u.status.map(|s| json!({"status_code": s, "request_id": format!("{}-{i}", job.id), "body": u.body})),
                "error": {"code": "request_failed", "message": u.body.as_ref().and_then(|b| b["error"]["message"].as_str()).unwrap_or("the request failed")}})
        };
        let target = if (200..300).contains(&status) {
            &mut out
        } else {
            &mut err
        };
        target.push_str(&line.to_string());
        target.push('\n');
    }
    for (n, msg) in &info.invalid_lines {
        let line = json!({"id": format!("batch_req_{}_line{n}", job.id), "custom_id": null,
            "response": null, "error": {"code": "invalid_request", "message": msg, "line": n}});
        err.push_str(&line.to_string());
        err.push('\n');
    }
    let output = put_file(
        store,
        &job.tenant,
        &format!("{}_output.jsonl", job.id),
        "batch_output",
        out.as_bytes(),
    )?;
    let error = if err.is_empty() {
        None
    } else {
        Some(put_file(
            store,
            &job.tenant,
            &format!("{}_error.jsonl", job.id),
            "batch_output",
            err.as_bytes(),
        )?)
    };
    store.update(&job.id, |j| {
        if let Some(b) = &mut j.batch {
            b.output_file_id = Some(output.id.clone());
            b.error_file_id = error.as_ref().map(|e| e.id.clone());
        }
    })?;
    Ok(())
}

/// The OpenAI batch object of a job.
pub fn view(job: &Job) -> Value {
    let info = job.batch.as_ref();
    let status = match job.state {
        State::Queued => "validating",
        State::Running => "in_progress",
        State::Succeeded if info.is_some_and(|b| b.output_file_id.is_none()) => "finalizing",
        State::Succeeded => "completed",
        State::Failed => "failed",
        State::Cancelled => "cancelled",
        State::Expired => "expired",
    };
    let total = job.units.len() + info.map_or(0, |b| b.invalid_lines.len());
    let completed = job
        .units
        .iter()
        .filter(|u| u.done && u.status.is_some_and(|s| (200..300).contains(&s)))
        .count();
    let failed = job
        .units
        .iter()
        .filter(|u| u.done && u.status.is_none_or(|s| !(200..300).contains(&s)))
        .count()
        + info.map_or(0, |b| b.invalid_lines.len());
    let batch_id = job.id.replacen("job_", "batch_", 1);
    json!({
        "id": batch_id,
        "object": "batch",
        "endpoint": info.map(|b| b.endpoint.clone()),
        "errors": null,
        "input_file_id": info.map(|b| b.input_file_id.clone()),
        "completion_window": info.map(|b| b.completion_window.clone()),
        "status": status,
        "output_file_id": info.and_then(|b| b.output_file_id.clone()),
        "error_file_id": info.and_then(|b| b.error_file_id.clone()),
        "created_at": job.created_at,
        "in_progress_at": job.started_at,
        "expires_at": job.deadline,
        "finalizing_at": job.finished_at,
        "completed_at": (job.state == State::Succeeded).then_some(job.finished_at).flatten(),
        "failed_at": (job.state == State::Failed).then_some(job.finished_at).flatten(),
        "expired_at": (job.state == State::Expired).then_some(job.finished_at).flatten(),
        "cancelling_at": null,
        "cancelled_at": (job.state == State::Cancelled).then_some(job.finished_at).flatten(),
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "metadata": info.and_then(|b| b.metadata.clone()),
    })
}
