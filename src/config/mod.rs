//! Configuration: a TOML file, read and checked once at start.
//!
//! Every limit has a default here and a key in the file; the README's reference lists
//! them. Secrets are never inline: each key names an environment variable or a file, and
//! a secret under 32 bytes, a duplicate app or key id, or an unknown key refuses to start
//! with a message that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Secret, TokenPolicy};
use crate::hub::{HubConfig, OutboxLimits};

mod secrets;
mod sections;
use crate::protocol::AppId;
use crate::telemetry::LogFormat;
use secrets::{load_secret, redis_seeds, redis_url, sentinel_urls};
pub use sections::{
    BrokerConfig, BrokerKind, HistoryConfig, HttpConfig, LimitsConfig, RevocationConfig,
    ShutdownConfig, TlsConfig, TokensConfig, WebSocketConfig,
};

/// The shortest accepted app secret.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("config: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value outside its rules.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// The dotted key path.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    kid: String,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    id: String,
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    max_channels: Option<usize>,
    #[serde(default)]
    max_history_bytes: Option<usize>,
    #[serde(default)]
    max_revocations: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default)]
    admin_listen: Option<SocketAddr>,
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default)]
    websocket: WebSocketConfig,
    #[serde(default)]
    history: HistoryConfig,
    #[serde(default)]
    tokens: TokensConfig,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    shutdown: ShutdownConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    revocation: RevocationConfig,
    #[serde(default)]
    broker: BrokerConfig,
    #[serde(default)]
    tls: Option<TlsConfig>,
    #[serde(default)]
    allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    apps: Vec<RawApp>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// One signing key of an app.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// Key id, matched against the token header's `kid`.
    pub kid: String,
    /// The secret.
    pub secret: Secret,
}

/// One app.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// App id, matched against `iss`.
    pub id: AppId,
    /// Active keys.
    pub keys: Vec<KeyConfig>,
    /// This app's overrides of the per-app quotas of `[limits]` (`max_channels`,
    /// `max_history_bytes`, `max_revocations` in its `[[apps]]` table).
    pub quota: crate::quota::QuotaOverride,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address (`SEALCAST_LISTEN` overrides).
    pub listen: SocketAddr,
    /// Where `/metrics` is served (`/healthz` and `/readyz` are served on both listeners);
    /// `None`: no admin listener, and `/metrics` only on `listen` with
    /// `http.public_metrics`. `SEALCAST_ADMIN_LISTEN` overrides.
    pub admin_listen: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Sessions.
    pub websocket: WebSocketConfig,
    /// History.
    pub history: HistoryConfig,
    /// Token rules.
    pub tokens: TokensConfig,
    /// HTTP API.
    pub http: HttpConfig,
    /// Shutdown timings.
    pub shutdown: ShutdownConfig,
    /// Connection and rate limits.
    pub limits: LimitsConfig,
    /// Revocation bookkeeping.
    pub revocation: RevocationConfig,
    /// The broker (`[broker]`).
    pub broker: BrokerConfig,
    /// The Redis URL, resolved from `redis_url` or `redis_url_env` when the broker is
    /// Redis (a secret: it may carry a password).
    pub redis_url: Option<Secret>,
    /// The Redis Cluster seed nodes (`kind = "redis-cluster"`), resolved from `redis_urls`,
    /// `redis_urls_env`, `redis_urls_file`, or one of the `redis_url` keys (secrets: they
    /// may carry a password).
    pub redis_seeds: Vec<Secret>,
    /// The sentinels (`kind = "redis-sentinel"`), from `sentinel_urls`, `_env` or `_file`
    /// (secrets: they may carry a password, also used for the primary).
    pub sentinel_urls: Vec<Secret>,
    /// TLS; `None` serves plain HTTP/WS (behind a TLS-terminating ingress).
    pub tls: Option<TlsConfig>,
    /// Origins allowed to open a WebSocket; `None` allows all (with a start-up warning).
    pub allowed_origins: Option<Vec<String>>,
    /// Apps and their keys.
    pub apps: Vec<AppConfig>,
    /// The file this was read from, for reloads (`None` when built in code).
    pub source: Option<PathBuf>,
    /// Dev mode (`serve --dev`): a refused token's exact reason goes to the client too (in
    /// the close reason and the 401 message), not only to the audit log.
    pub dev: bool,
}

