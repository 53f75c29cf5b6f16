//! `connections` (hold N idle subscribed sockets, measure relay memory per connection
//! and the connect rate) and `storm` (N clients reconnect at once with `since`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::HandshakeKind;
use serde_json::json;

use super::dial::{Dial, Dialers};
use super::fanout::EVENT;
use super::relay::{NS, Relay, reset_peak, sample};
use super::report::Report;
use super::stamp::{Stamp, now_ns};
use super::sub::{Position, open_many, source};
use sealcast_client::wire::lean::{LeanFrame, PubView};

const MIB: f64 = 1048576.0;

fn channels(n: usize, per_channel: usize, tag: &str) -> Vec<Arc<str>> {
    let count = n.div_ceil(per_channel.max(1)).max(1);
    (0..count)
        .map(|c| Arc::from(format!("{NS}#{tag}-{}-{c}", std::process::id())))
        .collect()
}

/// Opens `n` authenticated, subscribed sockets (`per_channel` on each channel), holds
/// them for `hold`, and reports relay memory per connection and the connect rate.
pub async fn connections(
    relay: &Relay,
    n: usize,
    per_channel: usize,
    concurrency: usize,
    hold: Duration,
) -> anyhow::Result<Report> {
    crate::with_dialers!(relay, n, |d| {
        connections_on(relay, &d, n, per_channel, concurrency, hold).await
    })
}

