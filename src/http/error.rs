//! The HTTP API's errors (PROTOCOL.md 4): one enum, each variant one status and code.
//! Messages are fixed or built from our own validation text; they never echo a token or
//! a payload.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A refused HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400.
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    /// 401.
    #[error("{0}")]
    Unauthorized(Cow<'static, str>),
    /// 403.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 413; the message names the limit and its config key.
    #[error("{0}")]
    PayloadTooLarge(Cow<'static, str>),
    /// 415.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 429, with the seconds to wait.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 503.
    #[error("{0}")]
    Unavailable(&'static str),
    /// 503 while the broker cannot serve (Redis lost), with `Retry-After`: the node
    /// reconnects on its own, so a retry after a short wait is likely to succeed.
    #[error("{0}")]
    BrokerUnavailable(&'static str),
}

/// The `Retry-After` of a 503 for a lost broker, in seconds: about the time a node needs
/// to reconnect to Redis and listen again.
pub const BROKER_RETRY_AFTER_SECS: u64 = 1;

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::BrokerUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The protocol's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) | ApiError::BrokerUnavailable(_) => "unavailable",
        }
    }

    /// The `{"code","message"}` object, as used alone in batch results.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

/// `{"code":K,"message":M}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// The error code.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

#[derive(Serialize)]
struct Envelope {
    error: ErrorBody,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), Json(Envelope { error: self.body() })).into_response();
        let retry_after = match self {
            ApiError::RateLimited { retry_after } => Some(retry_after),
            ApiError::BrokerUnavailable(_) => Some(BROKER_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}
