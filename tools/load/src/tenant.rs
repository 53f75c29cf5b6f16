//! The noisy neighbour of the `noisy` scenario: app `noisy` pushing on each of its limits
//! at once while app `load` is measured.
//! - publications at a fixed rate (a little above `publish_rate_per_app`, so some are
//!   answered 429), every `fresh_every`-th to a channel never used before, so that the app
//!   soon holds its channel quota and those are answered 503;
//! - `POST /v1/revoke` of fresh `sub`s above `revoke_rate_per_app` (429), until the app
//!   holds its revocation quota (503);
//! - a few connections that subscribe to fresh channels and unsubscribe again, above
//!   `subscribe_rate_per_connection` (error `limit_exceeded`); once the app's publications
//!   hold its channel quota, the subscriptions the rate lets through are refused by the
//!   quota (the same error, another message).
//!
//! Every answer is counted by kind; anything but success or the expected refusals (a 500,
//! a broken connection) is `unexpected`, which fails the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::dial::{Dial, Dialers};
use super::relay::{NOISY_NS, Relay};
use super::stamp::{Stamp, now_ns};
use super::sub::source;
use sealcast_client::wire::Publisher;
use sealcast_client::wire::lean::{LeanConn, LeanStream};

const EVENT: &str = "noisy.tick";

/// What the noisy app does.
#[derive(Debug, Clone)]
pub struct TenantOptions {
    /// Publications per second offered.
    pub publish_rate: f64,
    /// Publications per request (1 = `POST /v1/publish`).
    pub batch: usize,
    /// Publish requests in flight at most.
    pub in_flight: usize,
    /// Every this many publications, one goes to a channel never used before (0: none).
    pub fresh_every: u64,
    /// Channels the other publications go to, in turn.
    pub channels: usize,
    /// `POST /v1/revoke` requests per second offered.
    pub revoke_rate: f64,
    /// Connections that churn subscriptions.
    pub sub_conns: usize,
    /// `subscribe` frames per second per churning connection.
    pub sub_rate: f64,
    /// Approximate length of the base64 `data`.
    pub payload_bytes: usize,
}

/// Answers the noisy app got, by kind.
#[derive(Debug, Default)]
pub struct Counts {
    /// Publications accepted.
    pub publish_ok: AtomicU64,
    /// Publications refused by the publish rate (429).
    pub publish_429: AtomicU64,
    /// Publications refused by the channel quota (503 / item error `unavailable`).
    pub publish_503: AtomicU64,
    /// Revocations accepted.
    pub revoke_ok: AtomicU64,
    /// Revocations refused by the revoke rate (429).
    pub revoke_429: AtomicU64,
    /// Revocations refused by the revocation quota (503).
    pub revoke_503: AtomicU64,
    /// Subscriptions accepted (each then unsubscribed).
    pub subscribe_ok: AtomicU64,
    /// Subscriptions refused by the subscribe rate (`limit_exceeded`).
    pub subscribe_rate_refused: AtomicU64,
    /// Subscriptions refused by the app's channel quota (`limit_exceeded`): a subscription
    /// holds a channel while it lasts, and the app's publications fill the quota.
    pub subscribe_quota_refused: AtomicU64,
    /// Anything else: another status, an error frame of another code, a broken socket.
    pub unexpected: AtomicU64,
    /// What the first unexpected answer was, for the report.
    pub first_unexpected: parking_lot::Mutex<Option<String>>,
}

