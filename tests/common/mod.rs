//! Shared by the black-box tests: a real relay on 127.0.0.1:0 with two apps, and helpers
//! to mint tokens and make real ciphertext.
#![allow(dead_code, missing_docs, unreachable_pub)]

pub mod certs;
pub mod ha;
pub mod proc;
pub mod raw;
pub mod redis;
pub mod redis_cluster;
pub mod redis_sentinel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sealcast::auth::{MintClaims, Secret, unix_now};
use sealcast::config::{AppConfig, Config, KeyConfig};
use sealcast::protocol::AppId;
use sealcast::{AppState, Server, payload};
use sealcast_client::wire::{Client, Publisher};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ACME_K1: &[u8] = b"acme-key-one-0123456789abcdefghijklmnop";
pub const ACME_K2: &[u8] = b"acme-key-two-0123456789abcdefghijklmnop";
pub const OTHER_K1: &[u8] = b"other-key-one-0123456789abcdefghijklmno";
pub const PAYLOAD_KEY: [u8; 32] = [7u8; 32];
pub const NS: &str = "ari:cloud:jira::site/7f3c0d2e/dashboard/10001";
pub const WAIT: Duration = Duration::from_secs(10);

pub fn channel(topic: &str) -> String {
    format!("{NS}#{topic}")
}

fn app(id: &str, keys: &[(&str, &[u8])]) -> AppConfig {
    AppConfig {
        id: AppId::parse(id).unwrap(),
        keys: keys
            .iter()
            .map(|(kid, s)| KeyConfig {
                kid: (*kid).into(),
                secret: Secret::new(s.to_vec()),
            })
            .collect(),
        quota: Default::default(),
    }
}

pub fn test_config() -> Config {
    let mut c = Config::with_apps(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        vec![
            app("acme", &[("k1", ACME_K1), ("k2", ACME_K2)]),
            app("other", &[("k1", OTHER_K1)]),
        ],
    );
    c.shutdown.drain = Duration::from_millis(100);
    c
}

pub struct Relay {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

impl Relay {
    pub async fn start() -> Relay {
        Relay::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Relay {
        let mut config = test_config();
        f(&mut config);
        config.validate().expect("test config valid");
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr().unwrap();
        let state = Arc::clone(server.state());
        let stop = CancellationToken::new();
        let handle = tokio::spawn(server.run(stop.clone()));
        Relay {
            addr,
            state,
            stop,
            handle,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn publisher(&self) -> Publisher {
        Publisher::new(&self.base())
    }

    /// An authenticated client of app acme in NS.
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url(), &connect_token(NS, "user-1", 3600))
            .await
            .expect("connect")
            .0
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.handle).await;
    }

    pub fn metric(&self, name: &str) -> f64 {
        metric_value(&self.state.metrics.render(), name)
    }
}

/// The value of the first sample whose name (with labels) starts with `name`.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn connect_token(ns: &str, sub: &str, ttl: i64) -> String {
    MintClaims::connect("acme", ns, sub, unix_now(), ttl).sign(Some("k1"), ACME_K1)
}

pub fn publish_token(ns: Option<&str>) -> String {
    MintClaims::publish("acme", ns, unix_now(), 300).sign(Some("k1"), ACME_K1)
}

/// Real AES-256-GCM ciphertext of `plaintext` for `channel`/`event`.
pub fn sealed(channel: &str, event: &str, plaintext: &str) -> String {
    payload::encrypt(&PAYLOAD_KEY, channel, event, plaintext.as_bytes()).unwrap()
}

/// Publishes and returns `(offset, epoch)`, panicking on an error answer.
pub async fn publish(p: &Publisher, channel: &str, plaintext: &str) -> (u64, String) {
    let a = p
        .publish(
            &publish_token(None),
            channel,
            "Ev",
            &sealed(channel, "Ev", plaintext),
            None,
        )
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{:?}", a.body);
    (
        a.body["offset"].as_u64().unwrap(),
        a.body["epoch"].as_str().unwrap().to_string(),
    )
}

/// Reads `pub` frames until `n` arrived; returns their offsets.
pub async fn read_pubs(c: &mut Client, n: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < n {
        let f = c.frame(WAIT).await.expect("pub frame");
        assert_eq!(f["type"], "pub", "{f}");
        got.push(f["offset"].as_u64().unwrap());
    }
    got
}

pub fn frame_type(v: &Value) -> &str {
    v["type"].as_str().unwrap_or("")
}

/// A publish token of app `other`.
pub fn other_publish_token() -> String {
    MintClaims::publish("other", None, unix_now(), 300).sign(Some("k1"), OTHER_K1)
}

/// Waits (bounded) until `f` holds, polling every 50 ms; panics with `what` otherwise.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of every sample of a metric family whose labels contain `label` (e.g.
/// `"channels_per_app"`), whatever the label's name.
pub fn metric_with_label(text: &str, family: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && l.contains(&format!("=\"{label}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Publishes real ciphertext of `plaintext` to `channel` with `token`; the relay's answer,
/// whatever it is.
pub async fn publish_with(
    p: &Publisher,
    token: &str,
    channel: &str,
    plaintext: &str,
) -> sealcast_client::wire::Answer {
    p.publish(
        token,
        channel,
        "Ev",
        &sealed(channel, "Ev", plaintext),
        None,
    )
    .await
    .unwrap()
}