async fn connections_on<D: Dial>(
    relay: &Relay,
    dialers: &Dialers<D>,
    n: usize,
    per_channel: usize,
    concurrency: usize,
    hold: Duration,
) -> anyhow::Result<Report> {
    let chans = channels(n, per_channel, "idle");
    let tokens = Arc::new(
        (0..n)
            .map(|i| relay.connect_token(&format!("u{i}")))
            .collect(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = sample(relay.pid)?;
    let self0 = sample(0)?;
    let relay_cpu0 = base.cpu_secs;
    let start = Instant::now();
    let conns = open_many(relay.addr, dialers, tokens, &chans, concurrency).await?;
    let secs = start.elapsed().as_secs_f64();
    let relay_cpu = sample(relay.pid)?.cpu_secs - relay_cpu0;
    let self_cpu = sample(0)?.cpu_secs - self0.cpu_secs;
    // Let lazily freed buffers go, then measure; hold, and measure again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = sample(relay.pid)?;
    tokio::time::sleep(hold).await;
    let end = sample(relay.pid)?;
    let me = sample(0)?;
    let mut r = Report::new("connections");
    r.add("connections", n as u64, "");
    r.add("channels", chans.len() as u64, "");
    r.addf("connect_secs", secs, 2, "s");
    r.addf(
        "connect_rate",
        n as f64 / secs,
        0,
        "connections/s (with auth and subscribe)",
    );
    r.addf(
        "relay_cpu_per_connect_us",
        relay_cpu / n as f64 * 1e6,
        1,
        "µs",
    );
    r.addf(
        "load_cpu_per_connect_us",
        self_cpu / n as f64 * 1e6,
        1,
        "µs",
    );
    r.addf("relay_baseline_mib", base.rss as f64 / MIB, 1, "MiB");
    r.addf("relay_rss_mib", held.rss as f64 / MIB, 1, "MiB");
    let per = held.rss.saturating_sub(base.rss) as f64 / n.max(1) as f64;
    r.addf(
        "relay_bytes_per_connection",
        per,
        0,
        "B (RSS - baseline) / N",
    );
    let per_end = end.rss.saturating_sub(base.rss) as f64 / n.max(1) as f64;
    r.addf("relay_bytes_per_connection_after_hold", per_end, 0, "B");
    r.addf("load_rss_mib", me.rss as f64 / MIB, 1, "MiB");
    let mut closed = 0u64;
    for (c, _) in conns {
        if !c.has_buffered() {
            c.close().await;
        } else {
            closed += 1;
        }
    }
    r.add("sockets_with_unread_frames", closed, "");
    Ok(r)
}

/// Parameters of a storm.
#[derive(Debug, Clone)]
pub struct StormOptions {
    /// Clients.
    pub clients: usize,
    /// Clients per channel.
    pub per_channel: usize,
    /// Publications per channel while the clients are away.
    pub missed: usize,
    /// Sockets opened at once while setting up (the storm itself opens all at once).
    pub concurrency: usize,
    /// Approximate length of the base64 `data`.
    pub payload_bytes: usize,
}

/// Connects N clients, drops them all, publishes `missed` per channel, then reconnects
/// all at once with `since`; reports the time until every client has recovered, and over
/// `wss://` the TLS handshakes (full or resumed) and their rate.
pub async fn storm(relay: &Relay, o: &StormOptions) -> anyhow::Result<Report> {
    crate::with_dialers!(relay, o.clients, |d| storm_on(relay, &d, o).await)
}

/// What one reconnecting client reports.
struct Reconnected {
    recovered: bool,
    /// From the storm's start until it was connected (TLS, upgrade, `connected`).
    connected: Duration,
    /// From the storm's start until it had everything it missed.
    done: Duration,
    kind: Option<HandshakeKind>,
}

async fn storm_on<D: Dial>(
    relay: &Relay,
    dialers: &Dialers<D>,
    o: &StormOptions,
) -> anyhow::Result<Report> {
    let chans = channels(o.clients, o.per_channel, "storm");
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..o.clients)
            .map(|i| relay.connect_token(&format!("u{i}")))
            .collect(),
    );
    let conns = open_many(
        relay.addr,
        dialers,
        Arc::clone(&tokens),
        &chans,
        o.concurrency,
    )
    .await?;
    let positions: Vec<Position> = conns.iter().map(|(_, p)| p.clone()).collect();
    for (c, _) in conns {
        c.abort();
    }
    wait_for_zero_connections(relay).await;
    // What the clients miss while away.
    let stamp = Stamp::new(rand::random());
    let publisher = relay.publisher();
    let token = relay.publish_token();
    let mut last = vec![0u64; chans.len()];
    let mut refused = 0u64;
    for _ in 0..o.missed {
        for chunk in (0..chans.len()).collect::<Vec<_>>().chunks(1000) {
            let body: Vec<_> = chunk
                .iter()
                .map(|&c| {
                    let data = stamp.seal(&chans[c], EVENT, now_ns(), o.payload_bytes);
                    json!({"channel": &*chans[c], "event": EVENT, "data": data})
                })
                .collect();
            let a = publisher.publish_batch(&token, &body).await?;
            let results = a.body["results"].as_array().cloned().unwrap_or_default();
            for (i, &c) in chunk.iter().enumerate() {
                match results.get(i).and_then(|r| r["offset"].as_u64()) {
                    Some(off) => last[c] = off,
                    None => refused += 1,
                }
            }
        }
    }
    let last = Arc::new(last);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak_reset = reset_peak(relay.pid);
    let before = sample(relay.pid)?;
    let self0 = sample(0)?;
    let lost = Arc::new(AtomicU64::new(0));
    let dups = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let addr = relay.addr;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(o.clients);
    for (i, pos) in positions.into_iter().enumerate() {
        let (tokens, last) = (Arc::clone(&tokens), Arc::clone(&last));
        let (lost, dups, retries) = (Arc::clone(&lost), Arc::clone(&dups), Arc::clone(&retries));
        let c = chans.iter().position(|c| *c == pos.channel).unwrap_or(0);
        let dialers = dialers.clone();
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut connected = Duration::ZERO;
            let (mut conn, sub) = loop {
                let tried = async {
                    let mut conn = dialers
                        .get(i)
                        .connect(addr, source(addr, i), &tokens[i])
                        .await?;
                    connected = start.elapsed();
                    let s = conn
                        .subscribe(&pos.channel, Some((&pos.epoch, pos.offset)))
                        .await?;
                    anyhow::Ok((conn, s))
                };
                match tried.await {
                    Ok(x) => break x,
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(e) => {
                        if retries.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("sealcast-load: storm: first connect error (retried): {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            let mut at = pos.offset;
            while at < last[c] {
                match tokio::time::timeout_at(deadline.into(), conn.next()).await {
                    Ok(Ok(LeanFrame::Text(t))) => {
                        let Some(p) = PubView::parse(t) else { continue };
                        if p.offset <= at {
                            dups.fetch_add(1, Ordering::Relaxed);
                        } else {
                            lost.fetch_add(p.offset - at - 1, Ordering::Relaxed);
                            at = p.offset;
                        }
                    }
                    _ => {
                        lost.fetch_add(last[c] - at, Ordering::Relaxed);
                        break;
                    }
                }
            }
            let r = Reconnected {
                recovered: sub.recovered == Some(true),
                connected,
                done: start.elapsed(),
                kind: conn.handshake_kind(),
            };
            anyhow::Ok((r, conn))
        }));
    }
    let mut times = Vec::with_capacity(tasks.len());
    let (mut not_recovered, mut failed) = (0u64, 0u64);
    let (mut full, mut resumed, mut last_connected) = (0u64, 0u64, Duration::ZERO);
    let mut held = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await? {
            Ok((r, conn)) => {
                not_recovered += u64::from(!r.recovered);
                times.push(r.done.as_secs_f64());
                last_connected = last_connected.max(r.connected);
                match r.kind {
                    Some(HandshakeKind::Resumed) => resumed += 1,
                    Some(_) => full += 1,
                    None => {}
                }
                held.push(conn);
            }
            Err(_) => failed += 1,
        }
    }
    let all = start.elapsed().as_secs_f64();
    let after = sample(relay.pid)?;
    let me = sample(0)?;
    times.sort_by(f64::total_cmp);
    let q = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let mut r = Report::new("storm");
    r.add("clients", o.clients as u64, "");
    r.add("channels", chans.len() as u64, "");
    r.add("missed_per_channel", o.missed as u64, "publications");
    r.addf("all_recovered_secs", all, 3, "s");
    r.addf(
        "all_connected_secs",
        last_connected.as_secs_f64(),
        3,
        "s (TLS, upgrade and `connected`)",
    );
    let connected = held.len() as f64;
    r.addf(
        "connects_per_sec",
        connected / last_connected.as_secs_f64().max(1e-6),
        0,
        "/s until the last client connected",
    );
    if relay.tls().is_some() {
        r.add("tls_full_handshakes", full, "");
        r.add(
            "tls_resumed_handshakes",
            resumed,
            "(as many as the relay's session cache or tickets allow)",
        );
        r.addf(
            "handshakes_per_sec",
            (full + resumed) as f64 / last_connected.as_secs_f64().max(1e-6),
            0,
            "/s until the last client connected",
        );
    }
    r.addf("client_recovered_p50", q(0.5), 3, "s");
    r.addf("client_recovered_p99", q(0.99), 3, "s");
    r.add("connect_retries", retries.load(Ordering::Relaxed), "");
    r.addf("relay_rss_before_mib", before.rss as f64 / MIB, 1, "MiB");
    r.addf(
        "relay_peak_mib",
        after.hwm as f64 / MIB,
        1,
        "MiB (VmHWM, reset before the storm)",
    );
    r.add("peak_reset", peak_reset, "");
    r.addf("relay_cpu_secs", after.cpu_secs - before.cpu_secs, 2, "s");
    r.addf(
        "relay_cpu_us_per_client",
        (after.cpu_secs - before.cpu_secs) / o.clients.max(1) as f64 * 1e6,
        0,
        "µs (connect, TLS, auth, subscribe, replay)",
    );
    r.addf("load_cpu_secs", me.cpu_secs - self0.cpu_secs, 2, "s");
    r.must_be_zero("not_recovered", not_recovered);
    r.must_be_zero("clients_failed", failed);
    r.must_be_zero("lost", lost.load(Ordering::Relaxed));
    r.must_be_zero("duplicated", dups.load(Ordering::Relaxed));
    r.must_be_zero("refused_publications", refused);
    drop(held);
    Ok(r)
}

/// Waits (up to 10 s) until the relay's `sealcast_connections` gauge reads 0.
async fn wait_for_zero_connections(relay: &Relay) {
    let url = format!("{}/metrics", relay.http_base());
    let http = relay.http();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(&url).send().await
            && let Ok(text) = r.text().await
            && text.lines().any(|l| l.trim() == "sealcast_connections 0")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
