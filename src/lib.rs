//! # sealcast
//!
//! A realtime relay for web apps whose data must stay private from the relay itself.
//! Browser widgets hold a WebSocket open, the app's backend publishes over HTTPS, and the
//! relay fans each publication out in milliseconds. Payloads are AES-256-GCM ciphertext
//! made by the app; the relay routes on clear-text channel and event names and never
//! holds a payload key.
//!
//! ## Data flow
//!
//! ```text
//! browser ──ws──▶ ws::session ──▶ broker ──▶ hub (channels: history + subscribers)
//!                    ▲                         │ push Arc<Publication> (encoded once)
//!                    └──── hub::Outbox ◀───────┘ (bounded; overflow closes with 4008)
//! app backend ──https──▶ http::publish ──▶ broker
//! ```
//!
//! ## Layout
//!
//! - [`protocol`]: frames, validated names, close codes. Input becomes types here.
//! - [`auth`]: HS512 JWT verification into typed claims; secrets that redact themselves.
//! - [`history`]: one channel's ring of publications, offsets and epoch; no I/O.
//! - [`hub`]: channels, subscribers and history under one lock per channel; no I/O.
//! - [`broker`]: the trait the transports publish and subscribe through: in memory (one
//!   node, the default) or on Redis (many nodes sharing offsets, history and revocations).
//! - [`ws`]: the upgrade and one task per socket.
//! - [`http`]: the publish API, health and metrics.
//! - [`config`], [`telemetry`], [`shutdown`]: the process around it.
//! - [`payload`]: the app-side encryption of PROTOCOL.md 5 (never used on the relay's
//!   data path), for dev mode and the CLI.
//!
//! The relay's clients are crates of their own in the workspace: the Rust SDK
//! (`clients/rust`, `sealcast-client`, whose `wire` module the black-box tests use) and the
//! load generator (`tools/load`, `sealcast-load`). The relay never links either.

pub mod auth;
pub mod broker;
pub mod config;
pub mod dev;
pub mod health;
pub mod history;
pub mod http;
pub mod hub;
pub mod limits;
pub mod listener;
pub mod payload;
pub mod protocol;
pub mod quota;
pub mod reload;
pub mod revocation;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::broker::memory::MemoryBroker;
use crate::config::Config;
use crate::hub::Hub;
use crate::telemetry::Metrics;

/// Everything a request or session handler needs, shared by `Arc`.
#[derive(Debug)]
pub struct AppState {
    /// The configuration (apps and TLS are reloadable; the rest is fixed at start).
    pub config: Config,
    /// The TLS certificate, when `[tls]` is configured.
    pub tls: Option<Arc<tls::TlsReloader>>,
    /// Token verification; replaced whole on reload.
    pub auth: arc_swap::ArcSwap<Authenticator>,
    /// Connection and rate limits.
    pub limits: Arc<limits::Limits>,
    /// Live authenticated sessions.
    pub registry: ws::registry::Registry,
    /// Live revocations.
    pub revocations: revocation::Revocations,
    /// Per-app quotas (reloaded with the apps).
    pub quotas: Arc<quota::Quotas>,
    /// Which origins may open a WebSocket.
    pub origins: http::origin::OriginPolicy,
    /// Whose `X-Forwarded-For` to believe.
    pub proxies: http::proxy::TrustedProxies,
    /// Where publications go.
    pub broker: Arc<dyn Broker>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when shutdown starts.
    pub shutdown: CancellationToken,
    /// Tracks session tasks so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// False once shutdown starts.
    pub ready: AtomicBool,
    next_session: AtomicU64,
}

impl AppState {
    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

/// A bound, not yet running relay.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    /// The admin listener, when `admin_listen` is configured.
    admin: Option<TcpListener>,
    state: Arc<AppState>,
}

