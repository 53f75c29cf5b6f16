//! The steps around a session: authenticating the first frame, admitting the session
//! (revocation, per-app and per-namespace limits), and ending a session politely.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::AppState;
use crate::auth::{ConnectClaims, Rejection, TokenError, unix_now};
use crate::http::proxy::ClientAddr;
use crate::limits::SessionGuard;
use crate::protocol::{ClientFrame, CloseCode, FrameError};
use crate::ws::codec::{CodecError, Inbound};
use crate::ws::conn::{Conn, RecvError};

/// How long the relay waits for the client's answer to its close frame.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The relay closes with this code.
    Close(CloseCode),
    /// The relay refuses the connect token with this code; in dev mode the close reason
    /// also says why.
    Refused(CloseCode, Why),
    /// The client sent a close frame (with this code, if any); the relay answers it.
    Answer(Option<u16>),
    /// The client went away, or its socket broke.
    Gone,
}

/// Why a `connect` was refused, for the close reason of dev mode (`serve --dev`). Outside
/// dev mode the reason is the close code's name alone and the cause is in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The token did not verify.
    Token(TokenError),
    /// No `connect` frame within `websocket.auth_timeout`.
    AuthTimeout,
    /// A `connect` frame without a string `token`.
    NoToken,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Token(e) => write!(f, "{e}"),
            Why::AuthTimeout => f.write_str("no connect frame within websocket.auth_timeout"),
            Why::NoToken => f.write_str("connect frame without a string token"),
        }
    }
}

/// The close code for a client's bytes that are not valid WebSocket, as RFC 6455 7.4.1
/// and PROTOCOL.md 3.4 give it: 1002 for framing, 1007 for invalid UTF-8, 1009 for size.
/// (1008 is kept for violations of the relay's own protocol, above the framing.)
pub(crate) fn codec_close(e: CodecError) -> CloseCode {
    match e {
        CodecError::Protocol(_) => CloseCode::ProtocolError,
        CodecError::InvalidUtf8 => CloseCode::InvalidPayload,
        CodecError::TooLarge => CloseCode::FrameTooLarge,
    }
}

/// Closes the connection the way `end` says and counts it.
pub(crate) async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    state: &AppState,
    end: End,
) {
    match end {
        End::Close(code) => {
            // A slow consumer is told why (4008, so that it recovers) once it reads what
            // is already on its way: the close frame gets the same time as any write.
            let write_within = if code == CloseCode::SlowConsumer {
                state.config.websocket.write_timeout
            } else {
                CLOSE_LINGER
            };
            conn.close(Some(code.code()), code.name(), write_within, CLOSE_LINGER)
                .await;
            state.metrics.disconnected(code.name());
        }
        End::Refused(code, why) => {
            // At most 123 bytes fit a close reason; these texts are fixed and short.
            let reason = if state.config.dev {
                format!("{}: {why}", code.name())
            } else {
                code.name().to_owned()
            };
            conn.close(Some(code.code()), &reason, CLOSE_LINGER, CLOSE_LINGER)
                .await;
            state.metrics.disconnected(code.name());
        }
        End::Answer(code) => {
            conn.answer_close(code, CLOSE_LINGER).await;
            state.metrics.disconnected("client_closed");
        }
        End::Gone => state.metrics.disconnected("client_closed"),
    }
}

/// Waits for the `connect` frame and verifies its token.
pub(crate) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    state: &AppState,
    peer: ClientAddr,
) -> Result<ConnectClaims, End> {
    let started = Instant::now();
    let deadline = started + state.config.websocket.auth_timeout;
    loop {
        let msg = match tokio::time::timeout_at(deadline, conn.recv()).await {
            Err(_) => {
                audit_rejection(state, peer, None, "auth_timeout");
                return Err(End::Refused(CloseCode::Unauthorized, Why::AuthTimeout));
            }
            Ok(Err(RecvError::Gone)) => return Err(End::Gone),
            Ok(Err(RecvError::Codec(e))) => return Err(End::Close(codec_close(e))),
            Ok(Ok(m)) => m,
        };
        let text = match msg {
            Inbound::Text(t) => t,
            // Control frames are transport, not protocol; keep waiting (a ping is
            // answered, as RFC 6455 requires).
            Inbound::Ping(p) => {
                let pong = crate::ws::codec::pong_frame(&p);
                let sent = tokio::time::timeout_at(deadline, conn.send_frame(&pong)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return Err(End::Gone);
                }
                continue;
            }
            Inbound::Pong => continue,
            Inbound::Close(code) => return Err(End::Answer(code)),
            Inbound::Binary(_) => return Err(End::Close(CloseCode::UnsupportedData)),
        };
        let token = match ClientFrame::parse(&text) {
            Ok(ClientFrame::Connect { token }) => token,
            Err(FrameError::BadRequest { .. }) => {
                // A `connect` without a usable token field.
                audit_rejection(state, peer, None, "malformed");
                return Err(End::Refused(CloseCode::Unauthorized, Why::NoToken));
            }
            Ok(_) | Err(FrameError::Violation) => {
                return Err(End::Close(CloseCode::ProtocolViolation));
            }
        };
        return match state.auth.load().verify_connect(&token, unix_now()) {
            Ok(claims) => {
                let m = &state.metrics;
                m.ws_auth_duration.observe(started.elapsed().as_secs_f64());
                Ok(claims)
            }
            Err(r) => {
                audit_rejection(state, peer, Some(&r), r.reason.label());
                let code = match r.reason {
                    TokenError::Expired => CloseCode::TokenExpired,
                    _ => CloseCode::Unauthorized,
                };
                Err(End::Refused(code, Why::Token(r.reason)))
            }
        };
    }
}

/// After authentication: refuses a revoked user or token (4003) and a session past the
/// per-app or per-namespace limits (4029).
pub(crate) fn admit(state: &AppState, claims: &ConnectClaims) -> Result<SessionGuard, CloseCode> {
    state
        .limits
        .admit_session(&claims.app, &claims.ns)
        .map_err(|_| CloseCode::RateLimited)
}

/// Refuses a revoked connect token. Called once the session is registered: a revocation
/// stores itself first and then closes the registered sessions, so a session either is
/// registered before that scan (and closed by it) or checks after the store (and is
/// refused here). Checking before registering would let one slip between the two.
pub(crate) fn refuse_revoked(
    state: &AppState,
    claims: &RevocationCheck<'_>,
    peer: ClientAddr,
) -> Result<(), CloseCode> {
    if !state
        .revocations
        .is_revoked(claims.app, claims.sub, claims.jti, unix_now())
    {
        return Ok(());
    }
    state.metrics.token_rejected("revoked");
    tracing::warn!(
        target: "audit",
        event = "token_refused",
        reason = "revoked",
        app = claims.app.as_str(),
        sub = claims.sub,
        kid = claims.kid,
        peer = %peer,
        "revoked connect token refused"
    );
    Err(CloseCode::TokenRevoked)
}

/// What a revocation check needs of a connect token.
pub(crate) struct RevocationCheck<'a> {
    pub(crate) app: &'a crate::protocol::AppId,
    pub(crate) sub: &'a str,
    pub(crate) jti: Option<&'a str>,
    pub(crate) kid: Option<&'a str>,
}

pub(crate) fn audit_rejection(
    state: &AppState,
    peer: ClientAddr,
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
