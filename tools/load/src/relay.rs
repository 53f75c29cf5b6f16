//! The relay under test: spawned from a generated config, or attached by pid. What `/proc`
//! says about it is in [`crate::procfs`] (re-exported here).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use std::io::BufRead;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sealcast_client::token::Signer;

use super::broker::Broker;
use super::tls::{self, TlsClient, TlsFiles};

pub use crate::procfs::{ProcSample, raise_fd_limit, reset_peak, sample};

/// The app id, key id and namespace the load tool uses.
pub const APP: &str = "load";
/// Key id of the generated secret.
pub const KID: &str = "k1";
/// Namespace of every channel the load tool uses.
pub const NS: &str = "load/bench";
/// Environment variable carrying the generated secret to a spawned relay.
pub const SECRET_ENV: &str = "SEALCAST_LOAD_SECRET";
/// The second app of the `noisy` scenario (the noisy neighbour), with key `k1`.
pub const NOISY_APP: &str = "noisy";
/// Namespace of the noisy app's channels.
pub const NOISY_NS: &str = "noisy/x";
/// Environment variable carrying the noisy app's secret.
pub const NOISY_SECRET_ENV: &str = "SEALCAST_LOAD_NOISY_SECRET";

/// Per-app limits of a two-app relay (the `noisy` scenario): unlike the other scenarios'
/// lifted limits, these are the ones a tenant really meets. Rates and bursts are
/// `[limits]` (the same for both apps); the quotas are the noisy app's own overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantLimits {
    /// `limits.publish_rate_per_app`, and its burst.
    pub publish_rate: u32,
    /// `limits.revoke_rate_per_app`.
    pub revoke_rate: u32,
    /// `limits.revoke_burst_per_app`.
    pub revoke_burst: u32,
    /// `limits.subscribe_rate_per_connection`.
    pub subscribe_rate: u32,
    /// `limits.subscribe_burst_per_connection`.
    pub subscribe_burst: u32,
    /// `max_channels` of the noisy app.
    pub max_channels: usize,
    /// `max_revocations` of the noisy app.
    pub max_revocations: usize,
}

/// Relay settings the load tool writes into the generated config.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// `[websocket] outbound_queue_frames`.
    pub queue_frames: usize,
    /// `[websocket] outbound_queue_bytes`.
    pub queue_bytes: usize,
    /// `[history] max_per_channel`.
    pub history_per_channel: usize,
    /// `[history] ttl` in seconds.
    pub history_ttl_secs: u64,
    /// `[http] max_batch`.
    pub max_batch: usize,
    /// Write a `[limits]` table that lifts the per-IP, per-app and per-namespace limits
    /// (every load connection comes from 127.0.0.1 into one namespace).
    pub lift_limits: bool,
    /// Add the noisy app and these per-app limits (connection limits stay lifted).
    pub tenant: Option<TenantLimits>,
    /// Serve `wss://` and `https://` with a freshly generated certificate (a `[tls]`
    /// table naming only the files: the TLS policy stays the relay's defaults).
    pub tls: Option<TlsMode>,
    /// `[broker]`: Redis or Redis Cluster instead of memory.
    pub broker: Option<Broker>,
}

/// TLS between the load clients and a spawned relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsMode {
    /// Clients resume their TLS sessions when they reconnect.
    pub resume: bool,
    /// Clients check the relay's handshake signature on one handshake in this many
    /// (1: every one; see [`crate::tls::SignatureSampling`]).
    pub check_every: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            queue_frames: 1024,
            queue_bytes: 4 << 20,
            history_per_channel: 1000,
            history_ttl_secs: 120,
            max_batch: 1000,
            lift_limits: true,
            tenant: None,
            tls: None,
            broker: None,
        }
    }
}

/// A relay to drive: its address, pid, the secret to mint tokens with, and the child
/// process when the tool started it (killed on drop).
#[derive(Debug)]
pub struct Relay {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, for `/proc`.
    pub pid: u32,
    signer: Signer,
    noisy: Option<Signer>,
    /// Lines the relay wrote to stderr (spawned relays only): audit records are counted
    /// here and not echoed, every other line is echoed to this process's stderr.
    pub log_lines: Arc<AtomicU64>,
    /// The relay's Redis, when it runs on one (for `INFO commandstats`).
    pub broker: Option<Broker>,
    tls: Option<TlsClient>,
    http: reqwest::Client,
    child: Option<Child>,
    _dir: Option<PathBuf>,
}

