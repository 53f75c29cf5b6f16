//! `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::AppState;

/// The process is alive.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Whether the relay is ready: listeners up, not draining, broker reachable.
pub fn is_ready(state: &AppState) -> bool {
    state.ready.load(Ordering::Acquire) && state.broker.is_ready()
}

/// Listeners up, not shutting down, broker reachable.
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if is_ready(&state) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Prometheus text format. Gauges that are cheaper to read than to keep current are set
/// here: readiness, the authenticated sessions of each app, and (in memory) the canary.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    state.metrics.ready.set(i64::from(is_ready(&state)));
    if state.config.broker.kind == crate::config::BrokerKind::Memory {
        // In one process there is no stream between publish and delivery to go stale.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        state.metrics.broker_canary_timestamp.set(now);
    }
    for app in &state.config.apps {
        let n = state.limits.sessions_of(&app.id);
        state.metrics.set_sessions(app.id.as_str(), n);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
