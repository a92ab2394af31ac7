//! Errors that reach clients, with one table of status codes, types and codes.
//!
//! Every failure on `/v1/*` leaves as OpenAI's `{"error":{"message","type","param","code"}}`
//! with the status [`ApiError::descriptor`] gives. The match there has no catch-all arm, so a new
//! variant forces a decision about how clients see it.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::providers::ProviderError;

/// A failure as the client sees it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON.
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    /// A parameter is missing, of the wrong type or out of range.
    #[error("{message}")]
    InvalidParam {
        /// The parameter's path, e.g. `messages[0].role`.
        param: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The body is larger than the configured limit.
    #[error("Request body is too large: the limit is {limit} bytes.")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// No key, or one we do not know.
    #[error("{0}")]
    Unauthorized(String),
    /// The model is neither configured nor addressable as `provider/model`.
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    /// No such object (a call record, ...).
    #[error("{0}")]
    NotFound(String),
    /// No such route.
    #[error("Unknown request URL: {method} {path}.")]
    RouteNotFound {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
    },
    /// Too many requests; try again later.
    #[error("{message}")]
    RateLimited {
        /// What was limited.
        message: String,
        /// When to try again.
        retry_after: Option<Duration>,
    },
    /// The caller's daily budget is spent.
    #[error("{0}")]
    BudgetExceeded(String),
    /// The request conflicts with the object's state (e.g. cancelling a finished job).
    #[error("{0}")]
    Conflict(String),
    /// The request's estimated cost is over its `max_cost` and no cheaper tier may answer.
    #[error("{0}")]
    MaxCostExceeded(String),
    /// The caller may not use this route (e.g. `/admin/*` without an admin key).
    #[error("{0}")]
    Forbidden(String),
    /// An upstream answered with an error that is the client's to fix (e.g. 400).
    #[error("{message}")]
    UpstreamRejected {
        /// The upstream's status, kept.
        status: u16,
        /// Provider name and the upstream's message.
        message: String,
    },
    /// Upstreams failed (bad status, bad body, broken stream).
    #[error("{0}")]
    BadGateway(String),
    /// No upstream could be reached or none is available.
    #[error("{0}")]
    Unavailable(String),
    /// A local model is loading or down; try again later.
    #[error("{message}")]
    NotReady {
        /// What is not ready.
        message: String,
        /// When to try again, if known.
        retry_after: Option<Duration>,
    },
    /// The request's deadline passed.
    #[error("{0}")]
    Timeout(String),
    /// A bug or an internal failure.
    #[error("{0}")]
    Internal(String),
}

/// The OpenAI error body.
#[derive(Debug, Serialize)]
pub struct OpenAiErrorBody<'a> {
    /// The error.
    pub error: OpenAiError<'a>,
}

/// The OpenAI error object.
#[derive(Debug, Serialize)]
pub struct OpenAiError<'a> {
    /// Human-readable message.
    pub message: String,
    /// Error class.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// Offending parameter.
    pub param: Option<&'a str>,
    /// Machine-readable code.
    pub code: Option<&'a str>,
}

impl ApiError {
    /// Shorthand for an invalid parameter.
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidParam {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    /// Status, OpenAI `type` and `code`: the one table.
    pub fn descriptor(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match self {
            Self::InvalidJson(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("invalid_json"),
            ),
            Self::InvalidParam { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("invalid_value"),
            ),
            Self::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some("payload_too_large"),
            ),
            Self::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            Self::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            Self::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("not_found"),
            ),
            Self::RouteNotFound { .. } => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("unknown_url"),
            ),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            Self::BudgetExceeded(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                Some("budget_exceeded"),
            ),
            Self::Conflict(_) => (
                StatusCode::CONFLICT,
                "invalid_request_error",
                Some("conflict"),
            ),
            Self::MaxCostExceeded(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("max_cost_exceeded"),
            ),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "permission_error", Some("forbidden")),
            Self::UpstreamRejected { status, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                "invalid_request_error",
                Some("upstream_rejected"),
            ),
            Self::BadGateway(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                Some("bad_gateway"),
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                Some("service_unavailable"),
            ),
            Self::NotReady { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("model_not_ready"),
            ),
            Self::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                Some("timeout"),
            ),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        }
    }

    /// A short class name for logs and (later) the ledger.
    pub fn class(&self) -> &'static str {
        self.descriptor().2.unwrap_or("internal")
    }

    /// The OpenAI-dialect body.
    pub fn openai_body(&self) -> serde_json::Value {
        let (_, kind, code) = self.descriptor();
        let param = match self {
            Self::InvalidParam { param, .. } => param.as_deref(),
            _ => None,
        };
        serde_json::to_value(OpenAiErrorBody {
            error: OpenAiError {
                message: self.to_string(),
                kind,
                param,
                code,
            },
        })
        .unwrap_or(serde_json::Value::Null)
    }

    /// How long the client should wait, if we know.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::NotReady { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.descriptor().0
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            resp.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        resp.json(self.openai_body())
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        e.into_api_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::param("messages", "must not be empty");
        let b = e.openai_body();
        assert_eq!(b["error"]["param"], "messages");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert_eq!(b["error"]["message"], "must not be empty");
        assert_eq!(e.descriptor().0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn rate_limited_sets_retry_after() {
        let e = ApiError::RateLimited {
            message: "slow down".into(),
            retry_after: Some(Duration::from_millis(1500)),
        };
        let r = e.error_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("2")
        );
    }
}