impl Relay {
    /// Starts `binary serve --config <generated>` on 127.0.0.1 with a fresh secret and
    /// waits for its `sealcast listening on http://ADDR` line. A relay that refuses the
    /// `[limits]` table (a build without it) is started again without.
    pub async fn spawn(binary: &Path, settings: &RelaySettings) -> anyhow::Result<Relay> {
        match Self::spawn_once(binary, settings).await {
            Err(_) if settings.lift_limits && settings.tenant.is_none() => {
                let s = RelaySettings {
                    lift_limits: false,
                    ..settings.clone()
                };
                Self::spawn_once(binary, &s).await
            }
            r => r,
        }
    }

    async fn spawn_once(binary: &Path, settings: &RelaySettings) -> anyhow::Result<Relay> {
        let secret = hex::encode(rand::random::<[u8; 32]>()).into_bytes();
        let noisy_secret = hex::encode(rand::random::<[u8; 32]>()).into_bytes();
        let dir = std::env::temp_dir().join(format!("sealcast-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("relay.toml");
        let files = match settings.tls {
            Some(_) => Some(tls::generate(&dir)?),
            None => None,
        };
        std::fs::write(&config, config_toml_with(settings, files.as_ref()))?;
        let tls = match (settings.tls, &files) {
            (Some(m), Some(f)) => Some(TlsClient::new(
                &f.ca_pem,
                "127.0.0.1",
                m.resume,
                (m.check_every > 1)
                    .then(|| tls::SignatureSampling::new(f.leaf_der.clone(), m.check_every)),
            )?),
            _ => None,
        };
        let mut cmd = Command::new(binary);
        if let Some(b) = &settings.broker {
            cmd.env(super::broker::URL_ENV, b.env_value());
        }
        let mut child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env(SECRET_ENV, std::str::from_utf8(&secret)?)
            .env(NOISY_SECRET_ENV, std::str::from_utf8(&noisy_secret)?)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log_lines = Arc::new(AtomicU64::new(0));
        let lines = Arc::clone(&log_lines);
        // Drains stderr: audit records (one per revocation in the noisy scenario) only
        // counted, anything else (warnings, a panic) passed on.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.fetch_add(1, Ordering::Relaxed);
                if !line.contains("audit") {
                    eprintln!("{line}");
                }
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Reads the address line, then keeps draining so the relay never blocks on a pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let addr = line
                    .strip_prefix("sealcast listening on http://")
                    .or_else(|| line.strip_prefix("sealcast listening on https://"));
                if let Some(a) = addr
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(a.trim().to_string());
                }
            }
        });
        let relay_dir = Some(dir);
        let addr = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            // The sender is dropped when the relay exits (a refused config).
            Ok(Ok(a)) => a.parse::<SocketAddr>()?,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("relay did not print its address within 30 s");
            }
        };
        let relay = Relay {
            addr,
            pid,
            signer: Signer::new(APP, Some(KID), &secret)?,
            noisy: match settings.tenant {
                Some(_) => Some(Signer::new(NOISY_APP, Some(KID), &noisy_secret)?),
                None => None,
            },
            log_lines,
            http: http_client(tls.as_ref())?,
            broker: settings.broker.clone(),
            tls,
            child: Some(child),
            _dir: relay_dir,
        };
        relay.wait_ready().await?;
        Ok(relay)
    }

    /// Waits (at most 30 s) until `/readyz` answers 200: a relay on Redis listens before
    /// its pub/sub connection is up, and a subscription meanwhile is closed with 1011.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.http_base());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match self.http.get(&url).send().await {
                Ok(r) => r.status().is_success(),
                Err(_) => false,
            };
            if ready {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the relay at {url} was not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A relay already running with app `load`, key `k1` = `secret` (and app `noisy`, key
    /// `k1` = `noisy_secret`, when given), over `wss://` and `https://` when `tls` is
    /// given. A secret the relay would refuse (under 32 bytes) is refused here, naming the
    /// rule.
    pub fn attach(
        addr: SocketAddr,
        pid: u32,
        secret: Vec<u8>,
        noisy_secret: Option<Vec<u8>>,
        tls: Option<TlsClient>,
    ) -> anyhow::Result<Relay> {
        Ok(Relay {
            addr,
            pid,
            signer: Signer::new(APP, Some(KID), &secret)?,
            noisy: match noisy_secret {
                Some(s) => Some(Signer::new(NOISY_APP, Some(KID), &s)?),
                None => None,
            },
            log_lines: Arc::new(AtomicU64::new(0)),
            http: http_client(tls.as_ref())?,
            broker: None,
            tls,
            child: None,
            _dir: None,
        })
    }

    /// The `ws://` or `wss://` URL.
    pub fn ws_url(&self) -> String {
        let s = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{s}://{}/v1/ws", self.addr)
    }

    /// The `http://` or `https://` base URL.
    pub fn http_base(&self) -> String {
        let s = if self.tls.is_some() { "https" } else { "http" };
        format!("{s}://{}", self.addr)
    }

    /// The client side of TLS, when the relay serves `wss://`.
    pub fn tls(&self) -> Option<&TlsClient> {
        self.tls.as_ref()
    }

    /// An HTTP client for the relay (trusting its CA over `https://`).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A publisher on the relay's HTTP API.
    pub fn publisher(&self) -> sealcast_client::wire::Publisher {
        sealcast_client::wire::Publisher::with_client(&self.http_base(), self.http.clone())
    }

    /// A connect token for `sub` valid for an hour.
    pub fn connect_token(&self, sub: &str) -> String {
        // Constant claims and the tool's own `sub`s: only a bug can make them refused.
        self.signer
            .connect_token(NS, sub, 3600)
            .expect("the load tool's connect claims are valid")
    }

    /// A publish token valid for 5 minutes (the longest allowed by default).
    pub fn publish_token(&self) -> String {
        self.signer
            .publish_token(Some(NS), 300)
            .expect("the load tool's publish claims are valid")
    }

    /// A connect token of the noisy app for `sub`, valid for an hour.
    pub fn noisy_connect_token(&self, sub: &str) -> anyhow::Result<String> {
        let signer = self.noisy.as_ref().context("no noisy app")?;
        Ok(signer.connect_token(NOISY_NS, sub, 3600)?)
    }

    /// An app-wide publish token of the noisy app (it may revoke), valid for 5 minutes.
    pub fn noisy_publish_token(&self) -> anyhow::Result<String> {
        let signer = self.noisy.as_ref().context("no noisy app")?;
        Ok(signer.publish_token(None, 300)?)
    }

    /// Whether the relay still runs.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => Path::new(&format!("/proc/{}", self.pid)).exists(),
        }
    }
}

