//! `POST /v1/publish` and `POST /v1/publish/batch`.
//!
//! Order of checks: token (401), media type (415), body size (413), JSON and fields (400),
//! namespace (403), then the broker. Nothing is published until every check of that
//! publication passed, so an error never half-applies a request; batch items are
//! independent and each is published at most once.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::AppState;
use crate::auth::{PublishClaims, unix_now};
use crate::broker::{BrokerError, PublishItem};
use crate::hub::{ChannelKey, HubError};
use crate::limits::Refusal;
use crate::protocol::frames::clip;
use crate::protocol::{Channel, EventName};
use crate::ws::PeerAddr;

use super::proxy::ClientAddr;

/// AES-GCM nonce (12) plus tag (16): the shortest possible ciphertext.
pub const MIN_PAYLOAD_BYTES: usize = 28;

/// One publication as sent by the app.
#[derive(Debug, Deserialize)]
pub struct PublishRequest {
    /// `<namespace>#<topic>`.
    pub channel: String,
    /// The clear-text event type.
    pub event: String,
    /// base64(nonce | ciphertext | tag).
    pub data: String,
    /// Optional, 1 to 64 bytes.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `{"offset":O,"epoch":E}`.
#[derive(Debug, Serialize)]
pub struct PublishResponse {
    /// The offset given.
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum BatchItem {
    Ok(PublishResponse),
    Err { error: super::error::ErrorBody },
}

#[derive(Serialize)]
struct BatchResponse {
    results: Vec<BatchItem>,
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "missing Authorization: Bearer token".into(),
        ))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized(
        "malformed Authorization header".into(),
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "Authorization must be a Bearer token".into(),
        ));
    }
    Ok(token.trim())
}

/// Verifies the request's publish token; audits and counts a refusal.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    peer: &ClientAddr,
) -> Result<PublishClaims, ApiError> {
    let token = bearer(headers).inspect_err(|_| state.metrics.token_rejected("missing"))?;
    state
        .auth
        .load()
        .verify_publish(token, unix_now())
        .map_err(|r| {
            state.metrics.token_rejected(r.reason.label());
            tracing::warn!(
                target: "audit",
                event = "token_refused",
                reason = r.reason.label(),
                app = r.app.as_ref().map(|a| a.as_str()),
                kid = r.kid.as_deref(),
                peer = %peer,
                "publish token refused"
            );
            let said = match r.reason {
                crate::auth::TokenError::Expired => "publish token expired",
                _ => "publish token refused",
            };
            // Dev mode names the exact reason; otherwise it is only in the audit log.
            ApiError::Unauthorized(if state.config.dev {
                format!("{said}: {} (dev mode)", r.reason).into()
            } else {
                said.into()
            })
        })
}

/// Reads a JSON body after checking its media type and size.
pub async fn read_json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let limit = state.config.http.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        state.metrics.limit_hit("http_body_bytes");
        ApiError::PayloadTooLarge(
            format!("request body over {limit} bytes (http.max_body_bytes)").into(),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // Only the size limit is a 413; a body that breaks off or has malformed chunks is a 400.
    // A body that stalls is cut off at the read timeout (the connection then closes).
    let timeout = state.config.http.body_read_timeout;
    let Ok(read) = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await else {
        state.metrics.limit_hit("http_body_read_timeout");
        return Err(ApiError::BadRequest(
            "request body not received within http.body_read_timeout".into(),
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(_) => Err(ApiError::BadRequest(
            "malformed or incomplete request body".into(),
        )),
    }
}

/// A publication that passed every check.
struct Checked {
    key: ChannelKey,
    event: EventName,
    data: String,
    idempotency_key: Option<String>,
}

fn check(
    state: &AppState,
    claims: &PublishClaims,
    req: PublishRequest,
    peer: &ClientAddr,
) -> Result<Checked, ApiError> {
    let channel = Channel::parse(&req.channel)
        .map_err(|e| ApiError::BadRequest(format!("channel: {e}").into()))?;
    let event = EventName::parse(&req.event)
        .map_err(|e| ApiError::BadRequest(format!("event: {e}").into()))?;
    if let Some(k) = &req.idempotency_key {
        if k.is_empty() || k.len() > 64 {
            return Err(ApiError::BadRequest(
                "idempotency_key must be 1 to 64 bytes".into(),
            ));
        }
    }
    let max = state.config.http.max_payload_bytes;
    let too_large = || {
        state.metrics.limit_hit("payload_bytes");
        ApiError::PayloadTooLarge(
            format!("data decodes to over {max} bytes (http.max_payload_bytes)").into(),
        )
    };
    // Cheap bound before decoding: base64 encodes 3 bytes in 4 characters.
    if req.data.len() / 4 * 3 > max + 2 {
        return Err(too_large());
    }
    let decoded = STANDARD
        .decode(req.data.as_bytes())
        .map_err(|_| ApiError::BadRequest("data must be standard base64 with padding".into()))?;
    if decoded.len() < MIN_PAYLOAD_BYTES {
        return Err(ApiError::BadRequest(
            "data must decode to at least 28 bytes (12-byte nonce and 16-byte tag): is it AES-256-GCM ciphertext?".into(),
        ));
    }
    if decoded.len() > max {
        return Err(too_large());
    }
    if let Some(ns) = &claims.ns {
        if !channel.in_namespace(ns) {
            state.metrics.forbidden.inc();
            tracing::warn!(
                target: "audit",
                event = "namespace_violation",
                app = claims.app.as_str(),
                ns = ns.as_str(),
                channel = channel.as_str(),
                peer = %peer,
                "publish outside the token's namespace refused"
            );
            return Err(ApiError::Forbidden("channel outside the token's namespace"));
        }
    }
    Ok(Checked {
        key: ChannelKey {
            app: claims.app.clone(),
            channel,
        },
        event,
        data: req.data,
        idempotency_key: req.idempotency_key,
    })
}

async fn publish_one(
    state: &AppState,
    claims: &PublishClaims,
    req: PublishRequest,
    peer: &ClientAddr,
) -> Result<PublishResponse, ApiError> {
    let c = check(state, claims, req, peer)?;
    let published = state
        .broker
        .publish(&c.key, &c.event, &c.data, c.idempotency_key.as_deref())
        .await;
    answer(published)
}

/// A broker's answer to one publication, as the API says it.
fn answer(
    published: Result<crate::hub::Published, BrokerError>,
) -> Result<PublishResponse, ApiError> {
    let published = published.map_err(|e| match e {
        BrokerError::Hub(HubError::TooManyChannels) => {
            ApiError::Unavailable("channel limit reached (history.max_channels)")
        }
        BrokerError::Hub(HubError::AppChannelQuota) => ApiError::Unavailable(
            "the app's channel quota is reached (limits.max_channels_per_app)",
        ),
        BrokerError::Unavailable => ApiError::BrokerUnavailable("broker unavailable"),
    })?;
    Ok(PublishResponse {
        offset: published.offset,
        epoch: published.epoch.to_string(),
    })
}

/// The per-app publish rate: `n` publications now, or 429 with the wait.
fn admit_rate(state: &AppState, claims: &PublishClaims, n: u32) -> Result<(), ApiError> {
    state
        .limits
        .admit_publications(&claims.app, n)
        .map_err(|r| match r {
            Refusal::PublishRate(wait) => ApiError::RateLimited {
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
            },
            _ => ApiError::RateLimited { retry_after: 1 },
        })
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message names a field or a position, never the input's content.
        ApiError::BadRequest(clip(format!("invalid JSON body: {e}"), 200).into())
    })
}

