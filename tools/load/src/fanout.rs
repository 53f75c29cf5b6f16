//! `fanout`: S subscribers over C channels, publications at a target rate (or as fast as
//! the relay delivers, under a window), single or batched; deliveries/s, latency, loss,
//! duplicates, and CPU on both sides.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::broker::CommandStats;
use super::dial::{Dial, Dialers};
use super::relay::{NS, Relay, sample};
use super::report::Report;
use super::stamp::{Stamp, now_ns};
use super::sub::{Position, Shared, open_many, read_loop};
use sealcast_client::wire::Publisher;
use sealcast_client::wire::lean::LeanConn;

/// The event name of every load publication.
pub const EVENT: &str = "load.tick";

/// Parameters of a fan-out run.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    /// Subscribers (one socket each).
    pub subs: usize,
    /// Channels; subscriber `i` is on channel `i % channels`.
    pub channels: usize,
    /// Publications per second over all channels; 0 = as fast as delivered.
    pub rate: f64,
    /// Publications per request (1 = `POST /v1/publish`).
    pub batch: usize,
    /// Requests in flight at once.
    pub publishers: usize,
    /// Stop publishing after this long.
    pub duration: Duration,
    /// Stop publishing after this many publications.
    pub count: u64,
    /// Approximate length of the base64 `data`.
    pub payload_bytes: usize,
    /// Most publications per subscriber published but not yet delivered.
    pub window: u64,
    /// Latencies of the first part of the run are discarded.
    pub warmup: Duration,
    /// One delivery in this many is decrypted and authenticated in full.
    pub verify_every: u64,
    /// Sockets opened at once while setting up.
    pub concurrency: usize,
}

/// A running fan-out: subscribers connected and reading, publications sent in phases
/// ([`Fanout::phase`]), checked for loss and duplicates at the end ([`Fanout::finish`]).
pub struct Fanout<D: Dial> {
    o: FanoutOptions,
    stamp: Stamp,
    shared: Arc<Shared>,
    channels: Vec<Arc<str>>,
    subs_on: Vec<u64>,
    readers: Vec<JoinHandle<(LeanConn<D::Stream>, Position)>>,
    stop: CancellationToken,
    publisher: Publisher,
    expected: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    last_offset: Arc<Mutex<Vec<u64>>>,
    sem: Arc<Semaphore>,
    seq: u64,
    /// Seconds taken to connect and subscribe everyone.
    pub setup_secs: f64,
}

/// What fails a fan-out run (all but `verified` must be zero).
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks {
    /// Deliveries decrypted and authenticated in full.
    pub verified: u64,
    /// Offsets skipped or never reached.
    pub lost: u64,
    /// Offsets delivered twice.
    pub duplicated: u64,
    /// Sampled payloads that failed to authenticate or disagreed.
    pub bad_payloads: u64,
    /// Publications the relay refused.
    pub refused: u64,
    /// Subscribers closed while measuring.
    pub closed: u64,
}

impl Checks {
    /// Adds up two runs' checks.
    pub fn plus(self, o: Checks) -> Checks {
        Checks {
            verified: self.verified + o.verified,
            lost: self.lost + o.lost,
            duplicated: self.duplicated + o.duplicated,
            bad_payloads: self.bad_payloads + o.bad_payloads,
            refused: self.refused + o.refused,
            closed: self.closed + o.closed,
        }
    }

    /// Adds the figures to `r`, each but `verified` a failure when not zero.
    pub fn add_to(&self, r: &mut Report) {
        r.add("verified_in_full", self.verified, "deliveries");
        r.must_be_zero("lost", self.lost);
        r.must_be_zero("duplicated", self.duplicated);
        r.must_be_zero("bad_payloads", self.bad_payloads);
        r.must_be_zero("refused_publications", self.refused);
        r.must_be_zero("connections_closed", self.closed);
    }
}

/// What one phase of publishing measured.
#[derive(Debug)]
pub struct Phase {
    /// Publication latencies after the warm-up, microseconds.
    pub latency: Histogram<u64>,
    /// Publications accepted.
    pub published: u64,
    /// In-order deliveries.
    pub delivered: u64,
    /// Seconds spent publishing.
    pub publish_secs: f64,
    /// Seconds until every delivery was in (or the drain deadline).
    pub secs: f64,
    /// Deliveries still missing at the drain deadline (20 s after the last request was
    /// answered): late beyond any latency figure, so a failure.
    pub undelivered: u64,
    /// Milliseconds waited for the window.
    pub window_waits: u64,
    /// Relay CPU seconds over the phase.
    pub relay_cpu: f64,
    /// This process's CPU seconds over the phase.
    pub self_cpu: f64,
    /// Relay resident set at the end, bytes.
    pub relay_rss: u64,
}

