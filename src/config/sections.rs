//! The typed sections of the configuration file, each with its defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::TokenPolicy;
use crate::hub::HubConfig;

/// `[websocket]`: sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Time allowed for the `connect` frame.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// Interval of WebSocket pings.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A session with no inbound traffic for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest client frame, bytes (a larger one closes with 1009).
    pub max_frame_bytes: usize,
    /// Most frames queued for one session before it is closed with 4008.
    pub outbound_queue_frames: usize,
    /// Most bytes queued for one session before it is closed with 4008.
    pub outbound_queue_bytes: usize,
    /// A write to a socket that takes longer than this closes the session with 4008.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Most channels one session may subscribe to.
    pub max_subscriptions: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            auth_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            max_frame_bytes: 16 * 1024,
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 4 << 20,
            write_timeout: Duration::from_secs(10),
            max_subscriptions: 256,
        }
    }
}

/// `[history]`: recovery window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// How long a publication is kept.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Most publications kept per channel.
    pub max_per_channel: usize,
    /// Most bytes of history over all channels.
    pub max_bytes: usize,
    /// Most channels with state at once.
    pub max_channels: usize,
    /// How long a quiet channel's epoch and last offset outlive its history.
    #[serde(with = "humantime_serde")]
    pub channel_state_ttl: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        let h = HubConfig::default();
        HistoryConfig {
            ttl: h.history_ttl,
            max_per_channel: h.max_per_channel,
            max_bytes: h.max_history_bytes,
            max_channels: h.max_channels,
            channel_state_ttl: h.channel_state_ttl,
        }
    }
}

/// `[tokens]`: time rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Clock-skew allowance, at most 30 s.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Longest connect token lifetime, at most 24 h.
    #[serde(with = "humantime_serde")]
    pub max_connect_lifetime: Duration,
    /// Longest publish token lifetime, at most 300 s.
    #[serde(with = "humantime_serde")]
    pub max_publish_lifetime: Duration,
}

impl Default for TokensConfig {
    fn default() -> Self {
        let p = TokenPolicy::default();
        TokensConfig {
            leeway: p.leeway,
            max_connect_lifetime: p.max_connect_lifetime,
            max_publish_lifetime: p.max_publish_lifetime,
        }
    }
}

/// `[http]`: the publish API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Largest decoded payload, bytes.
    pub max_payload_bytes: usize,
    /// Most publications in one batch.
    pub max_batch: usize,
    /// Time a client has to send a complete request head (slowloris bound); the
    /// connection is closed after it.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time an authenticated request has to deliver its whole body; a stalled body is
    /// answered 400 and the connection closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Proxies (addresses or networks) whose `X-Forwarded-For` names the client, for the
    /// per-IP connect limit and audit records; empty: the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// Serve `/metrics` on the public listener too. Off by default: its refusal reasons
    /// would let anyone probe which app ids and kids exist. `serve --dev` turns it on.
    pub public_metrics: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 4 << 20,
            max_payload_bytes: 64 * 1024,
            max_batch: 1000,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            public_metrics: false,
        }
    }
}

/// `[shutdown]`: drain order timings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Sessions are closed with 1001 at random moments over this window, so that clients
    /// do not all reconnect at once.
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
    /// Hard limit for the whole shutdown.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain: Duration::from_secs(5),
            grace: Duration::from_secs(15),
        }
    }
}

/// `[limits]`: connections and rates. Each limit has a metric
/// (`sealcast_limit_hits_total{limit=...}`) counting refusals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open WebSocket connections in total (authenticated or not); beyond: 503 before upgrade.
    pub max_connections: usize,
    /// Whether `max_connections` was set in the file (not a key: filled in by the parser).
    #[serde(skip)]
    pub max_connections_explicit: bool,
    /// Authenticated sessions per app; beyond: closed with 4029.
    pub max_connections_per_app: usize,
    /// Authenticated sessions per app and namespace; beyond: closed with 4029.
    pub max_connections_per_namespace: usize,
    /// WebSocket upgrade attempts per second per client IP (token bucket rate).
    pub connect_rate_per_ip: u32,
    /// Burst of upgrade attempts per client IP; beyond the bucket: 429 with Retry-After.
    pub connect_burst_per_ip: u32,
    /// Publications per second per app (a batch counts each item).
    pub publish_rate_per_app: u32,
    /// Burst of publications per app; beyond the bucket: 429 with Retry-After.
    pub publish_burst_per_app: u32,
    /// Channels with state per app (an `[[apps]]` table may set `max_channels`); a new
    /// channel beyond is refused (503 `unavailable`, frame error `limit_exceeded`).
    pub max_channels_per_app: usize,
    /// History bytes per app (an `[[apps]]` table may set `max_history_bytes`); beyond,
    /// the app's own oldest publications are evicted, never another app's.
    pub max_history_bytes_per_app: usize,
    /// Live revocations per app (an `[[apps]]` table may set `max_revocations`); beyond,
    /// a new one is refused with 503 and other apps are unaffected.
    pub max_revocations_per_app: usize,
    /// `POST /v1/revoke` requests per second per app (token bucket rate).
    pub revoke_rate_per_app: u32,
    /// Burst of revoke requests per app; beyond the bucket: 429 with Retry-After.
    pub revoke_burst_per_app: u32,
    /// `subscribe` frames per second per connection (token bucket rate).
    pub subscribe_rate_per_connection: u32,
    /// Burst of `subscribe` frames per connection; beyond: error `limit_exceeded`.
    pub subscribe_burst_per_connection: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 100_000,
            max_connections_explicit: false,
            max_connections_per_app: 100_000,
            max_connections_per_namespace: 10_000,
            connect_rate_per_ip: 200,
            connect_burst_per_ip: 400,
            publish_rate_per_app: 20_000,
            publish_burst_per_app: 40_000,
            max_channels_per_app: 100_000,
            max_history_bytes_per_app: 256 << 20,
            max_revocations_per_app: 10_000,
            revoke_rate_per_app: 100,
            revoke_burst_per_app: 100,
            subscribe_rate_per_connection: 20,
            subscribe_burst_per_connection: 256,
        }
    }
}