impl Counts {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` unexpected answers and keeps a description of the first.
    fn unexpected(&self, n: u64, what: impl FnOnce() -> String) {
        if self.unexpected.fetch_add(n, Ordering::Relaxed) == 0 {
            let w = what();
            eprintln!("sealcast-load: noisy app: unexpected answer: {w}");
            *self.first_unexpected.lock() = Some(w);
        }
    }

    /// The counts as (name, value) pairs, in report order.
    pub fn figures(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("publish_ok", g(&self.publish_ok)),
            ("publish_429", g(&self.publish_429)),
            ("publish_503", g(&self.publish_503)),
            ("revoke_ok", g(&self.revoke_ok)),
            ("revoke_429", g(&self.revoke_429)),
            ("revoke_503", g(&self.revoke_503)),
            ("subscribe_ok", g(&self.subscribe_ok)),
            ("subscribe_rate_refused", g(&self.subscribe_rate_refused)),
            ("subscribe_quota_refused", g(&self.subscribe_quota_refused)),
            ("unexpected", g(&self.unexpected)),
        ]
    }
}

/// The noisy app at work; [`Tenant::stop`] ends it.
pub struct Tenant {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// What it got so far.
    pub counts: Arc<Counts>,
    started: Instant,
}

impl Tenant {
    /// Opens the churning connections and starts every kind of traffic. `tag` keeps
    /// channel and `sub` names of successive rounds apart.
    pub async fn start(relay: &Relay, o: &TenantOptions, tag: &str) -> anyhow::Result<Tenant> {
        let stop = CancellationToken::new();
        let counts = Arc::new(Counts::default());
        let mut tasks = crate::with_dialers!(relay, o.sub_conns, |d| {
            churners(relay, &d, o, tag, &stop, &counts).await?
        });
        let publisher = relay.publisher();
        let token = relay.noisy_publish_token()?;
        if o.publish_rate > 0.0 {
            tasks.push(tokio::spawn(publish(
                publisher.clone(),
                token.clone(),
                o.clone(),
                tag.to_string(),
                stop.clone(),
                Arc::clone(&counts),
            )));
        }
        if o.revoke_rate > 0.0 {
            tasks.push(tokio::spawn(revoke(
                publisher,
                token,
                o.revoke_rate,
                tag.to_string(),
                stop.clone(),
                Arc::clone(&counts),
            )));
        }
        Ok(Tenant {
            stop,
            tasks,
            counts,
            started: Instant::now(),
        })
    }

    /// Stops all traffic and waits for the requests in flight; returns the seconds it ran.
    pub async fn stop(self) -> f64 {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.started.elapsed().as_secs_f64()
    }
}

/// Opens the connections that churn subscriptions and starts them.
async fn churners<D: Dial>(
    relay: &Relay,
    dialers: &Dialers<D>,
    o: &TenantOptions,
    tag: &str,
    stop: &CancellationToken,
    counts: &Arc<Counts>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for i in 0..o.sub_conns {
        let token = relay.noisy_connect_token(&format!("churn{i}"))?;
        // From the far end of the loopback sources, away from the measured app's.
        let from = source(relay.addr, 199 - i % 200);
        let conn = dialers.get(i).connect(relay.addr, from, &token).await?;
        let (stop, counts) = (stop.clone(), Arc::clone(counts));
        let prefix = format!("{NOISY_NS}#sub-{tag}-{i}");
        let every = Duration::from_secs_f64(1.0 / o.sub_rate.max(0.1));
        tasks.push(tokio::spawn(churn_subscriptions(
            conn, prefix, every, stop, counts,
        )));
    }
    Ok(tasks)
}

/// Ticks every `every`, catching up after a late tick (the offered rate holds on
/// average).
struct Ticker {
    every: Duration,
    next: tokio::time::Instant,
    n: u64,
}

impl Ticker {
    fn new(every: Duration) -> Ticker {
        Ticker {
            every,
            next: tokio::time::Instant::now(),
            n: 0,
        }
    }

    /// Waits for the next tick and returns its number; `None` once `stop` is cancelled.
    async fn tick(&mut self, stop: &CancellationToken) -> Option<u64> {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep_until(self.next) => {}
        }
        self.next += self.every;
        self.n += 1;
        Some(self.n - 1)
    }
}

async fn publish(
    p: Publisher,
    token: String,
    o: TenantOptions,
    tag: String,
    stop: CancellationToken,
    counts: Arc<Counts>,
) {
    let stamp = Stamp::new(rand::random());
    let batch = o.batch.max(1);
    let sem = Arc::new(Semaphore::new(o.in_flight.max(1)));
    let every = Duration::from_secs_f64(batch as f64 / o.publish_rate);
    let channels = o.channels.max(1) as u64;
    let mut seq = 0u64;
    let mut ticker = Ticker::new(every);
    while ticker.tick(&stop).await.is_some() {
        let Ok(permit) = Arc::clone(&sem).acquire_owned().await else {
            break;
        };
        let items: Vec<Value> = (0..batch)
            .map(|_| {
                seq += 1;
                let channel = if o.fresh_every > 0 && seq % o.fresh_every == 0 {
                    format!("{NOISY_NS}#new-{tag}-{seq}")
                } else {
                    format!("{NOISY_NS}#fixed-{}", seq % channels)
                };
                let data = stamp.seal(&channel, EVENT, now_ns(), o.payload_bytes);
                json!({"channel": channel, "event": EVENT, "data": data})
            })
            .collect();
        let (p, token, counts) = (p.clone(), token.clone(), Arc::clone(&counts));
        tokio::spawn(async move {
            let _permit = permit;
            if batch == 1 {
                let a = p.post("/v1/publish", &token, &items[0]).await;
                count_publication(&counts, answer(a), 1);
            } else {
                let a = p.publish_batch(&token, &items).await;
                count_publication(&counts, answer(a), batch);
            }
        });
    }
    let _ = sem.acquire_many(o.in_flight.max(1) as u32).await;
}

/// The status and body, or what went wrong.
fn answer(
    a: Result<sealcast_client::wire::Answer, sealcast_client::wire::ClientError>,
) -> Result<(u16, Value), String> {
    a.map(|a| (a.status, a.body)).map_err(|e| {
        // The causes too: reqwest's own message names only the URL.
        let mut out = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            out.push_str(&format!(": {c}"));
            cause = c.source();
        }
        out
    })
}

/// Counts the answer to a request of `n` publications.
fn count_publication(counts: &Counts, answer: Result<(u16, Value), String>, n: usize) {
    let add = |c: &AtomicU64, k: usize| {
        c.fetch_add(k as u64, Ordering::Relaxed);
    };
    match answer {
        Ok((200, body)) if n == 1 && body["offset"].is_u64() => add(&counts.publish_ok, 1),
        Ok((200, body)) if n == 1 => counts.unexpected(1, || format!("publish 200 {body}")),
        Ok((200, body)) => {
            let results = body["results"].as_array().cloned().unwrap_or_default();
            for i in 0..n {
                let r = results.get(i).unwrap_or(&Value::Null);
                if r["offset"].is_u64() {
                    add(&counts.publish_ok, 1);
                } else if r["error"]["code"] == "unavailable" {
                    add(&counts.publish_503, 1);
                } else {
                    counts.unexpected(1, || format!("batch item {r}"));
                }
            }
        }
        Ok((429, _)) => add(&counts.publish_429, n),
        Ok((503, _)) => add(&counts.publish_503, n),
        Ok((status, body)) => counts.unexpected(n as u64, || format!("publish {status} {body}")),
        Err(e) => counts.unexpected(n as u64, || format!("publish: {e}")),
    }
}

async fn revoke(
    p: Publisher,
    token: String,
    rate: f64,
    tag: String,
    stop: CancellationToken,
    counts: Arc<Counts>,
) {
    let every = Duration::from_secs_f64(1.0 / rate);
    // Sequential requests would cap the rate at one per round trip; a few in flight.
    let sem = Arc::new(Semaphore::new(16));
    let mut ticker = Ticker::new(every);
    while let Some(n) = ticker.tick(&stop).await {
        let Ok(permit) = Arc::clone(&sem).acquire_owned().await else {
            break;
        };
        let (p, token, counts) = (p.clone(), token.clone(), Arc::clone(&counts));
        let body = json!({"sub": format!("gone-{tag}-{n}")});
        tokio::spawn(async move {
            let _permit = permit;
            match p.post("/v1/revoke", &token, &body).await {
                Ok(a) if a.status == 200 => Counts::inc(&counts.revoke_ok),
                Ok(a) if a.status == 429 => Counts::inc(&counts.revoke_429),
                Ok(a) if a.status == 503 => Counts::inc(&counts.revoke_503),
                Ok(a) => counts.unexpected(1, || format!("revoke {} {}", a.status, a.body)),
                Err(e) => counts.unexpected(1, || format!("revoke: {e}")),
            }
        });
    }
    let _ = sem.acquire_many(16).await;
}

async fn churn_subscriptions<S: LeanStream>(
    mut conn: LeanConn<S>,
    prefix: String,
    every: Duration,
    stop: CancellationToken,
    counts: Arc<Counts>,
) {
    let mut ticker = Ticker::new(every);
    while let Some(n) = ticker.tick(&stop).await {
        let channel = format!("{prefix}-{n}");
        let r = conn
            .request(json!({"type": "subscribe", "channel": channel}))
            .await;
        match r {
            Ok(v) if v["type"] == "subscribed" => {
                match conn
                    .request(json!({"type": "unsubscribe", "channel": channel}))
                    .await
                {
                    Ok(u) if u["type"] == "unsubscribed" => Counts::inc(&counts.subscribe_ok),
                    Ok(u) => counts.unexpected(1, || format!("unsubscribe: {u}")),
                    Err(e) => {
                        counts.unexpected(1, || format!("unsubscribe: {e}"));
                        return;
                    }
                }
            }
            Ok(v) if v["code"] == "limit_exceeded" => {
                let m = v["message"].as_str().unwrap_or_default();
                if m.contains("subscribe_rate_per_connection") {
                    Counts::inc(&counts.subscribe_rate_refused);
                } else if m.contains("max_channels_per_app") {
                    Counts::inc(&counts.subscribe_quota_refused);
                } else {
                    counts.unexpected(1, || format!("subscribe: {v}"));
                }
            }
            Ok(v) => counts.unexpected(1, || format!("subscribe: {v}")),
            Err(e) => {
                counts.unexpected(1, || format!("subscribe: {e}"));
                return;
            }
        }
    }
    conn.close().await;
}