impl Phase {
    /// Adds the latency quantiles (ms) with `prefix`.
    pub fn add_latency(&self, r: &mut Report, prefix: &str) {
        for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
            let v = self.latency.value_at_quantile(q) as f64 / 1000.0;
            r.addf(&format!("{prefix}{name}"), v, 2, "ms");
        }
        r.addf(
            &format!("{prefix}max"),
            self.latency.max() as f64 / 1000.0,
            2,
            "ms",
        );
    }
}

impl<D: Dial> Fanout<D> {
    /// Connects and subscribes `o.subs` sockets (client `i` dialed by `dialers.get(i)`)
    /// and starts their readers.
    pub async fn start(
        relay: &Relay,
        dialers: &Dialers<D>,
        o: &FanoutOptions,
    ) -> anyhow::Result<Fanout<D>> {
        let stamp = Stamp::new(rand::random());
        let shared = Shared::new(stamp.clone(), o.verify_every, EVENT);
        let channels: Vec<Arc<str>> = (0..o.channels.max(1))
            .map(|c| Arc::from(format!("{NS}#fan-{}-{c}", std::process::id())))
            .collect();
        let tokens = Arc::new(
            (0..o.subs)
                .map(|i| relay.connect_token(&format!("u{i}")))
                .collect(),
        );
        let setup = Instant::now();
        let conns = open_many(relay.addr, dialers, tokens, &channels, o.concurrency).await?;
        let setup_secs = setup.elapsed().as_secs_f64();
        let mut subs_on = vec![0u64; channels.len()];
        for i in 0..o.subs {
            subs_on[i % channels.len()] += 1;
        }
        let stop = CancellationToken::new();
        let readers = conns
            .into_iter()
            .enumerate()
            .map(|(i, (c, p))| tokio::spawn(read_loop(c, p, i, Arc::clone(&shared), stop.clone())))
            .collect();
        Ok(Fanout {
            o: o.clone(),
            stamp,
            shared,
            subs_on,
            last_offset: Arc::new(Mutex::new(vec![0u64; channels.len()])),
            channels,
            readers,
            stop,
            publisher: relay.publisher(),
            expected: Arc::new(AtomicU64::new(0)),
            accepted: Arc::new(AtomicU64::new(0)),
            refused: Arc::new(AtomicU64::new(0)),
            sem: Arc::new(Semaphore::new(o.publishers.max(1))),
            seq: 0,
            setup_secs,
        })
    }

