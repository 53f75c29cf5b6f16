//! The steps around a session: authenticating the first frame, admitting the session
//! (revocation, per-app and per-namespace limits), and closing a socket politely.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use tokio::time::Instant;

use crate::AppState;
use crate::auth::{ConnectClaims, Rejection, TokenError, unix_now};
use crate::limits::SessionGuard;
use crate::protocol::{ClientFrame, CloseCode, FrameError};

/// How long the relay waits for the client's answer to its close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Sends a close frame, then waits briefly for the client's reply so that the close frame
/// is not lost to a TCP reset.
pub(crate) async fn close(socket: &mut WebSocket, code: CloseCode) {
    let frame = CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.name()),
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = socket.recv().await {}
        }
    })
    .await;
}

pub(crate) fn is_too_large(e: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner: &(dyn std::error::Error + 'static) = e;
    let mut source = Some(inner);
    while let Some(err) = source {
        if let Some(WsError::Capacity(_)) = err.downcast_ref::<WsError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Waits for the `connect` frame and verifies its token. `Err(None)` means the client
/// went away; `Err(Some(code))` means close with that code.
pub(crate) async fn authenticate(
    socket: &mut WebSocket,
    state: &AppState,
    peer: SocketAddr,
) -> Result<ConnectClaims, Option<CloseCode>> {
    let deadline = Instant::now() + state.config.websocket.auth_timeout;
    loop {
        let msg = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                audit_rejection(state, peer, None, "auth_timeout");
                return Err(Some(CloseCode::Unauthorized));
            }
            Ok(None) => return Err(None),
            Ok(Some(Err(e))) if is_too_large(&e) => return Err(Some(CloseCode::FrameTooLarge)),
            Ok(Some(Err(_))) => return Err(None),
            Ok(Some(Ok(m))) => m,
        };
        let text = match msg {
            Message::Text(t) => t,
            // Control frames are transport, not protocol; keep waiting.
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Err(None),
            Message::Binary(_) => return Err(Some(CloseCode::ProtocolViolation)),
        };
        let token = match ClientFrame::parse(&text) {
            Ok(ClientFrame::Connect { token }) => token,
            Err(FrameError::BadRequest { .. }) => {
                // A `connect` without a usable token field.
                audit_rejection(state, peer, None, "malformed");
                return Err(Some(CloseCode::Unauthorized));
            }
            Ok(_) | Err(FrameError::Violation) => return Err(Some(CloseCode::ProtocolViolation)),
        };
        return match state.auth.load().verify_connect(&token, unix_now()) {
            Ok(claims) => Ok(claims),
            Err(r) => {
                audit_rejection(state, peer, Some(&r), r.reason.label());
                Err(Some(match r.reason {
                    TokenError::Expired => CloseCode::TokenExpired,
                    _ => CloseCode::Unauthorized,
                }))
            }
        };
    }
}

/// After authentication: refuses a revoked user or token (4003) and a session past the
/// per-app or per-namespace limits (4029).
pub(crate) fn admit(
    state: &AppState,
    claims: &ConnectClaims,
    peer: SocketAddr,
) -> Result<SessionGuard, CloseCode> {
    if state
        .revocations
        .is_revoked(&claims.app, &claims.sub, claims.jti.as_deref(), unix_now())
    {
        state.metrics.token_rejected("revoked");
        tracing::warn!(
            target: "audit",
            event = "token_refused",
            reason = "revoked",
            app = claims.app.as_str(),
            sub = claims.sub.as_str(),
            kid = claims.kid.as_deref(),
            peer = %peer,
            "revoked connect token refused"
        );
        return Err(CloseCode::TokenRevoked);
    }
    state
        .limits
        .admit_session(&claims.app, &claims.ns)
        .map_err(|_| CloseCode::RateLimited)
}

pub(crate) fn audit_rejection(
    state: &AppState,
    peer: SocketAddr,
    r: Option<&Rejection>,
    reason: &str,
) {
    state.metrics.token_rejected(reason);
    tracing::warn!(
        target: "audit",
        event = "token_refused",
        reason,
        app = r.and_then(|r| r.app.as_ref()).map(|a| a.as_str()),
        kid = r.and_then(|r| r.kid.as_deref()),
        peer = %peer,
        "connect token refused"
    );
}

/// The instant at which a token with this `exp` stops being valid (`exp` + leeway).
pub(crate) fn expiry_instant(exp: i64, leeway: Duration) -> Instant {
    let exp = UNIX_EPOCH + Duration::from_secs(u64::try_from(exp).unwrap_or(0)) + leeway;
    let left = exp
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}
