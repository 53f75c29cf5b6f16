//! The HTTP connection loop. It does what `axum::serve` does, plus what `axum::serve`
//! cannot: a timer in hyper, so that a connection that never completes its request head,
//! including one that sends nothing at all, is closed after `http.header_read_timeout`
//! (slowloris). HTTP/1.1 only, served by hyper's http1 connection directly (no protocol
//! sniffing, which would wait for bytes before the timer starts). WebSocket upgrades leave
//! hyper once upgraded and are bounded by the session's own timeouts.

use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::ws::PeerAddr;

/// Accepts connections until `stop` is cancelled, then asks each open HTTP connection to
/// finish its request in flight and close, and waits for them (the caller bounds that
/// wait). `header_read_timeout` bounds how long a client may take to send each complete
/// request head, the WebSocket upgrade request included.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) where
    L: Listener<Addr = PeerAddr>,
{
    let connections = TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            () = stop.cancelled() => break,
        };
        let service = router
            .clone()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(Body::new)
            });
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            let mut conn = pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    // Stop listening before waiting for the requests in flight.
    drop(listener);
    connections.close();
    connections.wait().await;
}
