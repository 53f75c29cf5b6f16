//! Logs and metrics.
//!
//! Logs go to stderr through `tracing`; audit records use the target `audit` with
//! structured fields. Nothing here ever formats a token, a secret or a payload: the types
//! that hold them redact themselves, and no call site passes them.
//!
//! Metrics are one [`Metrics`] struct of `prometheus-client` handles (each an atomic),
//! shared by `Arc`, rendered at `GET /metrics`.

mod labels;
mod process;

pub use labels::*;

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The commit the binary was built from: `SEALCAST_COMMIT` at build time (the Dockerfile
/// passes it), else `unknown`.
pub const COMMIT: &str = match option_env!("SEALCAST_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// Latency buckets from 100 µs to ~13 s (doubling): a delivery on a quiet node takes
/// well under a millisecond, one behind a slow consumer's backlog seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the relay.
#[derive(Debug)]
pub struct Metrics {
    /// Open WebSocket sessions (authenticated or not).
    pub connections: Gauge,
    /// WebSocket sessions ever accepted.
    pub connections_total: Counter,
    /// Authenticated sessions per app (refreshed from the limits' counts at each scrape).
    pub sessions: Family<AppLabel, Gauge>,
    /// Sessions closed, by close code name.
    pub disconnects: Family<CodeLabel, Counter>,
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
    pub token_rejections: Family<ReasonLabel, Counter>,
    /// Requests refused for reaching outside the token's namespace.
    pub forbidden: Counter,
    /// Times a limit was reached, by limit name.
    pub limits: Family<LimitLabel, Counter>,
    /// HTTP API requests refused, by error code.
    pub http_errors: Family<CodeLabel, Counter>,
    /// 1 while the broker can serve (always, in memory; on Redis, while it listens).
    pub broker_up: Gauge,
    /// Broker operations that failed (Redis unreachable or too slow).
    pub broker_errors: Counter,
    /// Times the broker's ordered stream was lost (Redis pub/sub connection), each closing
    /// every local subscriber with 1011.
    pub broker_disconnects: Counter,
    /// Messages on the broker's pub/sub channels that did not parse (another writer on
    /// the channel), skipped.
    pub broker_malformed_messages: Counter,
    /// The last canary round trip through each Redis Cluster shard, in microseconds, by
    /// shard primary (`host:port`); a shard whose canary stops makes the relay not ready.
    pub broker_shard_canary_rtt: Family<ShardLabel, Gauge<f64, AtomicU64>>,
    /// TLS handshakes in progress (bounded by `tls.max_handshakes`).
    pub tls_handshakes: Gauge,
    /// TLS handshakes completed, by kind (`full`, `resumed`).
    pub tls_handshakes_completed: Family<KindLabel, Counter>,
    /// TLS sessions held in the session-ID cache (bounded by `tls.session_cache_size`).
    pub tls_session_cache_entries: Gauge,
    /// Live revocations held by this node (bounded per app by
    /// `limits.max_revocations_per_app`).
    pub revocations: Gauge,
    /// Publish accepted (the frame encoded on this node) to frame written to the socket,
    /// sampled: once per outbox flush, for its oldest frame.
    pub delivery_latency: Histogram,
    /// HTTP request duration by route and status (for `ws`, until the 101 answer).
    pub http_requests: HistogramFamily<RouteLabels>,
    /// WebSocket upgrade answered to token verified, for sessions that authenticate.
    pub ws_auth_duration: Histogram,
    /// 1 while the relay reports ready (0 from the start of a drain).
    pub ready: Gauge,
    /// When this node's broker canary last came back (unix seconds; in memory, the time
    /// of the scrape: there is no stream to go stale).
    pub broker_canary_timestamp: Gauge<f64, AtomicU64>,
    /// The last canary's round trip through the broker, seconds.
    pub broker_canary_rtt: Gauge<f64, AtomicU64>,
    /// Configured ceilings, by limit (`connections`, `history_bytes`, `channels`), so that
    /// alerts compare a gauge with its ceiling without repeating the config.
    pub ceilings: Family<LimitLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            sessions: Family::default(),
            disconnects: Family::default(),
            subscriptions: Gauge::default(),
            channels: Gauge::default(),
            publications: Counter::default(),
            idempotent_repeats: Counter::default(),
            deliveries: Counter::default(),
            replayed: Counter::default(),
            history_bytes: Gauge::default(),
            token_rejections: Family::default(),
            forbidden: Counter::default(),
            limits: Family::default(),
            http_errors: Family::default(),
            broker_up: Gauge::default(),
            broker_errors: Counter::default(),
            broker_disconnects: Counter::default(),
            broker_malformed_messages: Counter::default(),
            delivery_latency: latency_histogram(),
            http_requests: Family::new_with_constructor(latency_histogram),
            ws_auth_duration: latency_histogram(),
            ready: Gauge::default(),
            ceilings: Family::default(),
            broker_canary_timestamp: Gauge::default(),
            broker_canary_rtt: Gauge::default(),
            broker_shard_canary_rtt: Family::default(),
            tls_handshakes: Gauge::default(),
            tls_handshakes_completed: Family::default(),
            tls_session_cache_entries: Gauge::default(),
            revocations: Gauge::default(),
        };
        // Every labelled family with its known values, so each series exists at 0 from
        // the start and `rate()` and `increase()` see its first event.
        for r in TOKEN_REASONS {
            let _ = m.token_rejections.get_or_create(&ReasonLabel {
                reason: (*r).into(),
            });
        }
        for l in LIMITS {
            let _ = m.limits.get_or_create(&LimitLabel { limit: (*l).into() });
        }
        for k in TLS_HANDSHAKE_KINDS {
            let _ = m
                .tls_handshakes_completed
                .get_or_create(&KindLabel { kind: k });
        }
        for c in disconnect_codes() {
            let _ = m.disconnects.get_or_create(&CodeLabel { code: c.into() });
        }
        for c in HTTP_ERROR_CODES {
            let _ = m
                .http_errors
                .get_or_create(&CodeLabel { code: (*c).into() });
        }
        for r in ROUTES {
            let status = match *r {
                "ws" => 101,
                "other" => 404,
                _ => 200,
            };
            let _ = m
                .http_requests
                .get_or_create(&RouteLabels { route: r, status });
        }
        m
    }
}

