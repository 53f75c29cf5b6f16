//! `POST /v1/revoke` (PROTOCOL.md 4.3): closes matching live sessions with 4003 and refuses
//! matching connect tokens until `until`.
//!
//! It takes an app-wide publish token: one limited to a namespace (`ns` claim) cannot
//! revoke, since a user's sessions span namespaces (403).
//!
//! Bounded per app, so that one app (or a stolen publish token) cannot deny revocation to
//! the others: a request rate (`limits.revoke_rate_per_app`, 429 with `Retry-After`), a
//! quota of live revocations (`limits.max_revocations_per_app`, 503), and a `jti`
//! revocation lasts at most as long as a connect token can (`tokens.max_connect_lifetime`
//! plus the leeway): a later `until` is shortened to that, since no token with that id
//! can be valid beyond it.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::publish::{authorize, count_error, parse_json, read_json_body};
use crate::AppState;
use crate::auth::unix_now;
use crate::broker::SharedRevocation;
use crate::protocol::AppId;
use crate::protocol::CloseCode;
use crate::revocation::{Full, Target};
use crate::ws::PeerAddr;

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

/// `{"closed":N,"until":T}`.
#[derive(Debug, Serialize)]
pub struct RevokeResponse {
    /// Live sessions of this node closed with 4003.
    pub closed: usize,
    /// Until when the revocation holds (a `jti`'s is capped, see the module docs).
    pub until: i64,
}

/// `POST /v1/revoke`.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    ConnectInfo(tcp): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RevokeResponse>, ApiError> {
    let peer = state.proxies.client(tcp.0, &headers);
    let run = async {
        let claims = authorize(&state, &headers, &peer)?;
        if claims.ns.is_some() {
            return Err(ApiError::Forbidden(
                "revocation needs a publish token without ns",
            ));
        }
        state
            .limits
            .admit_revoke(&claims.app)
            .map_err(|r| ApiError::RateLimited {
                retry_after: match r {
                    crate::limits::Refusal::RevokeRate(wait) => {
                        wait.as_secs_f64().ceil().max(1.0) as u64
                    }
                    _ => 1,
                },
            })?;
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
        let mut until = req.until.unwrap_or(now.saturating_add(max_life));
        if until <= now || until > now.saturating_add(MAX_UNTIL_SECS) {
            return Err(ApiError::BadRequest(
                "until must be in the future and within a year".into(),
            ));
        }
        if let Target::Jti(_) = target {
            let leeway = i64::try_from(state.config.tokens.leeway.as_secs()).unwrap_or(0);
            until = until.min(now.saturating_add(max_life).saturating_add(leeway));
        }
        let closed = match apply(&state, &claims.app, &target, until, now) {
            Ok(closed) => closed,
            Err(Full::App) => {
                return Err(ApiError::Unavailable(
                    "this app holds its quota of live revocations (limits.max_revocations_per_app)",
                ));
            }
            Err(Full::Relay) => {
                return Err(ApiError::Unavailable(
                    "revocation store full (revocation.max_entries)",
                ));
            }
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
            peer = %peer,
            "tokens revoked"
        );
        Ok(RevokeResponse { closed, until })
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
) -> Result<usize, Full> {
    let quota = state.quotas.of(app).max_revocations;
    let recorded = state
        .revocations
        .revoke(app, target.clone(), until, now, quota);
    state
        .metrics
        .revocations
        .set(state.revocations.len() as i64);
    if let Err(full) = recorded {
        state.metrics.limit_hit(match full {
            Full::App => "revocations_per_app",
            Full::Relay => "revocations",
        });
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
