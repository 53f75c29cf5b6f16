//! `fanout`: S subscribers over C channels, publications at a target rate (or as fast as
//! the relay delivers, under a window), single or batched; deliveries/s, latency, loss,
//! duplicates, and CPU on both sides.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::relay::{NS, Relay, sample};
use super::report::Report;
use super::stamp::{Stamp, now_ns};
use super::sub::{Shared, open_many, read_loop};
use crate::client::Publisher;

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

/// Runs a fan-out against `relay`.
pub async fn run(relay: &Relay, o: &FanoutOptions) -> anyhow::Result<Report> {
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
    let conns = open_many(relay.addr, tokens, &channels, o.concurrency).await?;
    let setup_secs = setup.elapsed().as_secs_f64();
    let mut subs_on = vec![0u64; channels.len()];
    for i in 0..o.subs {
        subs_on[i % channels.len()] += 1;
    }
    let stop = CancellationToken::new();
    let readers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, (c, p))| tokio::spawn(read_loop(c, p, i, Arc::clone(&shared), stop.clone())))
        .collect();

    let publisher = Publisher::new(&relay.http_base());
    let token = relay.publish_token();
    let expected = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let last_offset = Arc::new(Mutex::new(vec![0u64; channels.len()]));
    let sem = Arc::new(Semaphore::new(o.publishers.max(1)));
    let batch = o.batch.max(1);
    let window = o.window.max(1) * o.subs as u64;
    let interval = (o.rate > 0.0).then(|| Duration::from_secs_f64(batch as f64 / o.rate));

    let relay0 = sample(relay.pid)?;
    let self0 = sample(0)?;
    let start = Instant::now();
    let mut next_tick = tokio::time::Instant::now();
    let mut seq = 0u64;
    let mut warm = o.warmup.is_zero();
    let mut window_waits = 0u64;
    while seq < o.count && start.elapsed() < o.duration {
        if !warm && start.elapsed() >= o.warmup {
            shared.reset_latency();
            warm = true;
        }
        while expected.load(Ordering::Relaxed) > shared.delivered.load(Ordering::Relaxed) + window
            && start.elapsed() < o.duration + Duration::from_secs(5)
        {
            window_waits += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let permit = Arc::clone(&sem).acquire_owned().await?;
        let n = batch.min((o.count - seq) as usize);
        let mut items = Vec::with_capacity(n);
        for k in 0..n {
            let c = ((seq + k as u64) % channels.len() as u64) as usize;
            let data = stamp.seal(&channels[c], EVENT, now_ns(), o.payload_bytes);
            expected.fetch_add(subs_on[c], Ordering::Relaxed);
            items.push((c, data));
        }
        seq += n as u64;
        let (p, t) = (publisher.clone(), token.clone());
        let (expected, accepted, refused) = (
            Arc::clone(&expected),
            Arc::clone(&accepted),
            Arc::clone(&refused),
        );
        let (last_offset, chans, subs_on) =
            (Arc::clone(&last_offset), channels.clone(), subs_on.clone());
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
    let _all = sem.acquire_many(o.publishers.max(1) as u32).await?;
    let publish_secs = start.elapsed().as_secs_f64();
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    while shared.delivered.load(Ordering::Relaxed) < expected.load(Ordering::Relaxed)
        && Instant::now() < drain_deadline
        && shared.closed.load(Ordering::Relaxed) == 0
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let relay1 = sample(relay.pid)?;
    let self1 = sample(0)?;
    stop.cancel();
    let last = last_offset.lock().clone();
    let mut behind = 0u64;
    for r in readers {
        let (conn, pos) = r.await?;
        let c = channels.iter().position(|c| *c == pos.channel).unwrap_or(0);
        behind += last[c].saturating_sub(pos.offset);
        drop(conn);
    }
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let lat = shared.latency();
    let relay_cpu = relay1.cpu_secs - relay0.cpu_secs;
    let self_cpu = self1.cpu_secs - self0.cpu_secs;
    let mut r = Report::new("fanout");
    r.add("subscribers", o.subs as u64, "");
    r.add("channels", channels.len() as u64, "");
    r.add("batch", batch as u64, "publications/request");
    r.add(
        "target_rate",
        o.rate,
        "publications/s (0 = as fast as delivered)",
    );
    r.addf("setup_secs", setup_secs, 2, "s");
    r.add("published", accepted.load(Ordering::Relaxed), "");
    r.addf(
        "publish_rate",
        accepted.load(Ordering::Relaxed) as f64 / publish_secs,
        1,
        "publications/s",
    );
    r.add("deliveries", delivered, "");
    r.addf("deliveries_per_sec", delivered as f64 / secs, 0, "/s");
    r.add("window_waits", window_waits, "ms waited for the window");
    r.add("latency_samples", lat.len(), "");
    for (name, q) in [
        ("latency_p50", 0.5),
        ("latency_p99", 0.99),
        ("latency_p999", 0.999),
    ] {
        r.addf(name, lat.value_at_quantile(q) as f64 / 1000.0, 2, "ms");
    }
    r.addf("latency_max", lat.max() as f64 / 1000.0, 2, "ms");
    r.add(
        "verified_in_full",
        shared.verified.load(Ordering::Relaxed),
        "deliveries",
    );
    r.addf("relay_cpu_secs", relay_cpu, 2, "s");
    r.addf(
        "relay_cpu_per_million",
        relay_cpu / (delivered.max(1) as f64 / 1e6),
        3,
        "s per 10^6 deliveries",
    );
    r.addf("relay_cpu_util", relay_cpu / secs, 2, "cores");
    r.addf("load_cpu_util", self_cpu / secs, 2, "cores");
    r.addf("relay_rss_mib", relay1.rss as f64 / 1048576.0, 1, "MiB");
    r.must_be_zero("lost", shared.gaps.load(Ordering::Relaxed) + behind);
    r.must_be_zero("duplicated", shared.duplicated.load(Ordering::Relaxed));
    r.must_be_zero("bad_payloads", shared.bad_payloads.load(Ordering::Relaxed));
    r.must_be_zero("refused_publications", refused.load(Ordering::Relaxed));
    r.must_be_zero("connections_closed", shared.closed.load(Ordering::Relaxed));
    Ok(r)
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
