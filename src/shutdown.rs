//! Shutdown, in a fixed order:
//! 1. not ready (`/readyz` answers 503) and the listener stops accepting;
//! 2. every session closes with 1001 at a random moment within `shutdown.drain`, so that
//!    clients do not reconnect all at once to the remaining replicas (one task walks the
//!    registry in random order, instead of a timer per session; a session admitted after
//!    the walk began sees the cancelled token and closes at once);
//! 3. wait for the sessions to finish, at most `shutdown.grace` in all, then return.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::protocol::CloseCode;

/// Runs steps 1 to 3. `serving` is the HTTP server task, which ends once its listener
/// has stopped and its plain HTTP requests have finished.
pub async fn drain(state: &Arc<AppState>, serving: JoinHandle<()>) {
    let grace = state.config.shutdown.grace;
    let deadline = tokio::time::Instant::now() + grace;
    state.ready.store(false, Ordering::Release);
    tracing::info!(drain = ?state.config.shutdown.drain, "shutting down: closing sessions with 1001");
    // The listener watches this token, and a session admitted from now on closes at once.
    state.shutdown.cancel();
    state.sessions.close();
    let closing = close_spread(state, state.config.shutdown.drain);
    let all_closed = async {
        tokio::join!(closing, state.sessions.wait());
    };
    if tokio::time::timeout_at(deadline, all_closed).await.is_err() {
        tracing::warn!("shutdown grace period over with sessions still open");
    }
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
