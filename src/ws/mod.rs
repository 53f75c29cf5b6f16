//! `GET /v1/ws`: the upgrade, then one task per socket ([`session`]).
//!
//! The WebSocket layer is the relay's own ([`codec`], [`conn`]): hyper answers the
//! upgrade, and the session takes the raw stream back from hyper and speaks RFC 6455 on
//! it with no buffer kept while idle (see `codec` for why).

pub mod codec;
pub mod conn;
mod handshake;
pub mod registry;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::AppState;
use crate::http::ApiError;
use crate::limits::Refusal;

/// Upgrades to a WebSocket session. Refused before any upgrade: a request that is not a
/// WebSocket handshake of RFC 6455 version 13 (400), while shutting down (503), from an
/// origin not allowed (403), past the per-IP attempt rate (429 with `Retry-After`), or
/// past the connection ceiling (503).
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    mut req: Request,
) -> Response {
    let peer = state.proxies.client(peer.0, req.headers());
    let Accepted {
        on_upgrade,
        response,
    } = match accept(&mut req) {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    if state.shutdown.is_cancelled() {
        // Draining: the load balancer has not yet taken this node out. Say when to come
        // back; by then the client's retry goes to another node.
        let mut r = ApiError::Unavailable("shutting down").into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let origin = req
        .headers()
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
    let tracker = state.sessions.clone();
    tracker.spawn(async move {
        // Err: the client left before hyper finished the upgrade.
        if let Ok(upgraded) = on_upgrade.await {
            session::start(upgraded, state, peer, guard);
        }
    });
    response
}

/// An opening handshake that was accepted: the upgraded stream to come, and the `101`
/// response that hands the connection over to it.
#[derive(Debug)]
pub struct Accepted {
    /// Resolves to the upgraded stream once `response` is sent.
    pub on_upgrade: hyper::upgrade::OnUpgrade,
    /// The `101 Switching Protocols` answer.
    pub response: Response,
}

/// Checks an opening handshake (RFC 6455 4.2.1) and prepares its upgrade, or gives the
/// `400` that refuses it. Public for tools built on this WebSocket layer (the Autobahn
/// echo server in `examples/`); the relay adds its own admission checks in [`upgrade`].
#[allow(clippy::result_large_err)]
pub fn accept(req: &mut Request) -> Result<Accepted, Response> {
    let accept = accept_key(req.version(), req.headers())?;
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(
            ApiError::BadRequest("this connection cannot be upgraded".into()).into_response(),
        );
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(Accepted {
        on_upgrade,
        response,
    })
}

/// Checks an opening handshake (RFC 6455 4.2.1) and gives its `Sec-WebSocket-Accept`.
/// No extension and no subprotocol is ever agreed, so frames never carry reserved bits.
#[allow(clippy::result_large_err)]
fn accept_key(version: Version, headers: &HeaderMap) -> Result<HeaderValue, Response> {
    let bad = |m: &'static str| Err(ApiError::BadRequest(m.into()).into_response());
    if version != Version::HTTP_11 {
        return bad("a WebSocket upgrade needs HTTP/1.1");
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return bad("Connection header must include 'upgrade'");
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return bad("Upgrade header must be 'websocket'");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut r = ApiError::BadRequest("Sec-WebSocket-Version must be 13".into()).into_response();
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(r);
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return bad("Sec-WebSocket-Key is missing");
    };
    // The key is the base64 of 16 random bytes.
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes());
    if decoded.map(|k| k.len()) != Ok(16) {
        return bad("Sec-WebSocket-Key must be the base64 of 16 bytes");
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept).or_else(|_| bad("Sec-WebSocket-Key is not valid"))
}

/// Whether a comma-separated header has `token` (case-insensitive) in any of its lines.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The peer address of a connection, plain or TLS (axum's connect-info type for both
/// listeners).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(extra: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        for (k, v) in extra {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_rfc_sample_handshake_is_accepted_with_the_rfc_answer() {
        let a = accept_key(Version::HTTP_11, &handshake(&[])).unwrap();
        assert_eq!(a, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn handshakes_that_are_not_rfc_6455_version_13_are_refused() {
        let refused = |v: Version, extra: &[(&str, &str)]| {
            accept_key(v, &handshake(extra)).map(|_| ()).unwrap_err()
        };
        assert_eq!(refused(Version::HTTP_10, &[]).status(), 400);
        for extra in [
            &[("connection", "keep-alive")][..],
            &[("upgrade", "h2c")],
            &[("sec-websocket-key", "c2hvcnQ=")],
            &[("sec-websocket-key", "not base64 at all!")],
        ] {
            assert_eq!(refused(Version::HTTP_11, extra).status(), 400, "{extra:?}");
        }
        let old = refused(Version::HTTP_11, &[("sec-websocket-version", "8")]);
        assert_eq!(old.status(), 400);
        assert_eq!(old.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        let mut none = handshake(&[]);
        none.remove(header::SEC_WEBSOCKET_KEY);
        assert_eq!(
            accept_key(Version::HTTP_11, &none).unwrap_err().status(),
            400
        );
    }
}
