//! The HTTP surface: the publish API (PROTOCOL.md 4), the WebSocket endpoint, and the
//! operations endpoints. Handlers are thin: they turn requests into typed values, call the
//! broker, and map each error variant to its status.

mod batch;
pub mod error;
pub mod ops;
pub mod origin;
pub mod proxy;
pub mod publish;
pub mod revoke;
pub mod timing;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;
pub use error::ApiError;

/// The routes of the public listener. `/metrics` is among them only with
/// `[http] public_metrics = true` (set by `serve --dev`): its refusal reasons would
/// otherwise let anyone enumerate app ids and kids. `/healthz` and `/readyz` always are
/// (load balancers probe the public port, and they disclose nothing).
pub fn router(state: Arc<AppState>) -> Router {
    let public = Router::new()
        .route("/v1/ws", get(crate::ws::upgrade))
        .route("/v1/publish", post(publish::publish))
        .route("/v1/publish/batch", post(publish::publish_batch))
        .route("/v1/revoke", post(revoke::revoke))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    let public = if state.config.http.public_metrics {
        public.route("/metrics", get(ops::metrics))
    } else {
        public
    };
    public
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            timing::observe,
        ))
        .with_state(state)
}

/// The routes of the admin listener (`admin_listen`): operations only, for a private network
/// (Prometheus, probes), never the publish API or WebSockets.
pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            timing::observe,
        ))
        .with_state(state)
}
