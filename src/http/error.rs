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
    Unauthorized(&'static str),
    /// 403.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 413.
    #[error("{0}")]
    PayloadTooLarge(&'static str),
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
}

/// The 503 message of a broker that cannot serve (its shared store is unreachable or
/// failing over); it alone carries `Retry-After`, since waiting is what fixes it.
pub const BROKER_UNAVAILABLE: &str = "broker unavailable";

/// The `Retry-After` of [`BROKER_UNAVAILABLE`], in seconds.
const BROKER_RETRY_AFTER: u64 = 1;

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
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            ApiError::Unavailable(_) => "unavailable",
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
            ApiError::Unavailable(m) if m == BROKER_UNAVAILABLE => Some(BROKER_RETRY_AFTER),
            _ => None,
        };
        if let Some(s) = retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}
