//! `POST /v1/embeddings`: OpenAI's embeddings API, served by the local MiniLM model.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::read_request;
use super::AppState;
use crate::error::ApiError;
use crate::local::EMBED_MODEL;

/// Most inputs in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    /// Token ids: accepted by the parser so the error can say what is wrong.
    Tokens(#[allow(dead_code)] Vec<u32>),
    /// Lists of token ids, likewise.
    TokenLists(#[allow(dead_code)] Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    model: String,
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility; recorded by the ledger later
    user: Option<String>,
}

/// Little-endian f32 bytes, base64-encoded (OpenAI's `encoding_format: "base64"`).
fn to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Handle an embeddings request.
#[tracing::instrument(skip_all, fields(model, inputs))]
pub async fn embeddings(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let call = super::call::Call::of(&req);
    let (principal, r): (_, EmbeddingsRequest) = read_request(&state, &req, payload).await?;
    call.principal(&principal);
    call.request(&r.model, false, r.user.as_deref());
    let span = tracing::Span::current();
    span.record("model", r.model.as_str());
    if r.model != EMBED_MODEL && r.model != "minilm" {
        return Err(ApiError::ModelNotFound(r.model));
    }
    let service = state
        .local
        .embed
        .as_ref()
        .ok_or_else(|| ApiError::ModelNotFound(r.model.clone()))?;
    let texts = match r.input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
        Input::Tokens(_) | Input::TokenLists(_) => {
            return Err(ApiError::param(
                "input",
                format!("`{EMBED_MODEL}` takes text input, not token ids."),
            ))
        }
    };
    if texts.is_empty() {
        return Err(ApiError::param("input", "'input' must not be empty."));
    }
    if texts.len() > MAX_INPUTS {
        return Err(ApiError::param(
            "input",
            format!("at most {MAX_INPUTS} inputs per request."),
        ));
    }
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(ApiError::param(
            format!("input[{i}]"),
            "inputs must not be empty strings.",
        ));
    }
    let base64 = match r.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::param(
                "encoding_format",
                format!("'{other}' is not one of 'float', 'base64'."),
            ))
        }
    };
    span.record("inputs", texts.len());
    let permit = service.admit()?;
    let began = std::time::Instant::now();
    let (vectors, tokens) = service.embed(&permit, texts).await?;
    drop(permit);
    call.local(EMBED_MODEL, began.elapsed());
    call.tokens(tokens.iter().sum::<usize>() as u64, 0);
    if let Some(d) = r.dimensions {
        let full = vectors.first().map_or(0, Vec::len);
        if d != full {
            return Err(ApiError::param(
                "dimensions",
                format!("`{EMBED_MODEL}` only produces {full} dimensions."),
            ));
        }
    }
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                json!(to_base64(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let prompt_tokens: usize = tokens.iter().sum();
    Ok(HttpResponse::Ok()
        .insert_header(("x-switchyard-provider", "local"))
        .insert_header(("x-switchyard-model", EMBED_MODEL))
        .json(json!({
            "object": "list",
            "data": data,
            "model": EMBED_MODEL,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        })))
}
