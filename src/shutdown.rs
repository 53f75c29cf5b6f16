//! Shutdown, in a fixed order:
//! 1. not ready: `/readyz` answers 503 at once, and a new WebSocket upgrade 503 with
//!    `Retry-After`. The public listener keeps accepting and answering, so a client that a
//!    load balancer still routes here (it has not yet seen the failed probe) gets an answer
//!    it can act on instead of a refused connection;
//! 2. every session closes with 1001 at a random moment within `shutdown.drain`, so that
//!    clients do not reconnect all at once to the remaining replicas (one task walks the
//!    registry in random order, instead of a timer per session; a session admitted after
//!    the walk began sees the cancelled token and closes at once);
//! 3. once the drain window is over and the sessions have finished (at most
//!    `shutdown.grace` after the signal in all), the listener stops, the HTTP requests in
//!    flight finish, and this returns.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::protocol::CloseCode;

/// Runs steps 1 to 3. `serving` is the public HTTP server task, which stops accepting
/// when `stop_listening` is cancelled and ends once its plain HTTP requests have finished.
pub async fn drain(
    state: &Arc<AppState>,
    serving: JoinHandle<()>,
    stop_listening: CancellationToken,
) {
    let grace = state.config.shutdown.grace;
    let window = state.config.shutdown.drain;
    let deadline = Instant::now() + grace;
    state.ready.store(false, Ordering::Release);
    tracing::info!(drain = ?window, "shutting down: not ready, closing sessions with 1001");
    // Upgrades answer 503 from now on, and a session admitted from now on closes at once.
    state.shutdown.cancel();
    state.sessions.close();
    let closing = close_spread(state, window);
    let all_closed = async {
        // The window is waited out even with no session left: the load balancer needs
        // that long to notice the failed probe, and meanwhile it may still route here.
        tokio::join!(closing, state.sessions.wait(), tokio::time::sleep(window));
    };
    if tokio::time::timeout_at(deadline, all_closed).await.is_err() {
        tracing::warn!("shutdown grace period over with sessions still open");
    }
    stop_listening.cancel();
    if tokio::time::timeout_at(deadline, serving).await.is_err() {
        tracing::warn!("shutdown grace period over with HTTP requests in flight");
    }
    tracing::info!("shut down");
}

/// Asks every registered session to close with 1001, each at a random moment of `window`.
async fn close_spread(state: &AppState, window: Duration) {
    let mut at: Vec<_> = state
        .registry
        .handles()
        .into_iter()
        .map(|h| (window.mul_f64(rand::random::<f64>()), h))
        .collect();
    at.sort_unstable_by_key(|(d, _)| *d);
    let start = Instant::now();
    for (d, h) in at {
        tokio::time::sleep_until(start + d).await;
        h.close(CloseCode::GoingAway);
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        token.cancel();
    });
}
