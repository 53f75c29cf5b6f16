//! Label sets of the relay's metric families, and the label values known at start (each
//! family is registered with them so its series exist at 0 before the first event).

use prometheus_client::encoding::EncodeLabelSet;

/// Why a token was refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The refusal reason (`TokenError::label`, or `missing`, `revoked`, `auth_timeout`).
    pub reason: String,
}

/// Which limit was reached.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// The limit's name.
    pub limit: String,
}

/// A close code or an HTTP API error code, by its stable name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The code's name (`slow_consumer`, `rate_limited`, `unavailable`, ...).
    pub code: String,
}

/// One Redis Cluster shard, by its primary's address.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    /// `host:port` of the shard's primary.
    pub shard: String,
}

/// One configured app.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    /// The app id (bounded: apps come from the config).
    pub app: String,
}

/// An HTTP route and the status answered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route ([`ROUTES`]).
    pub route: &'static str,
    /// The status code.
    pub status: u16,
}

/// What kind of thing happened (`sealcast_tls_handshakes_completed_total{kind}`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// One of a fixed set ([`TLS_HANDSHAKE_KINDS`]).
    pub kind: &'static str,
}

/// TLS handshake kinds: a full handshake (with a HelloRetryRequest or not), or a session
/// resumed from a ticket or the session cache.
pub const TLS_HANDSHAKE_KINDS: &[&str] = &["full", "resumed"];

/// What `sealcast_build_info` says.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub(super) version: &'static str,
    pub(super) commit: &'static str,
}

/// Token refusal reasons known at start, so `sealcast_token_rejections_total` shows each
/// at 0 before the first refusal (a rate over a series that appears late misses its start).
pub const TOKEN_REASONS: &[&str] = &[
    "missing",
    "too_large",
    "malformed",
    "unsupported_algorithm",
    "bad_type",
    "unknown_app",
    "unknown_key",
    "bad_signature",
    "missing_claim",
    "invalid_claim",
    "wrong_audience",
    "expired",
    "issued_in_future",
    "lifetime_too_long",
    "not_yet_valid",
    "critical_header",
    "revoked",
    "auth_timeout",
];

/// Limits known at start (`sealcast_limit_hits_total{limit}`).
pub const LIMITS: &[&str] = &[
    "channels",
    "history_bytes",
    "subscriptions_per_connection",
    "write_timeout",
    "outbound_queue",
    "http_body_bytes",
    "payload_bytes",
    "batch_size",
    "connections",
    "connections_per_app",
    "connections_per_namespace",
    "connect_rate_per_ip",
    "publish_rate_per_app",
    "origin",
    "revocations",
    "revocations_per_app",
    "revoke_rate_per_app",
    "channels_per_app",
    "history_bytes_per_app",
    "subscribe_rate_per_connection",
    "tls_handshakes",
    "tls_session_cache",
    "http_body_read_timeout",
];

/// How sessions end (`sealcast_disconnects_total{code}`): every close code's name, and
/// `client_closed`.
pub fn disconnect_codes() -> impl Iterator<Item = &'static str> {
    crate::protocol::CloseCode::ALL
        .into_iter()
        .map(|c| c.name())
        .chain(["broker_unavailable", "client_closed"])
}

/// HTTP API error codes (`sealcast_http_errors_total{code}`).
pub const HTTP_ERROR_CODES: &[&str] = &[
    "bad_request",
    "unauthorized",
    "forbidden",
    "payload_too_large",
    "unsupported_media_type",
    "rate_limited",
    "unavailable",
];

/// Routes of `sealcast_http_request_duration_seconds`; `other` is anything unrouted (404).
pub const ROUTES: &[&str] = &[
    "ws",
    "publish",
    "publish_batch",
    "revoke",
    "healthz",
    "readyz",
    "metrics",
    "other",
];