pub(crate) fn count_error(state: &AppState, e: ApiError) -> ApiError {
    state.metrics.http_error(e.code());
    e
}

/// `POST /v1/publish`.
pub async fn publish(
    State(state): State<Arc<AppState>>,
    ConnectInfo(tcp): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishResponse>, ApiError> {
    let peer = state.proxies.client(tcp.0, &headers);
    let run = async {
        let claims = authorize(&state, &headers, &peer)?;
        let bytes = read_json_body(&state, &headers, body).await?;
        let req: PublishRequest = parse_json(&bytes)?;
        admit_rate(&state, &claims, 1)?;
        publish_one(&state, &claims, req, &peer).await
    };
    run.await.map(Json).map_err(|e| count_error(&state, e))
}

/// `POST /v1/publish/batch`.
pub async fn publish_batch(
    State(state): State<Arc<AppState>>,
    ConnectInfo(tcp): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<impl Serialize>, ApiError> {
    let peer = state.proxies.client(tcp.0, &headers);
    let run = async {
        let claims = authorize(&state, &headers, &peer)?;
        let bytes = read_json_body(&state, &headers, body).await?;
        let max = state.config.http.max_batch;
        let publications = super::batch::parse(&bytes, max).map_err(|e| match e {
            super::batch::BatchError::TooMany => {
                state.metrics.limit_hit("batch_size");
                ApiError::BadRequest(
                    format!("at most {max} publications per batch (http.max_batch)").into(),
                )
            }
            super::batch::BatchError::Invalid(e) => {
                ApiError::BadRequest(clip(format!("invalid JSON body: {e}"), 200).into())
            }
        })?;
        let n = u32::try_from(publications.len()).unwrap_or(u32::MAX);
        admit_rate(&state, &claims, n)?;
        // Every item is checked first, then the valid ones are published in order in one
        // broker call (one Redis round trip where the broker can).
        let checked: Vec<Result<Checked, ApiError>> = publications
            .iter()
            .map(|item| {
                // Parsed alone, as a single publish body is: duplicate keys are refused.
                match serde_json::from_str::<PublishRequest>(item.get()) {
                    Ok(req) => check(&state, &claims, req, &peer),
                    Err(e) => Err(ApiError::BadRequest(
                        clip(format!("invalid publication: {e}"), 200).into(),
                    )),
                }
            })
            .collect();
        let items: Vec<PublishItem<'_>> = checked
            .iter()
            .flatten()
            .map(|c| PublishItem {
                key: &c.key,
                event: &c.event,
                data: &c.data,
                idempotency_key: c.idempotency_key.as_deref(),
            })
            .collect();
        let mut published = state.broker.publish_many(&items).await.into_iter();
        let results = checked
            .iter()
            .map(|c| {
                let outcome = match c {
                    Ok(_) => published.next().map_or(
                        Err(ApiError::BrokerUnavailable("broker unavailable")),
                        answer,
                    ),
                    Err(e) => Err(e.clone()),
                };
                match outcome {
                    Ok(r) => BatchItem::Ok(r),
                    Err(e) => BatchItem::Err { error: e.body() },
                }
            })
            .collect();
        Ok(BatchResponse { results })
    };
    run.await.map(Json).map_err(|e| count_error(&state, e))
}