impl Server {
    /// Binds the listener and builds the state with the configured broker (`[broker]`:
    /// in memory, or Redis, which is connected to in the background).
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let metrics = Arc::new(Metrics::default());
        let quotas = quota::Quotas::from_config(&config);
        let hub = Arc::new(Hub::with_quotas(
            config.hub(),
            Arc::clone(&metrics),
            Arc::clone(&quotas),
        ));
        let broker: Arc<dyn Broker> = match config.broker.kind {
            config::BrokerKind::Memory => {
                metrics.broker_up.set(1);
                Arc::new(MemoryBroker::new(hub))
            }
            config::BrokerKind::Redis => {
                broker::redis::RedisBroker::start(&config, hub, Arc::clone(&metrics))
                    .map_err(std::io::Error::other)?
            }
            config::BrokerKind::RedisCluster => {
                broker::redis::RedisBroker::start_cluster(&config, hub, Arc::clone(&metrics))
                    .map_err(std::io::Error::other)?
            }
            config::BrokerKind::RedisSentinel => {
                broker::redis::RedisBroker::start_sentinel(&config, hub, Arc::clone(&metrics))
                    .map_err(std::io::Error::other)?
            }
        };
        Self::bind_with_broker(config, broker, metrics, quotas).await
    }

    /// Binds with a given broker, whose hub holds `quotas`.
    pub async fn bind_with_broker(
        config: Config,
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
        quotas: Arc<quota::Quotas>,
    ) -> std::io::Result<Server> {
        let listener = bind_listener(config.listen)?;
        let admin = match config.admin_listen {
            Some(addr) => Some(bind_listener(addr)?),
            None => None,
        };
        metrics.register_apps(config.apps.iter().map(|a| a.id.as_str()));
        metrics.set_ceiling("connections", config.limits.max_connections);
        metrics.set_ceiling("history_bytes", config.history.max_bytes);
        metrics.set_ceiling("channels", config.history.max_channels);
        let state = Arc::new(AppState {
            auth: arc_swap::ArcSwap::from_pointee(authenticator(&config)),
            limits: limits::Limits::new(config.limits.clone(), Arc::clone(&metrics)),
            registry: ws::registry::Registry::default(),
            revocations: revocation::Revocations::new(config.revocation.max_entries),
            quotas,
            origins: http::origin::OriginPolicy::from_config(config.allowed_origins.as_deref()),
            proxies: http::proxy::TrustedProxies::from_config(&config.http.trusted_proxies),
            tls: match &config.tls {
                Some(t) => Some(Arc::new(
                    tls::TlsReloader::new(t, Arc::clone(&metrics))
                        .map_err(std::io::Error::other)?,
                )),
                None => None,
            },
            config,
            broker,
            metrics,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            ready: AtomicBool::new(false),
            next_session: AtomicU64::new(1),
        });
        Ok(Server {
            listener,
            admin,
            state,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound admin address, when `admin_listen` is configured.
    pub fn admin_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.admin.as_ref().map(TcpListener::local_addr).transpose()
    }

    /// The shared state (tests read metrics through it).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `stop` is cancelled, then shuts down in order (see [`shutdown`]).
    pub async fn run(self, stop: CancellationToken) -> std::io::Result<()> {
        let state = self.state;
        let sweeper = tokio::spawn(sweep_loop(Arc::clone(&state)));
        // Weak: the broker is part of the state.
        let weak = Arc::downgrade(&state);
        state.broker.set_revocation_hook(Arc::new(move |r| {
            if let Some(state) = weak.upgrade() {
                http::revoke::apply_shared(&state, r);
            }
        }));
        let reloader = tokio::spawn(reload::tls_watch(Arc::clone(&state)));
        let app = http::router(Arc::clone(&state));
        // Not `state.shutdown`: the public listener keeps answering through the drain
        // (503 to upgrades and readiness probes) and stops only at its end.
        let listening = CancellationToken::new();
        let header_timeout = state.config.http.header_read_timeout;
        // The admin listener outlives the drain (it stops after the public one), so that
        // `/readyz` answers 503 and `/metrics` shows the sessions closing until the process
        // exits.
        let admin_stop = CancellationToken::new();
        // Ready before any listener takes a request: the listening sockets are bound (the
        // start-up line that tools wait for is printed before this runs), so a probe that
        // arrives first must not see a relay that is up but says it is not ready.
        state.ready.store(true, Ordering::Release);
        let admin = self.admin.map(|l| {
            let routes = http::admin_router(Arc::clone(&state));
            let l = listener::PlainListener(l);
            tokio::spawn(server::serve(l, routes, header_timeout, admin_stop.clone()))
        });
        let serving = match &state.tls {
            None => {
                let l = listener::PlainListener(self.listener);
                tokio::spawn(server::serve(l, app, header_timeout, listening.clone()))
            }
            Some(tls) => {
                let cfg = state
                    .config
                    .tls
                    .as_ref()
                    .expect("TLS state comes from [tls]");
                let l = listener::TlsListener::new(
                    self.listener,
                    Arc::clone(tls),
                    cfg,
                    Arc::clone(&state.metrics),
                )?;
                tokio::spawn(server::serve(l, app, header_timeout, listening.clone()))
            }
        };
        stop.cancelled().await;
        shutdown::drain(&state, serving, listening).await;
        admin_stop.cancel();
        if let Some(admin) = admin {
            // Requests in flight on it are a scrape or a probe: short.
            let _ = tokio::time::timeout(Duration::from_secs(1), admin).await;
        }
        sweeper.abort();
        reloader.abort();
        Ok(())
    }
}

/// Accept-queue length asked of the kernel (capped by `net.core.somaxconn`); tokio's default
/// of 1024 overflows when thousands of clients reconnect at once after a deploy, and each
/// dropped SYN then waits 1 s, then 3 s, before retrying.
const LISTEN_BACKLOG: u32 = 65_535;

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The authenticator for a configuration's apps and token rules.
pub fn authenticator(config: &Config) -> Authenticator {
    Authenticator::new(
        config.apps.iter().map(|a| {
            (
                a.id.clone(),
                a.keys
                    .iter()
                    .map(|k| (Some(k.kid.clone()), &k.secret))
                    .collect(),
            )
        }),
        config.token_policy(),
    )
}

async fn sweep_loop(state: Arc<AppState>) {
    let period =
        (state.config.history.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.broker.sweep();
        state.limits.sweep();
        state.revocations.sweep(auth::unix_now());
        state
            .metrics
            .revocations
            .set(state.revocations.len() as i64);
    }
}