    /// Publishes for `duration` (or until the run's `count`), discards the latencies of the
    /// first `warmup`, then waits until every request is answered and every delivery is in
    /// (at most 20 s more).
    pub async fn phase(
        &mut self,
        relay: &Relay,
        duration: Duration,
        warmup: Duration,
    ) -> anyhow::Result<Phase> {
        let o = &self.o;
        let shared = &self.shared;
        // A fresh token per phase, so that many phases outlive no 5-minute token.
        let token = relay.publish_token();
        let batch = o.batch.max(1);
        let window = o.window.max(1) * o.subs as u64;
        let interval = (o.rate > 0.0).then(|| Duration::from_secs_f64(batch as f64 / o.rate));
        shared.reset_latency();
        let accepted0 = self.accepted.load(Ordering::Relaxed);
        let delivered0 = shared.delivered.load(Ordering::Relaxed);
        let relay0 = sample(relay.pid)?;
        let self0 = sample(0)?;
        let start = Instant::now();
        let mut next_tick = tokio::time::Instant::now();
        let mut warm = warmup.is_zero();
        let mut window_waits = 0u64;
        while self.seq < o.count && start.elapsed() < duration {
            if !warm && start.elapsed() >= warmup {
                shared.reset_latency();
                warm = true;
            }
            while self.expected.load(Ordering::Relaxed)
                > shared.delivered.load(Ordering::Relaxed) + window
                && start.elapsed() < duration + Duration::from_secs(5)
            {
                window_waits += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let permit = Arc::clone(&self.sem).acquire_owned().await?;
            let n = batch.min((o.count - self.seq) as usize);
            let mut items = Vec::with_capacity(n);
            for k in 0..n {
                let c = ((self.seq + k as u64) % self.channels.len() as u64) as usize;
                let data = self
                    .stamp
                    .seal(&self.channels[c], EVENT, now_ns(), o.payload_bytes);
                self.expected.fetch_add(self.subs_on[c], Ordering::Relaxed);
                items.push((c, data));
            }
            self.seq += n as u64;
            let (p, t) = (self.publisher.clone(), token.clone());
            let (expected, accepted, refused) = (
                Arc::clone(&self.expected),
                Arc::clone(&self.accepted),
                Arc::clone(&self.refused),
            );
            let (last_offset, chans, subs_on) = (
                Arc::clone(&self.last_offset),
                self.channels.clone(),
                self.subs_on.clone(),
            );
            tokio::spawn(async move {
                let _permit = permit;
                let results = publish(&p, &t, &chans, &items, batch > 1).await;
                for ((c, _), r) in items.iter().zip(results) {
                    match r {
                        Some(off) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            let mut l = last_offset.lock();
                            l[*c] = l[*c].max(off);
                        }
                        None => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            expected.fetch_sub(subs_on[*c], Ordering::Relaxed);
                        }
                    }
                }
            });
            if let Some(i) = interval {
                next_tick += i;
                tokio::time::sleep_until(next_tick).await;
            }
        }
        // Every request answered, then every delivery in (or the drain deadline).
        let permits = o.publishers.max(1) as u32;
        drop(self.sem.acquire_many(permits).await?);
        let publish_secs = start.elapsed().as_secs_f64();
        let drain_deadline = Instant::now() + Duration::from_secs(20);
        while shared.delivered.load(Ordering::Relaxed) < self.expected.load(Ordering::Relaxed)
            && Instant::now() < drain_deadline
            && shared.closed.load(Ordering::Relaxed) == 0
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        let undelivered = self
            .expected
            .load(Ordering::Relaxed)
            .saturating_sub(shared.delivered.load(Ordering::Relaxed));
        let relay1 = sample(relay.pid)?;
        let self1 = sample(0)?;
        Ok(Phase {
            latency: shared.latency(),
            published: self.accepted.load(Ordering::Relaxed) - accepted0,
            delivered: shared.delivered.load(Ordering::Relaxed) - delivered0,
            publish_secs,
            secs,
            undelivered,
            window_waits,
            relay_cpu: relay1.cpu_secs - relay0.cpu_secs,
            self_cpu: self1.cpu_secs - self0.cpu_secs,
            relay_rss: relay1.rss,
        })
    }

    /// Stops the readers and counts what fails a run: a subscriber behind its channel's
    /// last offset or skipping one, a duplicate, a sampled payload that is not authentic, a
    /// refused publication, a subscriber closed.
    pub async fn finish(self) -> anyhow::Result<Checks> {
        self.stop.cancel();
        let last = self.last_offset.lock().clone();
        let mut behind = 0u64;
        for h in self.readers {
            let (conn, pos) = h.await?;
            let c = self
                .channels
                .iter()
                .position(|c| *c == pos.channel)
                .unwrap_or(0);
            behind += last[c].saturating_sub(pos.offset);
            drop(conn);
        }
        let s = &self.shared;
        Ok(Checks {
            verified: s.verified.load(Ordering::Relaxed),
            lost: s.gaps.load(Ordering::Relaxed) + behind,
            duplicated: s.duplicated.load(Ordering::Relaxed),
            bad_payloads: s.bad_payloads.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            closed: s.closed.load(Ordering::Relaxed),
        })
    }

    /// Channels in use.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }
}

/// Runs a fan-out against `relay` (over `wss://` when it serves TLS).
pub async fn run(relay: &Relay, o: &FanoutOptions) -> anyhow::Result<Report> {
    crate::with_dialers!(relay, o.subs, |d| run_on(relay, &d, o).await)
}