impl Drop for Relay {
    /// Kills a spawned relay (the figures are taken before) and removes its config.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = self._dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The HTTP client of the publisher and the metrics readings.
fn http_client(tls: Option<&TlsClient>) -> anyhow::Result<reqwest::Client> {
    match tls {
        Some(t) => t.http(),
        None => Ok(reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?),
    }
}

/// The `[limits]` table written when `lift_limits` is set.
const LIFTED_LIMITS: &str = r#"
[limits]
max_connections = 1000000
max_connections_per_app = 1000000
max_connections_per_namespace = 1000000
connect_rate_per_ip = 1000000
connect_burst_per_ip = 1000000
publish_rate_per_app = 1000000
publish_burst_per_app = 1000000
"#;

/// The `[limits]` table of a two-app relay: connection limits lifted (every load socket
/// comes from a few loopback addresses), per-app rates as given.
fn tenant_limits(t: &TenantLimits) -> String {
    format!(
        r#"
[limits]
max_connections = 1000000
max_connections_per_app = 1000000
max_connections_per_namespace = 1000000
connect_rate_per_ip = 1000000
connect_burst_per_ip = 1000000
publish_rate_per_app = {p}
publish_burst_per_app = {p}
revoke_rate_per_app = {}
revoke_burst_per_app = {}
subscribe_rate_per_connection = {}
subscribe_burst_per_connection = {}
"#,
        t.revoke_rate,
        t.revoke_burst,
        t.subscribe_rate,
        t.subscribe_burst,
        p = t.publish_rate,
    )
}

/// The noisy app's table, with its own quotas.
fn tenant_app(t: &TenantLimits) -> String {
    format!(
        r#"
[[apps]]
id = "{NOISY_APP}"
max_channels = {}
max_revocations = {}
[[apps.keys]]
kid = "{KID}"
secret_env = "{NOISY_SECRET_ENV}"
"#,
        t.max_channels, t.max_revocations
    )
}

/// The generated relay config (without `[tls]`: its files exist only for a spawned relay).
pub fn config_toml(s: &RelaySettings) -> String {
    config_toml_with(s, None)
}

/// The generated relay config, serving TLS with `tls` when given.
pub fn config_toml_with(s: &RelaySettings, tls: Option<&TlsFiles>) -> String {
    let tls = match tls {
        Some(f) => format!(
            "\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            f.cert_file.display().to_string(),
            f.key_file.display().to_string()
        ),
        None => String::new(),
    };
    let broker = s
        .broker
        .as_ref()
        .map(Broker::config_table)
        .unwrap_or_default();
    let (limits, noisy) = match &s.tenant {
        Some(t) => (tenant_limits(t), tenant_app(t)),
        None if s.lift_limits => (LIFTED_LIMITS.to_string(), String::new()),
        None => (String::new(), String::new()),
    };
    format!(
        r#"listen = "127.0.0.1:0"

[websocket]
outbound_queue_frames = {}
outbound_queue_bytes = {}
max_subscriptions = 256

[history]
max_per_channel = {}
ttl = "{}s"
max_bytes = 1073741824

[http]
max_batch = {}
max_body_bytes = 16777216
# The load tool reads the relay's gauges from the public port.
public_metrics = true
{limits}{tls}{broker}
[[apps]]
id = "{APP}"
[[apps.keys]]
kid = "{KID}"
secret_env = "{SECRET_ENV}"
{noisy}"#,
        s.queue_frames, s.queue_bytes, s.history_per_channel, s.history_ttl_secs, s.max_batch
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealcast::config::Config;

    #[test]
    fn two_app_config_is_accepted_with_the_noisy_quotas() {
        let t = TenantLimits {
            publish_rate: 2000,
            revoke_rate: 100,
            revoke_burst: 100,
            subscribe_rate: 20,
            subscribe_burst: 256,
            max_channels: 1000,
            max_revocations: 500,
        };
        let s = RelaySettings {
            tenant: Some(t),
            ..RelaySettings::default()
        };
        let env = |v: &str| {
            (v == SECRET_ENV || v == NOISY_SECRET_ENV)
                .then(|| std::ffi::OsString::from("ab".repeat(32)))
        };
        let c = Config::parse(&config_toml(&s), env).expect("valid config");
        assert_eq!(c.limits.publish_rate_per_app, 2000);
        assert_eq!(c.limits.publish_burst_per_app, 2000);
        assert_eq!(c.limits.revoke_rate_per_app, 100);
        assert_eq!(c.limits.subscribe_burst_per_connection, 256);
        assert_eq!(c.apps.len(), 2);
        let noisy = c.apps.iter().find(|a| a.id.as_str() == NOISY_APP).unwrap();
        assert_eq!(noisy.quota.max_channels, Some(1000));
        assert_eq!(noisy.quota.max_revocations, Some(500));
        let load = c.apps.iter().find(|a| a.id.as_str() == APP).unwrap();
        assert_eq!(load.quota.max_channels, None);
        // Without the tenant, the limits stay lifted and there is one app.
        let c = Config::parse(&config_toml(&RelaySettings::default()), env).unwrap();
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.limits.publish_rate_per_app, 1_000_000);
    }

    #[test]
    fn tls_and_broker_tables_are_accepted() {
        use crate::broker::{Broker, BrokerKind, URL_ENV};
        let dir = std::env::temp_dir().join(format!("sealcast-load-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = crate::tls::generate(&dir).unwrap();
        // The client trusts the generated CA for the name the spawned relay is reached by.
        crate::tls::TlsClient::new(&files.ca_pem, "127.0.0.1", true, None).unwrap();
        for (kind, urls) in [
            (BrokerKind::Redis, "redis://127.0.0.1:6390/0"),
            (
                BrokerKind::RedisCluster,
                "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
            ),
        ] {
            let b = Broker::new(kind, urls.split(',').map(String::from).collect());
            let s = RelaySettings {
                tls: Some(TlsMode {
                    resume: false,
                    check_every: 1,
                }),
                broker: Some(b.clone()),
                ..RelaySettings::default()
            };
            let value = b.env_value();
            let env = |v: &str| match v {
                SECRET_ENV => Some(std::ffi::OsString::from("ab".repeat(32))),
                URL_ENV => Some(std::ffi::OsString::from(&value)),
                _ => None,
            };
            let c = Config::parse(&config_toml_with(&s, Some(&files)), env).expect("valid config");
            let tls = c.tls.expect("a [tls] table");
            assert_eq!(tls.cert_file, files.cert_file);
            assert_eq!(tls.key_file, files.key_file);
            assert_eq!(c.broker.prefix, b.prefix);
            assert_eq!(c.broker.redis_url_env.is_some(), kind == BrokerKind::Redis);
            assert_eq!(
                c.broker.redis_urls_env.is_some(),
                kind == BrokerKind::RedisCluster
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
