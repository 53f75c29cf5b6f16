//! Shutdown, in a fixed order:
//! 1. not ready (`/readyz` answers 503) and the listener stops accepting;
//! 2. every session closes with 1001 at a random moment within `shutdown.drain`, so that
//!    clients do not reconnect all at once to the remaining replicas;
//! 3. wait for the sessions to finish, at most `shutdown.grace` in all, then return.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// Runs steps 1 to 3. `serving` is the HTTP server task, which ends once its listener
/// has stopped and its plain HTTP requests have finished.
pub async fn drain(state: &Arc<AppState>, serving: JoinHandle<()>) {
    let grace = state.config.shutdown.grace;
    let deadline = tokio::time::Instant::now() + grace;
    state.ready.store(false, Ordering::Release);
    tracing::info!(drain = ?state.config.shutdown.drain, "shutting down: closing sessions with 1001");
    // Sessions and the listener watch this token.
    state.shutdown.cancel();
    state.sessions.close();
    if tokio::time::timeout_at(deadline, state.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over with sessions still open");
    }
    if tokio::time::timeout_at(deadline, serving).await.is_err() {
        tracing::warn!("shutdown grace period over with HTTP requests in flight");
    }
    tracing::info!("shut down");
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
