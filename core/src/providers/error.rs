//! What can go wrong talking to an upstream, and how each failure reaches the client.

use std::time::Duration;

use crate::error::ApiError;

/// A failed call to one upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Could not connect or the connection broke before a response.
    #[error("{provider}: connection failed: {message}")]
    Connect {
        /// Provider name.
        provider: String,
        /// Transport error, without URLs' credentials.
        message: String,
    },
    /// The deadline passed before an answer.
    #[error("{provider}: timed out")]
    Timeout {
        /// Provider name.
        provider: String,
    },
    /// The upstream answered with a non-success status.
    #[error("{provider}: upstream returned {status}: {message}")]
    Status {
        /// Provider name.
        provider: String,
        /// HTTP status, kept.
        status: u16,
        /// The upstream's error message (truncated), never its raw body.
        message: String,
        /// The upstream's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The upstream's body did not parse.
    #[error("{provider}: malformed response: {message}")]
    Decode {
        /// Provider name.
        provider: String,
        /// Parser message.
        message: String,
    },
    /// The stream broke or ended early.
    #[error("{provider}: stream failed: {message}")]
    Stream {
        /// Provider name.
        provider: String,
        /// What happened.
        message: String,
    },
    /// The provider actor is gone or the upstream is not accepting work.
    #[error("{provider}: unavailable: {message}")]
    Unavailable {
        /// Provider name.
        provider: String,
        /// Why.
        message: String,
    },
    /// Not sent: a client-side limit or a 429 cool-down is in force.
    #[error("{provider}: not sent: {reason} (retry in {} ms)", retry_after.as_millis())]
    Limited {
        /// Provider name.
        provider: String,
        /// When capacity is expected.
        retry_after: Duration,
        /// Which limit.
        reason: String,
    },
    /// Not sent: the circuit breaker is open.
    #[error("{provider}: not sent: circuit open (probe in {} ms)", retry_after.as_millis())]
    CircuitOpen {
        /// Provider name.
        provider: String,
        /// When a probe will be allowed.
        retry_after: Duration,
    },
}

impl ProviderError {
    /// Whether another upstream might succeed where this one failed. Requests the upstream
    /// rejected as invalid would fail everywhere, so they are returned to the client.
    pub fn should_fail_over(&self) -> bool {
        match self {
            Self::Status { status, .. } => !matches!(status, 400 | 413 | 422),
            Self::Limited { .. } | Self::CircuitOpen { .. } => true,
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::Decode { .. }
            | Self::Stream { .. }
            | Self::Unavailable { .. } => true,
        }
    }

    /// Whether trying the same upstream again soon may help (transient faults). A 429 is not:
    /// it cools the upstream and the chain moves on.
    pub fn retry_same(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 408 || *status >= 500,
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::Decode { .. }
            | Self::Stream { .. } => true,
            Self::Unavailable { .. } | Self::Limited { .. } | Self::CircuitOpen { .. } => false,
        }
    }

    /// For failures that mean "not now": when the upstream may take the request.
    pub fn available_in(&self) -> Option<Duration> {
        match self {
            Self::Status {
                status: 429,
                retry_after,
                ..
            } => Some(retry_after.unwrap_or(Duration::from_secs(1))),
            Self::Limited { retry_after, .. } | Self::CircuitOpen { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The client-facing error for this failure alone.
    pub fn into_api_error(self) -> ApiError {
        let text = self.to_string();
        match self {
            Self::Status {
                status: 429,
                retry_after,
                ..
            } => ApiError::RateLimited {
                message: text,
                retry_after,
            },
            Self::Status { status, .. } if matches!(status, 400 | 413 | 422) => {
                ApiError::UpstreamRejected {
                    status,
                    message: text,
                }
            }
            Self::Status { status: 408, .. } | Self::Timeout { .. } => ApiError::Timeout(text),
            Self::Status { .. } | Self::Decode { .. } | Self::Stream { .. } => {
                ApiError::BadGateway(text)
            }
            Self::Limited { retry_after, .. } => ApiError::RateLimited {
                message: text,
                retry_after: Some(retry_after),
            },
            Self::Connect { .. } | Self::Unavailable { .. } | Self::CircuitOpen { .. } => {
                ApiError::Unavailable(text)
            }
        }
    }

    /// Summarise failures of every target into one client error: all rate limited → 429 with
    /// the shortest wait; all unreachable → 503; the last one timed out → 504; otherwise 502.
    pub fn summarise(errors: Vec<ProviderError>) -> ApiError {
        let Some(last) = errors.last().cloned() else {
            return ApiError::Unavailable("no upstream is configured for this model".to_owned());
        };
        if errors.len() == 1 {
            return last.into_api_error();
        }
        let text = format!(
            "all {} upstreams failed: {}",
            errors.len(),
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
        let all = |f: fn(&ProviderError) -> bool| errors.iter().all(f);
        if all(|e| matches!(e, Self::Status { status: 429, .. } | Self::Limited { .. })) {
            let retry_after = errors.iter().filter_map(Self::available_in).min();
            ApiError::RateLimited {
                message: text,
                retry_after,
            }
        } else if all(|e| {
            matches!(
                e,
                Self::Connect { .. }
                    | Self::Unavailable { .. }
                    | Self::CircuitOpen { .. }
                    | Self::Limited { .. }
            )
        }) {
            ApiError::Unavailable(text)
        } else if matches!(last, Self::Timeout { .. }) {
            ApiError::Timeout(text)
        } else {
            ApiError::BadGateway(text)
        }
    }
}

/// Cut a message to a length that is safe to show and log.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
