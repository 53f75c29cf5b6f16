//! The subscriber side: one task per socket that counts `pub` frames, checks their offsets
//! (a gap is a loss, a repeat is a duplicate) and samples publish-to-deliver latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::dial::{Dial, Dialers};
use super::stamp::{Stamp, now_ns};
use sealcast_client::wire::lean::{LeanConn, LeanFrame, LeanStream, PubView};

/// Latencies are recorded in microseconds, up to 60 s.
const MAX_LATENCY_US: u64 = 60_000_000;
const SHARDS: usize = 32;
const FLUSH_EVERY: usize = 512;

/// What every subscriber task adds to.
#[derive(Debug)]
pub struct Shared {
    /// In-order deliveries over all subscribers.
    pub delivered: AtomicU64,
    /// Deliveries at or below an offset already seen.
    pub duplicated: AtomicU64,
    /// Offsets skipped (lost unless recovered later).
    pub gaps: AtomicU64,
    /// Deliveries decrypted in full whose time disagreed, or that failed to open.
    pub bad_payloads: AtomicU64,
    /// Deliveries decrypted and authenticated in full.
    pub verified: AtomicU64,
    /// Connections the relay closed (or that broke) while measuring.
    pub closed: AtomicU64,
    hists: Vec<Mutex<Histogram<u64>>>,
    stamp: Stamp,
    verify_every: u64,
    event: String,
}

impl Shared {
    /// Fresh counters; one in `verify_every` deliveries is decrypted in full.
    pub fn new(stamp: Stamp, verify_every: u64, event: &str) -> Arc<Shared> {
        Arc::new(Shared {
            delivered: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            bad_payloads: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            hists: (0..SHARDS).map(|_| Mutex::new(new_hist())).collect(),
            stamp,
            verify_every: verify_every.max(1),
            event: event.to_string(),
        })
    }

    /// All latencies recorded so far, merged.
    pub fn latency(&self) -> Histogram<u64> {
        let mut h = new_hist();
        for s in &self.hists {
            let _ = h.add(&*s.lock());
        }
        h
    }

    /// Forgets the latencies recorded so far (after a warm-up).
    pub fn reset_latency(&self) {
        for s in &self.hists {
            s.lock().reset();
        }
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// One subscriber's position on its channel.
#[derive(Debug, Clone)]
pub struct Position {
    /// The channel.
    pub channel: Arc<str>,
    /// Its epoch.
    pub epoch: String,
    /// The last offset received in order.
    pub offset: u64,
}

/// Opens, authenticates and subscribes `n` lean connections, `concurrency` at a time;
/// subscriber `i` goes to `channels[i % channels.len()]`, dialed by `dialers.get(i)`.
/// Returns them in order.
pub async fn open_many<D: Dial>(
    addr: SocketAddr,
    dialers: &Dialers<D>,
    tokens: Arc<Vec<String>>,
    channels: &[Arc<str>],
    concurrency: usize,
) -> anyhow::Result<Vec<(LeanConn<D::Stream>, Position)>> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(tokens.len());
    for i in 0..tokens.len() {
        let sem = Arc::clone(&sem);
        let tokens = Arc::clone(&tokens);
        let channel = Arc::clone(&channels[i % channels.len()]);
        let dialers = dialers.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let mut c = dialers
                .get(i)
                .connect(addr, source(addr, i), &tokens[i])
                .await?;
            let s = c.subscribe(&channel, None).await?;
            anyhow::Ok((
                c,
                Position {
                    channel,
                    epoch: s.epoch,
                    offset: s.offset,
                },
            ))
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// The loopback source address of socket `i` towards `addr`: 127.0.0.2 to 127.0.0.201 in
/// turn when the relay is on 127.0.0.1 (see [`LeanConn::connect_from`]), else the default.
pub fn source(addr: SocketAddr, i: usize) -> Option<std::net::IpAddr> {
    match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_loopback() => {
            Some(std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 200) as u8).into())
        }
        _ => None,
    }
}

/// Reads `conn` until `stop`: counts in-order deliveries, duplicates and gaps against
/// `pos`, records latency of every delivery (by [`Stamp::peek`]) and decrypts one in
/// `verify_every` in full. Returns the position reached.
pub async fn read_loop<S: LeanStream>(
    mut conn: LeanConn<S>,
    mut pos: Position,
    index: usize,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> (LeanConn<S>, Position) {
    let mut lat: Vec<u64> = Vec::with_capacity(64);
    let mut delivered = 0u64;
    let shard = index % SHARDS;
    loop {
        let frame = tokio::select! {
            biased;
            f = conn.next() => f,
            _ = stop.cancelled() => break,
        };
        match frame {
            Ok(LeanFrame::Text(t)) => {
                let Some(p) = PubView::parse(t) else { continue };
                let now = now_ns();
                if p.offset <= pos.offset {
                    shared.duplicated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if p.offset > pos.offset + 1 {
                    shared
                        .gaps
                        .fetch_add(p.offset - pos.offset - 1, Ordering::Relaxed);
                }
                pos.offset = p.offset;
                delivered += 1;
                let sent = shared.stamp.peek(p.data);
                if (p.offset + index as u64) % shared.verify_every == 0 {
                    let opened = shared.stamp.open(&pos.channel, &shared.event, p.data);
                    if opened.is_none() || opened != sent {
                        shared.bad_payloads.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.verified.fetch_add(1, Ordering::Relaxed);
                    }
                }
                match sent {
                    Some(t) => lat.push(now.saturating_sub(t) / 1000),
                    None => {
                        shared.bad_payloads.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if lat.len() >= FLUSH_EVERY || !conn.has_buffered() {
                    flush(&shared, shard, &mut lat, &mut delivered);
                }
            }
            Ok(LeanFrame::Closed(_)) | Err(_) => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    flush(&shared, shard, &mut lat, &mut delivered);
    (conn, pos)
}

fn flush(shared: &Shared, shard: usize, lat: &mut Vec<u64>, delivered: &mut u64) {
    if *delivered > 0 {
        shared.delivered.fetch_add(*delivered, Ordering::Relaxed);
        *delivered = 0;
    }
    if !lat.is_empty() {
        let mut h = shared.hists[shard].lock();
        for &l in lat.iter() {
            let _ = h.record(l.clamp(1, MAX_LATENCY_US));
        }
        lat.clear();
    }
}
