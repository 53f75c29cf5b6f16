//! `GET /v1/ws`: the upgrade, then one task per socket ([`session`]).

pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Read buffer of a socket. Client frames are small (a connect frame with a 4 KiB token
/// is the largest usual one, and the buffer grows for it); a small initial buffer keeps
/// idle connections cheap.
const READ_BUFFER: usize = 2048;
/// Bytes gathered before a write is issued; a batch of frames is flushed explicitly.
const WRITE_BUFFER: usize = 16 * 1024;

/// Upgrades to a WebSocket session, unless the relay is shutting down.
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    if state.shutdown.is_cancelled() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let max_frame = state.config.websocket.max_frame_bytes;
    let tracker = state.sessions.clone();
    ws.max_message_size(max_frame)
        .max_frame_size(max_frame)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| tracker.track_future(session::run(socket, state, peer)))
}
