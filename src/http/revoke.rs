//! `POST /v1/revoke` (PROTOCOL.md 4.3): closes matching live sessions with 4003 and refuses
//! matching connect tokens until `until`.
//!
//! It takes an app-wide publish token: one limited to a namespace (`ns` claim) cannot
//! revoke, since a user's sessions span namespaces (403).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::publish::{authorize, count_error, parse_json, read_json_body};
use crate::AppState;
use crate::auth::unix_now;
use crate::broker::SharedRevocation;
use crate::protocol::AppId;
use crate::protocol::CloseCode;
use crate::revocation::Target;

/// Furthest `until` accepted: a year.
const MAX_UNTIL_SECS: i64 = 365 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    until: Option<i64>,
}

/// `{"closed":N}`.
#[derive(Debug, Serialize)]
pub struct RevokeResponse {
    /// Live sessions closed with 4003.
    pub closed: usize,
}

/// `POST /v1/revoke`.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RevokeResponse>, ApiError> {
    let run = async {
        let claims = authorize(&state, &headers)?;
        if claims.ns.is_some() {
            return Err(ApiError::Forbidden(
                "revocation needs a publish token without ns",
            ));
        }
        let bytes = read_json_body(&state, &headers, body).await?;
        let req: RevokeRequest = parse_json(&bytes)?;
        let target = match (req.sub, req.jti) {
            (Some(sub), None) if !sub.is_empty() && sub.len() <= 128 => Target::Sub(sub),
            (None, Some(jti)) if !jti.is_empty() && jti.len() <= 128 => Target::Jti(jti),
            _ => {
                return Err(ApiError::BadRequest(
                    "give exactly one of sub or jti, 1 to 128 bytes".into(),
                ));
            }
        };
        let now = unix_now();
        let max_life =
            i64::try_from(state.config.tokens.max_connect_lifetime.as_secs()).unwrap_or(i64::MAX);
        let until = req.until.unwrap_or(now.saturating_add(max_life));
        if until <= now || until > now.saturating_add(MAX_UNTIL_SECS) {
            return Err(ApiError::BadRequest(
                "until must be in the future and within a year".into(),
            ));
        }
        let Ok(closed) = apply(&state, &claims.app, &target, until, now) else {
            return Err(ApiError::Unavailable("revocation store full"));
        };
        // With several nodes, every node must know it; the app retries a 503 (revoking is
        // idempotent), and this node has applied it already.
        let shared = SharedRevocation {
            app: claims.app.clone(),
            target: target.clone(),
            until,
        };
        if state.broker.share_revocation(&shared).await.is_err() {
            return Err(ApiError::BrokerUnavailable(
                "revocation applied on this node but not shared with the others: retry",
            ));
        }
        let (kind, value) = match &target {
            Target::Sub(s) => ("sub", s.as_str()),
            Target::Jti(j) => ("jti", j.as_str()),
        };
        tracing::warn!(
            target: "audit",
            event = "revocation",
            app = claims.app.as_str(),
            kind,
            value,
            until,
            closed,
            "tokens revoked"
        );
        Ok(RevokeResponse { closed })
    };
    run.await.map(Json).map_err(|e| count_error(&state, e))
}

/// Records a revocation and closes the live sessions it matches with 4003; returns how
/// many it closed. `Err` when the store is full (counted).
fn apply(
    state: &AppState,
    app: &AppId,
    target: &Target,
    until: i64,
    now: i64,
) -> Result<usize, crate::revocation::Full> {
    if let Err(full) = state.revocations.revoke(app, target.clone(), until, now) {
        state.metrics.limit_hit("revocations");
        return Err(full);
    }
    Ok(match target {
        Target::Sub(sub) => state.registry.close_sub(app, sub, CloseCode::TokenRevoked),
        Target::Jti(jti) => state.registry.close_jti(app, jti, CloseCode::TokenRevoked),
    })
}

/// Applies a revocation that came through the broker: made on another node (or on this
/// one, which then finds nothing new), or stored before this node started.
pub fn apply_shared(state: &AppState, r: &SharedRevocation) {
    let now = unix_now();
    if r.until > now {
        match apply(state, &r.app, &r.target, r.until, now) {
            Ok(closed) if closed > 0 => tracing::warn!(
                target: "audit",
                event = "revocation_shared",
                app = r.app.as_str(),
                until = r.until,
                closed,
                "sessions closed by a revocation made on another node"
            ),
            Ok(_) => {}
            Err(_) => tracing::warn!(
                app = r.app.as_str(),
                "revocation store full: a shared revocation was not recorded"
            ),
        }
    }
}
