//! `POST /v1/classify`: zero-shot classification on the local embedding model. Labels may carry
//! descriptions and examples; scores are probabilities and the margin is the confidence.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_models::classify::{centroids, label_texts, score, Label};

use super::body::read_request;
use super::embeddings::MAX_INPUTS;
use super::AppState;
use crate::error::ApiError;
use crate::local::embed::CentroidCache;
use crate::local::EMBED_MODEL;

/// Most labels per request.
pub const MAX_LABELS: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Texts {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum LabelIn {
    Name(String),
    Full(Label),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyRequest {
    #[serde(default)]
    model: Option<String>,
    input: Texts,
    labels: Vec<LabelIn>,
}

/// Handle a classification request.
pub async fn classify(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let call = super::call::Call::of(&req);
    let (principal, r): (_, ClassifyRequest) = read_request(&state, &req, payload).await?;
    call.principal(&principal);
    call.request(r.model.as_deref().unwrap_or(EMBED_MODEL), false, None);
    if let Some(m) = r
        .model
        .as_deref()
        .filter(|m| *m != EMBED_MODEL && *m != "minilm")
    {
        return Err(ApiError::ModelNotFound(m.to_owned()));
    }
    let service = state
        .local
        .embed
        .as_ref()
        .ok_or_else(|| ApiError::ModelNotFound(EMBED_MODEL.to_owned()))?;
    let texts = match r.input {
        Texts::One(s) => vec![s],
        Texts::Many(v) => v,
    };
    if texts.is_empty() || texts.len() > MAX_INPUTS {
        return Err(ApiError::param(
            "input",
            format!("give 1 to {MAX_INPUTS} texts."),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::param(
            format!("input[{i}]"),
            "texts must not be empty.",
        ));
    }
    let labels: Vec<Label> = r
        .labels
        .into_iter()
        .map(|l| match l {
            LabelIn::Name(name) => Label {
                name,
                ..Label::default()
            },
            LabelIn::Full(l) => l,
        })
        .collect();
    if labels.len() < 2 || labels.len() > MAX_LABELS {
        return Err(ApiError::param(
            "labels",
            format!("give 2 to {MAX_LABELS} labels."),
        ));
    }
    if let Some(i) = labels.iter().position(|l| l.name.trim().is_empty()) {
        return Err(ApiError::param(
            format!("labels[{i}].name"),
            "label names must not be empty.",
        ));
    }
    let (describing, owner) = label_texts(&labels);
    if describing.iter().any(|t| t.trim().is_empty()) {
        return Err(ApiError::param(
            "labels",
            "label descriptions and examples must not be empty.",
        ));
    }
    // The label texts are embedded only when this label set is not among the recent ones.
    let key = CentroidCache::key(&describing, &owner);
    let cached = service.centroids.get(&key);
    let mut all: Vec<String> = match cached {
        Some(_) => Vec::with_capacity(texts.len()),
        None => describing.iter().map(|s| (*s).to_owned()).collect(),
    };
    let n_labels_texts = all.len();
    all.extend(texts);
    let permit = service.admit()?;
    let began = std::time::Instant::now();
    let (mut vectors, tokens) = service.embed(&permit, all).await?;
    call.local(EMBED_MODEL, began.elapsed());
    drop(permit);
    let text_vecs = vectors.split_off(n_labels_texts);
    let centres = match cached {
        Some(c) => c,
        None => {
            let c = std::sync::Arc::new(centroids(labels.len(), &vectors, &owner));
            service.centroids.put(key, std::sync::Arc::clone(&c));
            c
        }
    };
    let results = score(&labels, &text_vecs, &centres);
    let data: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let scores: serde_json::Map<String, Value> = c
                .scores
                .iter()
                .map(|(n, p)| (n.clone(), json!(p)))
                .collect();
            json!({"index": i, "label": c.label, "scores": scores, "margin": c.margin})
        })
        .collect();
    let prompt_tokens: usize = tokens[n_labels_texts..].iter().sum();
    call.tokens(prompt_tokens as u64, 0);
    Ok(HttpResponse::Ok()
        .insert_header(("x-switchyard-provider", "local"))
        .insert_header(("x-switchyard-model", EMBED_MODEL))
        .json(json!({
            "object": "list",
            "model": EMBED_MODEL,
            "data": data,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        })))
}
