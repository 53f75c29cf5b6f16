//! Logs and metrics.
//!
//! Logs go to stderr through `tracing`; audit records use the target `audit` with
//! structured fields. Nothing here ever formats a token, a secret or a payload: the types
//! that hold them redact themselves, and no call site passes them.
//!
//! Metrics are one [`Metrics`] struct of `prometheus-client` handles (each an atomic),
//! shared by `Arc`, rendered at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A single `name` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    /// The label value.
    pub name: String,
}

/// Every metric of the relay.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket sessions (authenticated or not).
    pub connections: Gauge,
    /// WebSocket sessions ever accepted.
    pub connections_total: Counter,
    /// Sessions closed, by close code name.
    pub disconnects: Family<NameLabel, Counter>,
    /// Live subscriptions.
    pub subscriptions: Gauge,
    /// Channels with state.
    pub channels: Gauge,
    /// Publications accepted.
    pub publications: Counter,
    /// Publications repeated under an idempotency key (nothing published).
    pub idempotent_repeats: Counter,
    /// Frames queued to subscribers (live deliveries).
    pub deliveries: Counter,
    /// Frames replayed from history on recovery.
    pub replayed: Counter,
    /// Bytes of history held.
    pub history_bytes: Gauge,
    /// Tokens refused, by reason.
    pub token_rejections: Family<NameLabel, Counter>,
    /// Requests refused for reaching outside the token's namespace.
    pub forbidden: Counter,
    /// Times a limit was reached, by limit name.
    pub limits: Family<NameLabel, Counter>,
    /// HTTP API requests refused, by error code.
    pub http_errors: Family<NameLabel, Counter>,
    /// 1 while the broker can serve (always, in memory; on Redis, while it listens).
    pub broker_up: Gauge,
    /// Broker operations that failed (Redis unreachable or too slow).
    pub broker_errors: Counter,
    /// Times the broker's ordered stream was lost (Redis pub/sub connection), each closing
    /// every local subscriber with 1011.
    pub broker_disconnects: Counter,
    /// The last canary round trip through each Redis Cluster shard, in microseconds, by
    /// shard primary (`host:port`); a shard whose canary stops makes the relay not ready.
    pub broker_canary_rtt_us: Family<NameLabel, Gauge>,
    /// TLS handshakes in progress (bounded by `tls.max_handshakes`).
    pub tls_handshakes: Gauge,
    /// Live revocations held by this node (bounded per app by
    /// `limits.max_revocations_per_app`).
    pub revocations: Gauge,
}

impl Metrics {
    /// Counts a limit being reached.
    pub fn limit_hit(&self, limit: &str) {
        self.limits
            .get_or_create(&NameLabel { name: limit.into() })
            .inc();
    }

    /// Counts a token refusal.
    pub fn token_rejected(&self, reason: &str) {
        self.token_rejections
            .get_or_create(&NameLabel {
                name: reason.into(),
            })
            .inc();
    }

    /// Counts a closed session.
    pub fn disconnected(&self, code: &str) {
        self.disconnects
            .get_or_create(&NameLabel { name: code.into() })
            .inc();
    }

    /// Counts an HTTP error answer.
    pub fn http_error(&self, code: &str) {
        self.http_errors
            .get_or_create(&NameLabel { name: code.into() })
            .inc();
    }

    /// A registry holding clones of every handle, for rendering.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("sealcast");
        r.register(
            "connections",
            "Open WebSocket sessions",
            self.connections.clone(),
        );
        r.register(
            "connections_accepted",
            "WebSocket sessions accepted",
            self.connections_total.clone(),
        );
        r.register(
            "disconnects",
            "Sessions closed, by close code",
            self.disconnects.clone(),
        );
        r.register(
            "subscriptions",
            "Live subscriptions",
            self.subscriptions.clone(),
        );
        r.register("channels", "Channels with state", self.channels.clone());
        r.register(
            "publications",
            "Publications accepted",
            self.publications.clone(),
        );
        r.register(
            "idempotent_repeats",
            "Publishes answered from an idempotency key",
            self.idempotent_repeats.clone(),
        );
        r.register(
            "deliveries",
            "Frames queued to live subscribers",
            self.deliveries.clone(),
        );
        r.register(
            "replayed",
            "Frames replayed from history",
            self.replayed.clone(),
        );
        r.register(
            "history_bytes",
            "Bytes of history held",
            self.history_bytes.clone(),
        );
        r.register(
            "token_rejections",
            "Tokens refused, by reason",
            self.token_rejections.clone(),
        );
        r.register(
            "forbidden",
            "Requests outside the token's namespace",
            self.forbidden.clone(),
        );
        r.register(
            "limit_hits",
            "Times a limit was reached, by limit",
            self.limits.clone(),
        );
        r.register(
            "http_errors",
            "HTTP API errors, by code",
            self.http_errors.clone(),
        );
        r.register(
            "broker_up",
            "1 while the broker can serve",
            self.broker_up.clone(),
        );
        r.register(
            "broker_errors",
            "Broker operations that failed",
            self.broker_errors.clone(),
        );
        r.register(
            "broker_disconnects",
            "Times the broker's ordered stream was lost",
            self.broker_disconnects.clone(),
        );
        r.register(
            "broker_canary_rtt_us",
            "Last canary round trip through each Redis Cluster shard (microseconds)",
            self.broker_canary_rtt_us.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes in progress",
            self.tls_handshakes.clone(),
        );
        r.register(
            "revocations",
            "Live revocations held",
            self.revocations.clone(),
        );
        r
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry());
        out
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber, writing to stderr. `RUST_LOG` overrides the
/// default filter (`info`). Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Libraries that see raw frames and headers log them at debug and trace (tungstenite
    // logs every received message, connect tokens included). Cap them whatever RUST_LOG
    // says: a token or payload must never reach a log, even while debugging.
    for capped in [
        "tungstenite=info",
        "tokio_tungstenite=info",
        "hyper=info",
        "hyper_util=info",
        "h2=info",
    ] {
        if let Ok(d) = capped.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
