//! Reading request bodies: size limits first, then JSON with the failing field's path.

use actix_web::{web, HttpRequest};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Read the whole body, refusing more than `limit` bytes (early, from `Content-Length`, when
/// the client declares it).
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::InvalidJson(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The opening of every JSON endpoint: authenticate the caller, read the body within the
/// configured limit, and parse it.
pub async fn read_request<T: DeserializeOwned>(
    state: &super::AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(super::auth::Principal, T), ApiError> {
    let principal = state.auth.authenticate(req)?;
    let body = read_limited(req, payload, state.config.server.max_body_bytes).await?;
    Ok((principal, parse_json(&body)?))
}

/// Parse JSON into `T`; syntax errors are `invalid_json`, shape errors name the parameter.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidJson("the body is empty".to_owned()));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let param = (path != ".").then_some(path);
                let message = match &param {
                    Some(p) => format!("Invalid value for '{p}': {inner}"),
                    None => format!("Invalid request body: {inner}"),
                };
                ApiError::InvalidParam { param, message }
            }
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => ApiError::InvalidJson(inner.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChatRequest;

    #[test]
    fn errors_name_the_parameter() {
        let e = parse_json::<ChatRequest>(
            br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
        )
        .err();
        match e {
            Some(ApiError::InvalidParam { param, message }) => {
                assert_eq!(param.as_deref(), Some("messages[0].role"));
                assert!(message.contains("robot"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let e =
            parse_json::<ChatRequest>(br#"{"model":"m","messages":[],"temperature":"hot"}"#).err();
        assert!(
            matches!(e, Some(ApiError::InvalidParam { param: Some(p), .. }) if p == "temperature")
        );
        let e = parse_json::<ChatRequest>(br#"{"model": "m", "#).err();
        assert!(matches!(e, Some(ApiError::InvalidJson(_))));
        let e = parse_json::<ChatRequest>(b"").err();
        assert!(matches!(e, Some(ApiError::InvalidJson(_))));
    }
}