impl Config {
    /// Reads and validates a config file; secrets come from the process environment or
    /// their files; `SEALCAST_LISTEN` overrides `listen`, `SEALCAST_ADMIN_LISTEN`
    /// `admin_listen`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text, |var| std::env::var_os(var))?;
        config.source = Some(path.to_owned());
        if let Some(listen) = std::env::var_os("SEALCAST_LISTEN") {
            let listen = listen.to_string_lossy();
            config.listen = listen.parse().map_err(|_| {
                invalid(
                    "SEALCAST_LISTEN",
                    "not a socket address like 127.0.0.1:8080",
                )
            })?;
        }
        if let Some(admin) = std::env::var_os("SEALCAST_ADMIN_LISTEN") {
            let admin = admin.to_string_lossy();
            config.admin_listen = Some(admin.parse().map_err(|_| {
                invalid(
                    "SEALCAST_ADMIN_LISTEN",
                    "not a socket address like 127.0.0.1:9090",
                )
            })?);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates TOML text, with `env` resolving `secret_env` names.
    pub fn parse(
        text: &str,
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text)?;
        // Whether the operator chose max_connections, so that start-up only warns about a
        // file limit below a value someone asked for (the default is not a request).
        raw.limits.max_connections_explicit = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("limits")?.get("max_connections").cloned())
            .is_some();
        let mut apps: Vec<AppConfig> = Vec::with_capacity(raw.apps.len());
        for (i, app) in raw.apps.into_iter().enumerate() {
            let at = format!("apps[{i}].id");
            let id = AppId::parse(&app.id).map_err(|e| invalid(&at, e.to_string()))?;
            if apps.iter().any(|a| a.id == id) {
                return Err(invalid(at, format!("duplicate app id {id:?}")));
            }
            if app.keys.is_empty() {
                return Err(invalid(
                    format!("apps[{i}].keys"),
                    "an app needs at least one key",
                ));
            }
            let mut keys: Vec<KeyConfig> = Vec::with_capacity(app.keys.len());
            for (j, key) in app.keys.into_iter().enumerate() {
                let at = format!("apps[{i}].keys[{j}]");
                if key.kid.is_empty() || key.kid.len() > 64 {
                    return Err(invalid(format!("{at}.kid"), "must be 1 to 64 bytes"));
                }
                if keys.iter().any(|k| k.kid == key.kid) {
                    return Err(invalid(
                        format!("{at}.kid"),
                        format!("duplicate kid {:?} in app {id:?}", key.kid),
                    ));
                }
                let secret = load_secret(&at, &key, &env)?;
                keys.push(KeyConfig {
                    kid: key.kid,
                    secret,
                });
            }
            let quota = crate::quota::QuotaOverride {
                max_channels: app.max_channels,
                max_history_bytes: app.max_history_bytes,
                max_revocations: app.max_revocations,
            };
            for (key, value) in [
                ("max_channels", quota.max_channels),
                ("max_history_bytes", quota.max_history_bytes),
                ("max_revocations", quota.max_revocations),
            ] {
                if value == Some(0) {
                    return Err(invalid(format!("apps[{i}].{key}"), "must be at least 1"));
                }
            }
            apps.push(AppConfig { id, keys, quota });
        }
        let config = Config {
            listen: raw.listen,
            admin_listen: raw.admin_listen,
            log_format: raw.log_format,
            websocket: raw.websocket,
            history: raw.history,
            tokens: raw.tokens,
            http: raw.http,
            shutdown: raw.shutdown,
            limits: raw.limits,
            revocation: raw.revocation,
            redis_url: redis_url(&raw.broker, &env)?,
            redis_seeds: redis_seeds(&raw.broker, &env)?,
            sentinel_urls: sentinel_urls(&raw.broker, &env)?,
            broker: raw.broker,
            tls: raw.tls,
            allowed_origins: raw.allowed_origins,
            apps,
            source: None,
            dev: false,
        };
        config.validate()?;
        Ok(config)
    }

    /// A config with every default and the given apps, listening on `listen`.
    pub fn with_apps(listen: SocketAddr, apps: Vec<AppConfig>) -> Config {
        Config {
            listen,
            admin_listen: None,
            log_format: LogFormat::default(),
            websocket: WebSocketConfig::default(),
            history: HistoryConfig::default(),
            tokens: TokensConfig::default(),
            http: HttpConfig::default(),
            shutdown: ShutdownConfig::default(),
            limits: LimitsConfig::default(),
            revocation: RevocationConfig::default(),
            broker: BrokerConfig::default(),
            redis_url: None,
            redis_seeds: Vec::new(),
            sentinel_urls: Vec::new(),
            tls: None,
            allowed_origins: None,
            apps,
            source: None,
            dev: false,
        }
    }

    /// Checks every rule that is not a type rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, d: Duration| {
            if d.is_zero() {
                Err(invalid(key, "must be more than zero"))
            } else {
                Ok(())
            }
        };
        let nonzero = |key: &str, n: usize| {
            if n == 0 {
                Err(invalid(key, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        let ws = &self.websocket;
        positive("websocket.auth_timeout", ws.auth_timeout)?;
        positive("websocket.ping_interval", ws.ping_interval)?;
        positive("websocket.idle_timeout", ws.idle_timeout)?;
        positive("websocket.write_timeout", ws.write_timeout)?;
        if ws.max_frame_bytes < 1024 {
            return Err(invalid(
                "websocket.max_frame_bytes",
                "must be at least 1024 (a token alone may take 4096)",
            ));
        }
        nonzero("websocket.outbound_queue_frames", ws.outbound_queue_frames)?;
        nonzero("websocket.max_subscriptions", ws.max_subscriptions)?;
        if ws.outbound_queue_bytes < self.http.max_payload_bytes * 2 {
            return Err(invalid(
                "websocket.outbound_queue_bytes",
                "must hold at least one largest publication (2 x http.max_payload_bytes)",
            ));
        }
        let h = &self.history;
        positive("history.ttl", h.ttl)?;
        nonzero("history.max_per_channel", h.max_per_channel)?;
        nonzero("history.max_bytes", h.max_bytes)?;
        nonzero("history.max_channels", h.max_channels)?;
        positive("history.channel_state_ttl", h.channel_state_ttl)?;
        let t = &self.tokens;
        if t.leeway > Duration::from_secs(30) {
            return Err(invalid("tokens.leeway", "must be at most 30s"));
        }
        if t.max_connect_lifetime > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                "tokens.max_connect_lifetime",
                "must be at most 24h",
            ));
        }
        positive("tokens.max_connect_lifetime", t.max_connect_lifetime)?;
        if t.max_publish_lifetime > Duration::from_secs(300) {
            return Err(invalid(
                "tokens.max_publish_lifetime",
                "must be at most 300s",
            ));
        }
        positive("tokens.max_publish_lifetime", t.max_publish_lifetime)?;
        let p = &self.http;
        if p.max_payload_bytes < 28 {
            return Err(invalid(
                "http.max_payload_bytes",
                "must be at least 28 (nonce and tag)",
            ));
        }
        nonzero("http.max_body_bytes", p.max_body_bytes)?;
        nonzero("http.max_batch", p.max_batch)?;
        positive("http.header_read_timeout", p.header_read_timeout)?;
        positive("http.body_read_timeout", p.body_read_timeout)?;
        for (i, entry) in p.trusted_proxies.iter().enumerate() {
            crate::http::proxy::parse_entry(entry)
                .map_err(|problem| invalid(format!("http.trusted_proxies[{i}]"), problem))?;
        }
        if self.shutdown.grace < self.shutdown.drain {
            return Err(invalid("shutdown.grace", "must be at least shutdown.drain"));
        }
        let l = &self.limits;
        nonzero("limits.max_connections", l.max_connections)?;
        nonzero("limits.max_connections_per_app", l.max_connections_per_app)?;
        nonzero(
            "limits.max_connections_per_namespace",
            l.max_connections_per_namespace,
        )?;
        nonzero("limits.connect_rate_per_ip", l.connect_rate_per_ip as usize)?;
        nonzero(
            "limits.connect_burst_per_ip",
            l.connect_burst_per_ip as usize,
        )?;
        nonzero(
            "limits.publish_rate_per_app",
            l.publish_rate_per_app as usize,
        )?;
        nonzero(
            "limits.publish_burst_per_app",
            l.publish_burst_per_app as usize,
        )?;
        nonzero("limits.max_channels_per_app", l.max_channels_per_app)?;
        nonzero(
            "limits.max_history_bytes_per_app",
            l.max_history_bytes_per_app,
        )?;
        nonzero("limits.max_revocations_per_app", l.max_revocations_per_app)?;
        nonzero("limits.revoke_rate_per_app", l.revoke_rate_per_app as usize)?;
        nonzero(
            "limits.revoke_burst_per_app",
            l.revoke_burst_per_app as usize,
        )?;
        nonzero(
            "limits.subscribe_rate_per_connection",
            l.subscribe_rate_per_connection as usize,
        )?;
        nonzero(
            "limits.subscribe_burst_per_connection",
            l.subscribe_burst_per_connection as usize,
        )?;
        nonzero("revocation.max_entries", self.revocation.max_entries)?;
        if let Some(tls) = &self.tls {
            positive("tls.reload_interval", tls.reload_interval)?;
            nonzero("tls.max_handshakes", tls.max_handshakes)?;
            positive("tls.client_hello_timeout", tls.client_hello_timeout)?;
            if tls.handshake_timeout < tls.client_hello_timeout {
                return Err(invalid(
                    "tls.handshake_timeout",
                    "must be at least tls.client_hello_timeout",
                ));
            }
        }
        if let Some(origins) = &self.allowed_origins {
            for (i, o) in origins.iter().enumerate() {
                crate::http::origin::OriginPattern::parse(o)
                    .map_err(|problem| invalid(format!("allowed_origins[{i}]"), problem))?;
            }
        }
        let prefix = &self.broker.prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                "broker.prefix",
                "must be 1 to 64 of [A-Za-z0-9._-]",
            ));
        }
        if self
            .admin_listen
            .is_some_and(|a| a == self.listen && a.port() != 0)
        {
            return Err(invalid(
                "admin_listen",
                "must differ from listen (the admin endpoints need a listener of their own)",
            ));
        }
        if self.apps.is_empty() {
            return Err(invalid(
                "apps",
                "no app configured: add an [[apps]] table with a key",
            ));
        }
        Ok(())
    }

    /// The hub's part.
    pub fn hub(&self) -> HubConfig {
        HubConfig {
            history_ttl: self.history.ttl,
            max_per_channel: self.history.max_per_channel,
            max_history_bytes: self.history.max_bytes,
            max_channels: self.history.max_channels,
            channel_state_ttl: self.history.channel_state_ttl,
        }
    }

    /// The token rules.
    pub fn token_policy(&self) -> TokenPolicy {
        TokenPolicy {
            leeway: self.tokens.leeway,
            max_connect_lifetime: self.tokens.max_connect_lifetime,
            max_publish_lifetime: self.tokens.max_publish_lifetime,
        }
    }

    /// One session's outbound queue bounds.
    pub fn outbox(&self) -> OutboxLimits {
        OutboxLimits {
            max_frames: self.websocket.outbound_queue_frames,
            max_bytes: self.websocket.outbound_queue_bytes,
        }
    }
}

#[cfg(test)]
mod tests;
