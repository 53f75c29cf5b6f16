//! Connection and rate limits (`[limits]`). Every limit counts its refusals in
//! `sealcast_limit_hits_total{limit=...}`.
//!
//! Counts are held by RAII guards, so a session that ends for any reason gives its places
//! back. Rate limits are `governor` token buckets (GCRA) keyed by client IP and by app;
//! their key maps are pruned of idle keys by the periodic sweep, so they stay bounded by
//! the number of recently active keys.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;
use crate::protocol::{AppId, Namespace};
use crate::telemetry::Metrics;

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections`.
    Connections,
    /// `max_connections_per_app`.
    ConnectionsPerApp,
    /// `max_connections_per_namespace`.
    ConnectionsPerNamespace,
    /// `connect_rate_per_ip`: retry after this long.
    ConnectRate(Duration),
    /// `publish_rate_per_app`: retry after this long.
    PublishRate(Duration),
    /// `revoke_rate_per_app`: retry after this long.
    RevokeRate(Duration),
    /// `subscribe_rate_per_connection`: retry after this long.
    SubscribeRate(Duration),
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::ConnectionsPerApp => "connections_per_app",
            Refusal::ConnectionsPerNamespace => "connections_per_namespace",
            Refusal::ConnectRate(_) => "connect_rate_per_ip",
            Refusal::PublishRate(_) => "publish_rate_per_app",
            Refusal::RevokeRate(_) => "revoke_rate_per_app",
            Refusal::SubscribeRate(_) => "subscribe_rate_per_connection",
        }
    }
}

/// The relay's live counts and rate buckets.
pub struct Limits {
    config: LimitsConfig,
    open: AtomicUsize,
    per_app: DashMap<AppId, usize>,
    per_namespace: DashMap<(AppId, Namespace), usize>,
    connect_rate: DefaultKeyedRateLimiter<IpAddr>,
    publish_rate: DefaultKeyedRateLimiter<AppId>,
    revoke_rate: DefaultKeyedRateLimiter<AppId>,
    /// Keyed by session id: only sessions that subscribed recently hold a bucket, so an
    /// idle connection costs nothing here.
    subscribe_rate: DefaultKeyedRateLimiter<u64>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config)
            .field("open", &self.open)
            .finish()
    }
}

fn quota(rate: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Quota::per_second(rate).allow_burst(burst)
}

/// Holds one open socket's place in `max_connections`.
#[derive(Debug)]
pub struct OpenGuard(Arc<Limits>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds one session's place in the per-app and per-namespace counts.
#[derive(Debug)]
pub struct SessionGuard {
    limits: Arc<Limits>,
    app: AppId,
    ns: Namespace,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        release(&self.limits.per_app, &self.app);
        release(
            &self.limits.per_namespace,
            &(self.app.clone(), self.ns.clone()),
        );
    }
}

fn release<K: Hash + Eq + Clone>(map: &DashMap<K, usize>, key: &K) {
    // Remove the entry at zero so the maps stay bounded by live keys.
    map.remove_if_mut(key, |_, n| {
        *n = n.saturating_sub(1);
        *n == 0
    });
}

fn acquire<K: Hash + Eq + Clone>(map: &DashMap<K, usize>, key: K, max: usize) -> bool {
    let mut n = map.entry(key).or_insert(0);
    if *n >= max {
        return false;
    }
    *n += 1;
    true
}

impl Limits {
    /// Fresh counts and buckets.
    pub fn new(config: LimitsConfig, metrics: Arc<Metrics>) -> Arc<Limits> {
        Arc::new(Limits {
            connect_rate: RateLimiter::keyed(quota(
                config.connect_rate_per_ip,
                config.connect_burst_per_ip,
            )),
            publish_rate: RateLimiter::keyed(quota(
                config.publish_rate_per_app,
                config.publish_burst_per_app,
            )),
            revoke_rate: RateLimiter::keyed(quota(
                config.revoke_rate_per_app,
                config.revoke_burst_per_app,
            )),
            subscribe_rate: RateLimiter::keyed(quota(
                config.subscribe_rate_per_connection,
                config.subscribe_burst_per_connection,
            )),
            config,
            open: AtomicUsize::new(0),
            per_app: DashMap::new(),
            per_namespace: DashMap::new(),
            metrics,
        })
    }

    fn refuse(&self, r: Refusal) -> Refusal {
        self.metrics.limit_hit(r.label());
        r
    }

    /// Admits a WebSocket upgrade from `ip`: the per-IP attempt rate, then the total.
    pub fn admit_upgrade(self: &Arc<Self>, ip: IpAddr) -> Result<OpenGuard, Refusal> {
        if let Err(not_until) = self.connect_rate.check_key(&ip) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(self.refuse(Refusal::ConnectRate(wait)));
        }
        let max = self.config.max_connections;
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return Err(self.refuse(Refusal::Connections));
        }
        Ok(OpenGuard(Arc::clone(self)))
    }

    /// Admits an authenticated session of `app` in `ns`.
    pub fn admit_session(
        self: &Arc<Self>,
        app: &AppId,
        ns: &Namespace,
    ) -> Result<SessionGuard, Refusal> {
        if !acquire(
            &self.per_app,
            app.clone(),
            self.config.max_connections_per_app,
        ) {
            return Err(self.refuse(Refusal::ConnectionsPerApp));
        }
        if !acquire(
            &self.per_namespace,
            (app.clone(), ns.clone()),
            self.config.max_connections_per_namespace,
        ) {
            release(&self.per_app, app);
            return Err(self.refuse(Refusal::ConnectionsPerNamespace));
        }
        Ok(SessionGuard {
            limits: Arc::clone(self),
            app: app.clone(),
            ns: ns.clone(),
        })
    }

    /// Admits `n` publications of `app`.
    pub fn admit_publications(&self, app: &AppId, n: u32) -> Result<(), Refusal> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        match self.publish_rate.check_key_n(app, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(self.refuse(Refusal::PublishRate(wait)))
            }
            // More than the burst at once can never pass: wait a full bucket.
            Err(_) => Err(self.refuse(Refusal::PublishRate(Duration::from_secs(1)))),
        }
    }

    /// Admits one `POST /v1/revoke` of `app`.
    pub fn admit_revoke(&self, app: &AppId) -> Result<(), Refusal> {
        self.revoke_rate.check_key(app).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.refuse(Refusal::RevokeRate(wait))
        })
    }

    /// Admits one `subscribe` frame of session `session`.
    pub fn admit_subscribe(&self, session: u64) -> Result<(), Refusal> {
        self.subscribe_rate
            .check_key(&session)
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                self.refuse(Refusal::SubscribeRate(wait))
            })
    }

    /// Forgets rate-limit keys whose buckets are full again.
    pub fn sweep(&self) {
        self.revoke_rate.retain_recent();
        self.revoke_rate.shrink_to_fit();
        self.subscribe_rate.retain_recent();
        self.subscribe_rate.shrink_to_fit();
        self.connect_rate.retain_recent();
        self.connect_rate.shrink_to_fit();
        self.publish_rate.retain_recent();
        self.publish_rate.shrink_to_fit();
    }

    /// Authenticated sessions of `app` now (for `sealcast_sessions{app}`).
    pub fn sessions_of(&self, app: &AppId) -> usize {
        self.per_app.get(app).map_or(0, |n| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(f: impl FnOnce(&mut LimitsConfig)) -> Arc<Limits> {
        let mut c = LimitsConfig::default();
        f(&mut c);
        Limits::new(c, Arc::new(Metrics::default()))
    }

    #[test]
    fn counts_are_given_back_when_guards_drop() {
        let l = limits(|c| {
            c.max_connections = 2;
            c.max_connections_per_app = 2;
            c.max_connections_per_namespace = 1;
        });
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = l.admit_upgrade(ip).unwrap();
        let _b = l.admit_upgrade(ip).unwrap();
        assert_eq!(l.admit_upgrade(ip).unwrap_err(), Refusal::Connections);
        drop(a);
        assert!(l.admit_upgrade(ip).is_ok());
        let app = AppId::parse("acme").unwrap();
        let (ns1, ns2) = (
            Namespace::parse("n1").unwrap(),
            Namespace::parse("n2").unwrap(),
        );
        let s1 = l.admit_session(&app, &ns1).unwrap();
        assert_eq!(
            l.admit_session(&app, &ns1).unwrap_err(),
            Refusal::ConnectionsPerNamespace
        );
        let _s2 = l.admit_session(&app, &ns2).unwrap();
        assert_eq!(
            l.admit_session(&app, &Namespace::parse("n3").unwrap())
                .unwrap_err(),
            Refusal::ConnectionsPerApp
        );
        drop(s1);
        assert!(l.admit_session(&app, &ns1).is_ok());
        assert!(l.per_namespace.len() <= 2, "entries at zero are removed");
    }

    #[test]
    fn rates_refuse_past_the_burst_with_a_retry_time() {
        let l = limits(|c| {
            c.connect_rate_per_ip = 1;
            c.connect_burst_per_ip = 3;
            c.publish_rate_per_app = 10;
            c.publish_burst_per_app = 10;
        });
        let ip: IpAddr = [10, 0, 0, 1].into();
        let guards: Vec<_> = (0..3).map(|_| l.admit_upgrade(ip).unwrap()).collect();
        match l.admit_upgrade(ip) {
            Err(Refusal::ConnectRate(wait)) => {
                assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        assert!(l.admit_upgrade([10, 0, 0, 2].into()).is_ok(), "per IP");
        drop(guards);
        let app = AppId::parse("acme").unwrap();
        assert!(l.admit_publications(&app, 10).is_ok());
        assert!(matches!(
            l.admit_publications(&app, 1),
            Err(Refusal::PublishRate(_))
        ));
        assert!(matches!(
            l.admit_publications(&AppId::parse("b").unwrap(), 11),
            Err(Refusal::PublishRate(_))
        ));
    }
}
