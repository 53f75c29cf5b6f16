//! `GET /v1/ws`: the upgrade, then one task per socket ([`session`]).

mod handshake;
pub mod registry;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::http::ApiError;
use crate::limits::Refusal;

/// Read buffer of a socket. Client frames are small (a connect frame with a 4 KiB token
/// is the largest usual one, and the buffer grows for it); tungstenite allocates this
/// eagerly and keeps it for the socket's life, so it is most of an idle connection's cost:
/// 2048 measured 6.9 KB of relay RSS per idle connection, 256 measured 4.7 KB
/// (BENCHMARKS.md). A connect frame then grows it once to its own size.
const READ_BUFFER: usize = 256;
/// Bytes gathered before a write is issued; a batch of frames is flushed explicitly.
const WRITE_BUFFER: usize = 16 * 1024;

/// Upgrades to a WebSocket session. Refused before any upgrade: while shutting down
/// (503), from an origin not allowed (403), past the per-IP attempt rate (429 with
/// `Retry-After`), or past the connection ceiling (503).
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let peer = peer.0;
    if state.shutdown.is_cancelled() {
        return ApiError::Unavailable("shutting down").into_response();
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("\u{fffd}"));
    if !state.origins.allows(origin) {
        state.metrics.limit_hit("origin");
        tracing::warn!(target: "audit", event = "origin_refused", peer = %peer, origin = origin.unwrap_or(""), "WebSocket from an origin not allowed");
        return ApiError::Forbidden("origin not allowed").into_response();
    }
    let guard = match state.limits.admit_upgrade(peer.ip()) {
        Ok(g) => g,
        Err(Refusal::ConnectRate(wait)) => {
            return ApiError::RateLimited {
                retry_after: wait.as_secs().max(1),
            }
            .into_response();
        }
        Err(_) => return ApiError::Unavailable("connection limit reached").into_response(),
    };
    let max_frame = state.config.websocket.max_frame_bytes;
    let tracker = state.sessions.clone();
    ws.max_message_size(max_frame)
        .max_frame_size(max_frame)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| tracker.track_future(session::run(socket, state, peer, guard)))
}

/// The peer address of a connection, plain or TLS (axum's connect-info type for both
/// listeners).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);