/// Which broker orders, stores and routes publications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// This process alone (the default): offsets and history in memory.
    #[default]
    Memory,
    /// Redis, shared by every relay node: clients may reconnect to any node and recover.
    Redis,
    /// Redis Cluster: channels spread over its shards, publications on sharded pub/sub.
    #[serde(rename = "redis-cluster")]
    RedisCluster,
    /// Redis primary and replicas under Sentinel: the relays follow failovers.
    #[serde(rename = "redis-sentinel")]
    RedisSentinel,
}

/// `[broker]`: one node in memory, or many nodes on Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// `memory`, `redis`, `redis-cluster` or `redis-sentinel`.
    pub kind: BrokerKind,
    /// Redis URL without credentials (`redis://host:6379/0`, `rediss://` for TLS).
    pub redis_url: Option<String>,
    /// Environment variable holding the Redis URL (a URL with a password may come from
    /// here, but it then stays readable in `/proc/<pid>/environ`: prefer `redis_url_file`).
    pub redis_url_env: Option<String>,
    /// File holding the Redis URL (the preferred way to give one with a password: a mounted
    /// secret, readable by the relay's user only).
    pub redis_url_file: Option<PathBuf>,
    /// Seed nodes of a Redis Cluster (`kind = "redis-cluster"`), without credentials.
    pub redis_urls: Option<Vec<String>>,
    /// Environment variable holding the seed nodes, separated by commas or whitespace.
    pub redis_urls_env: Option<String>,
    /// File holding the seed nodes, one per line (the way to give them with a password).
    pub redis_urls_file: Option<PathBuf>,
    /// Sentinels (`kind = "redis-sentinel"`), without credentials.
    pub sentinel_urls: Option<Vec<String>>,
    /// Environment variable holding the sentinels, separated by commas or whitespace.
    pub sentinel_urls_env: Option<String>,
    /// File holding the sentinels, one per line.
    pub sentinel_urls_file: Option<PathBuf>,
    /// The name the sentinels monitor the primary under.
    pub sentinel_master: Option<String>,
    /// Prefix of every Redis key and pub/sub channel of this relay cluster.
    pub prefix: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            kind: BrokerKind::Memory,
            redis_url: None,
            redis_url_env: None,
            redis_url_file: None,
            redis_urls: None,
            redis_urls_env: None,
            redis_urls_file: None,
            sentinel_urls: None,
            sentinel_urls_env: None,
            sentinel_urls_file: None,
            sentinel_master: None,
            prefix: "sealcast".into(),
        }
    }
}

/// `[revocation]`: `POST /v1/revoke` bookkeeping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// Most live revocations (by `sub` or `jti`); beyond, a new one is refused with 503.
    pub max_entries: usize,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            max_entries: 100_000,
        }
    }
}

/// `[tls]`: native TLS termination (rustls; TLS 1.2 with ECDHE and AEAD suites, and 1.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files are checked for changes (SIGHUP reloads at once).
    #[serde(default = "default_tls_reload", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Most TLS handshakes in progress at once; a connection beyond is closed at once
    /// (`sealcast_limit_hits_total{limit="tls_handshakes"}`). Accepting never waits on a
    /// handshake, so silent sockets cannot hold up other clients.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Time a new connection has to send its ClientHello before it is dropped.
    #[serde(default = "default_client_hello_timeout", with = "humantime_serde")]
    pub client_hello_timeout: Duration,
    /// Time for the whole handshake, ClientHello included.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Resume sessions from stateless tickets (TLS 1.3, and TLS 1.2 clients that ask):
    /// a reconnecting client skips the certificate signature. The ticket key is made at
    /// start, rotated every 6 hours and never leaves memory.
    #[serde(default = "default_true")]
    pub session_tickets: bool,
    /// Sessions remembered by ID, for TLS 1.2 clients without tickets (and for TLS 1.3
    /// when `session_tickets` is off); the oldest is forgotten first. 0 remembers none.
    #[serde(default = "default_session_cache_size")]
    pub session_cache_size: usize,
}

impl TlsConfig {
    /// A certificate and key with every other setting at its default.
    pub fn from_files(cert_file: PathBuf, key_file: PathBuf) -> TlsConfig {
        TlsConfig {
            cert_file,
            key_file,
            reload_interval: default_tls_reload(),
            max_handshakes: default_max_handshakes(),
            client_hello_timeout: default_client_hello_timeout(),
            handshake_timeout: default_handshake_timeout(),
            session_tickets: true,
            session_cache_size: default_session_cache_size(),
        }
    }
}

fn default_tls_reload() -> Duration {
    Duration::from_secs(10)
}

fn default_max_handshakes() -> usize {
    10_000
}

fn default_client_hello_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_session_cache_size() -> usize {
    10_000
}

fn default_true() -> bool {
    true
}