async fn run_on<D: Dial>(
    relay: &Relay,
    dialers: &Dialers<D>,
    o: &FanoutOptions,
) -> anyhow::Result<Report> {
    let mut f = Fanout::start(relay, dialers, o).await?;
    let redis0 = commandstats(relay).await;
    let p = f.phase(relay, o.duration, o.warmup).await?;
    let redis1 = commandstats(relay).await;
    let batch = o.batch.max(1);
    let mut r = Report::new("fanout");
    r.add("subscribers", o.subs as u64, "");
    r.add("channels", f.channels() as u64, "");
    r.add("batch", batch as u64, "publications/request");
    r.add(
        "target_rate",
        o.rate,
        "publications/s (0 = as fast as delivered)",
    );
    r.addf("setup_secs", f.setup_secs, 2, "s");
    r.add("published", p.published, "");
    r.addf(
        "publish_rate",
        p.published as f64 / p.publish_secs,
        1,
        "publications/s",
    );
    r.add("deliveries", p.delivered, "");
    r.must_be_zero("undelivered_after_drain", p.undelivered);
    r.addf("deliveries_per_sec", p.delivered as f64 / p.secs, 0, "/s");
    r.add("window_waits", p.window_waits, "ms waited for the window");
    r.add("latency_samples", p.latency.len(), "");
    p.add_latency(&mut r, "latency_");
    r.addf("relay_cpu_secs", p.relay_cpu, 2, "s");
    r.addf(
        "relay_cpu_per_million",
        p.relay_cpu / (p.delivered.max(1) as f64 / 1e6),
        3,
        "s per 10^6 deliveries",
    );
    r.addf(
        "relay_cpu_us_per_delivery",
        p.relay_cpu / p.delivered.max(1) as f64 * 1e6,
        3,
        "µs",
    );
    r.addf(
        "relay_cpu_us_per_publication",
        p.relay_cpu / p.published.max(1) as f64 * 1e6,
        1,
        "µs",
    );
    r.addf("relay_cpu_util", p.relay_cpu / p.secs, 2, "cores");
    r.addf("load_cpu_util", p.self_cpu / p.secs, 2, "cores");
    r.addf("relay_rss_mib", p.relay_rss as f64 / 1048576.0, 1, "MiB");
    match (redis0, redis1) {
        (Some(Ok(before)), Some(Ok(after))) => {
            let calls = after.since(&before);
            let per = |n: u64| n as f64 / p.published.max(1) as f64;
            let total: u64 = calls.iter().map(|c| c.1).sum();
            r.addf(
                "redis_calls_per_publication",
                per(total),
                2,
                "Redis commands (INFO commandstats, scripts' calls included)",
            );
            for (name, n) in calls {
                let name = name.replace('|', "_");
                r.addf(&format!("redis_{name}_per_publication"), per(n), 3, "");
            }
        }
        (Some(Err(e)), _) | (_, Some(Err(e))) => {
            eprintln!("sealcast-load: no Redis commandstats: {e:#}");
        }
        _ => {}
    }
    f.finish().await?.add_to(&mut r);
    Ok(r)
}

/// The relay's Redis `INFO commandstats` (summed over a cluster's primaries), when it runs
/// on Redis.
async fn commandstats(relay: &Relay) -> Option<anyhow::Result<CommandStats>> {
    let b = relay.broker.clone()?;
    Some(
        tokio::task::spawn_blocking(move || b.commandstats())
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r),
    )
}

/// Publishes `items` (channel index, data) in one request; the offset of each, or `None`
/// where refused.
async fn publish(
    p: &Publisher,
    token: &str,
    channels: &[Arc<str>],
    items: &[(usize, String)],
    batched: bool,
) -> Vec<Option<u64>> {
    if !batched {
        let mut out = Vec::with_capacity(items.len());
        for (c, data) in items {
            let a = p.publish(token, &channels[*c], EVENT, data, None).await;
            out.push(match a {
                Ok(a) if a.status == 200 => a.body["offset"].as_u64(),
                _ => None,
            });
        }
        return out;
    }
    let body: Vec<Value> = items
        .iter()
        .map(|(c, data)| json!({"channel": &*channels[*c], "event": EVENT, "data": data}))
        .collect();
    match p.publish_batch(token, &body).await {
        Ok(a) if a.status == 200 => {
            let results = a.body["results"].as_array().cloned().unwrap_or_default();
            (0..items.len())
                .map(|i| results.get(i).and_then(|r| r["offset"].as_u64()))
                .collect()
        }
        _ => vec![None; items.len()],
    }
}
