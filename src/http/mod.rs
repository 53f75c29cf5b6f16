//! The HTTP surface: the publish API (PROTOCOL.md 4), the WebSocket endpoint, and the
//! operations endpoints. Handlers are thin: they turn requests into typed values, call the
//! broker, and map each error variant to its status.

pub mod error;
pub mod ops;
pub mod origin;
pub mod proxy;
pub mod publish;
pub mod revoke;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;
pub use error::ApiError;

/// Every route of the relay.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/ws", get(crate::ws::upgrade))
        .route("/v1/publish", post(publish::publish))
        .route("/v1/publish/batch", post(publish::publish_batch))
        .route("/v1/revoke", post(revoke::revoke))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .with_state(state)
}