impl Metrics {
    /// Counts a limit being reached.
    pub fn limit_hit(&self, limit: &str) {
        self.limit_hits(limit, 1);
    }

    /// Counts a limit being reached `n` times.
    pub fn limit_hits(&self, limit: &str, n: u64) {
        self.limits
            .get_or_create(&LimitLabel {
                limit: limit.into(),
            })
            .inc_by(n);
    }

    /// Counts a token refusal.
    pub fn token_rejected(&self, reason: &str) {
        self.token_rejections
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a completed TLS handshake: `resumed` or `full`.
    pub fn tls_handshake_completed(&self, resumed: bool) {
        let kind = if resumed { "resumed" } else { "full" };
        self.tls_handshakes_completed
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// Counts a closed session.
    pub fn disconnected(&self, code: &str) {
        self.disconnects
            .get_or_create(&CodeLabel { code: code.into() })
            .inc();
    }

    /// Counts an HTTP error answer.
    pub fn http_error(&self, code: &str) {
        self.http_errors
            .get_or_create(&CodeLabel { code: code.into() })
            .inc();
    }

    /// Records one HTTP request.
    pub fn http_request(&self, route: &'static str, status: u16, started: Instant) {
        self.http_requests
            .get_or_create(&RouteLabels { route, status })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Records a configured ceiling (`sealcast_limit{limit}`).
    pub fn set_ceiling(&self, limit: &str, value: usize) {
        self.ceilings
            .get_or_create(&LimitLabel {
                limit: limit.into(),
            })
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }

    /// Registers the per-app series of each configured app at 0.
    pub fn register_apps<'a>(&self, apps: impl IntoIterator<Item = &'a str>) {
        for app in apps {
            let _ = self.sessions.get_or_create(&AppLabel { app: app.into() });
        }
    }

    /// Sets the authenticated sessions of one app.
    pub fn set_sessions(&self, app: &str, n: usize) {
        self.sessions
            .get_or_create(&AppLabel { app: app.into() })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A registry holding clones of every handle, for rendering: the relay's own metrics
    /// under `sealcast_`, and the conventional `process_*` ones.
    pub fn registry(&self) -> Registry {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let r = root.sub_registry_with_prefix("sealcast");
        r.register(
            "build",
            "The running build",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: COMMIT,
            }),
        );
        r.register(
            "ready",
            "1 while the relay reports ready",
            self.ready.clone(),
        );
        r.register(
            "limit",
            "Configured ceilings, by limit",
            self.ceilings.clone(),
        );
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
            "sessions",
            "Authenticated sessions, by app",
            self.sessions.clone(),
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
            "broker_malformed_messages",
            "Broker pub/sub messages that did not parse, skipped",
            self.broker_malformed_messages.clone(),
        );
        r.register(
            "broker_shard_canary_rtt_seconds",
            "Last canary round trip through each Redis Cluster shard",
            self.broker_shard_canary_rtt.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes in progress",
            self.tls_handshakes.clone(),
        );
        r.register(
            "tls_handshakes_completed",
            "TLS handshakes completed, by kind (full, resumed)",
            self.tls_handshakes_completed.clone(),
        );
        r.register(
            "tls_session_cache_entries",
            "TLS sessions held in the session-ID cache",
            self.tls_session_cache_entries.clone(),
        );
        r.register(
            "revocations",
            "Live revocations held",
            self.revocations.clone(),
        );
        r.register(
            "broker_canary_timestamp_seconds",
            "When this node's broker canary last came back, unix seconds",
            self.broker_canary_timestamp.clone(),
        );
        r.register(
            "broker_canary_rtt_seconds",
            "The last broker canary's round trip",
            self.broker_canary_rtt.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "Publish accepted to frame written (sampled: the oldest frame of each write)",
            self.delivery_latency.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request duration, by route and status",
            self.http_requests.clone(),
        );
        r.register(
            "ws_auth_duration_seconds",
            "WebSocket upgrade answered to connect token verified",
            self.ws_auth_duration.clone(),
        );
        root
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
