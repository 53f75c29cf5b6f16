//! `sealcast_http_request_duration_seconds{route,status}`: one observation per request,
//! labelled with a fixed route name (never the raw path, so the series stay bounded).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// The metric's route name for a request path (the routers match paths exactly);
/// anything else (404s) is `other`.
pub fn route_name(path: Option<&str>) -> &'static str {
    match path {
        Some("/v1/ws") => "ws",
        Some("/v1/publish") => "publish",
        Some("/v1/publish/batch") => "publish_batch",
        Some("/v1/revoke") => "revoke",
        Some("/healthz") => "healthz",
        Some("/readyz") => "readyz",
        Some("/metrics") => "metrics",
        _ => "other",
    }
}

/// Times the request until its response head is ready (for a WebSocket, the 101).
pub async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_name(Some(req.uri().path()));
    let response = next.run(req).await;
    state
        .metrics
        .http_request(route, response.status().as_u16(), started);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_name_is_preregistered() {
        for path in [
            "/v1/ws",
            "/v1/publish",
            "/v1/publish/batch",
            "/v1/revoke",
            "/healthz",
            "/readyz",
            "/metrics",
            "/nope",
        ] {
            let name = route_name(Some(path));
            assert!(crate::telemetry::ROUTES.contains(&name), "{path}");
        }
        assert_eq!(route_name(None), "other");
    }
}
