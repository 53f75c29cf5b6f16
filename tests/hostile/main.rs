//! Black-box hostility test against the real binary: about 2,700 malformed inputs (broken
//! JSON, deep nesting, huge numbers, wrong types, invalid UTF-8 in raw WebSocket text
//! frames, control characters in names, oversized frames and headers, WebSocket framing
//! abuse, half-open connections, a connect flood, HTTP request smuggling attempts), then
//! proof that the relay is unharmed:
//!
//! - a fresh normal client still connects, subscribes and receives;
//! - every connection drained (the session gauge and the process's open descriptors are
//!   back to what they were, waited for with a bound);
//! - memory came back: VmRSS after a second full round is within a tolerance of VmRSS
//!   after the first (see `RSS_TOLERANCE_KIB` for why two rounds and how much);
//! - no publication was lost or misrouted: a subscriber connected throughout receives
//!   exactly the publications the API acknowledged on its channel, in order and intact,
//!   and subscribers of another channel and of another app receive none.
//!
//! All traffic goes to 127.0.0.1; every wait and loop is bounded.
//!
//! Layout: this file holds the two tests and the round that drives the input families, one
//! module each (`preauth`, `authed_frames`, `raw_ws`, `bodies`, `smuggling`,
//! `connections`); `harness` holds what they share.
#![allow(dead_code, missing_docs, unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;

mod authed_frames;
mod bodies;
mod connections;
mod harness;
mod preauth;
mod raw_ws;
mod smuggling;

use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use harness::{
    Ctx, OTHER_SECRET, Tally, drained, gauge, main_channel, metrics, normal_client, quiet_channel,
    spawn_relay, watcher,
};
use sealcast::auth::{MintClaims, unix_now};
use sealcast::payload;
use sealcast_client::wire::Client;
use serde_json::Value;

/// Allowed VmRSS growth between the end of round 1 and the end of round 2, in KiB.
///
/// Why two rounds: freed memory is not necessarily returned to the kernel (glibc keeps
/// per-thread arenas and the top of each heap; tokio keeps worker buffers), so RSS after a
/// burst does not drop back to the pre-burst figure even without a leak. Round 1 grows the
/// allocator and the runtime to their working size; round 2 repeats exactly the same
/// inputs (about 1,300, over about 1,000 connections). A leak proportional to the inputs
/// adds again in round 2; a healthy relay reuses what it holds. Measured here (debug
/// binary): start 11.1 MiB, after round 1 14.6 MiB (+3.5), after round 2 15.0 MiB (+0.4).
/// 4 MiB is ten times that noise, yet a leak of 4 KiB per connection (one socket's read
/// and write buffers) or of 3 KiB per input would exceed it.
const RSS_TOLERANCE_KIB: u64 = 4 * 1024;

// ---------------------------------------------------------------------------------------
// One round

/// Every input family once, in a fixed order, with good publications to the main channel
/// in between (the main watcher must receive each of them, and nothing else).
async fn round(ctx: &mut Ctx) {
    ctx.publish_main().await;
    preauth::first_frames(ctx).await;
    ctx.publish_main().await;
    authed_frames::refused_requests(ctx).await;
    ctx.publish_main().await;
    authed_frames::violations(ctx).await;
    raw_ws::framing_abuse(ctx).await;
    ctx.publish_main().await;
    let token = publish_token(None);
    bodies::bad_publish_bodies(ctx, &token).await;
    bodies::bad_publish_headers(ctx, &token).await;
    bodies::oversize_publish_bodies(ctx, &token).await;
    ctx.publish_main().await;
    smuggling::smuggling_attempts(ctx).await;
    smuggling::good_pipelining(ctx, &token).await;
    connections::half_open(ctx).await;
    connections::connect_flood(ctx).await;
    ctx.publish_main().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_leave_the_relay_serving_clean_and_exact() {
    // The per-IP defaults of [limits] would throttle this test's own traffic (about 1,500
    // connections a round from 127.0.0.1); lift them out of the way.
    // `connect_flood_is_cut_at_the_per_ip_burst` checks those limits under a flood.
    let mut p = spawn_relay(GENEROUS_LIMITS);
    let addr = p.addr;
    let rss_start = p.rss_kib();

    // Watchers connected throughout: the main channel, another channel of the same app,
    // and the same channel name in another app.
    let main = watcher(
        addr,
        &connect_token(NS, "watch-main", 3600),
        &main_channel(),
    )
    .await;
    let quiet = watcher(
        addr,
        &connect_token(NS, "watch-quiet", 3600),
        &quiet_channel(),
    )
    .await;
    let other_token = MintClaims::connect("other", NS, "watch-other", unix_now(), 3600)
        .sign(Some("k1"), OTHER_SECRET);
    let other = watcher(addr, &other_token, &main_channel()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_base = p.open_fds();
    let sessions_base = gauge(addr, "sealcast_connections ").await;
    assert_eq!(sessions_base, 3.0);

    let mut ctx = Ctx {
        addr,
        acked: Vec::new(),
        next_msg: 0,
        tally: Tally::default(),
    };

    // Round 1 grows the allocator and runtime to their working size.
    round(&mut ctx).await;
    let (s1, f1) = drained(&p, sessions_base, fds_base).await;
    assert_eq!(s1, sessions_base, "sessions left after round 1");
    assert!(
        f1 <= fds_base + 1,
        "descriptors left after round 1: {f1} vs {fds_base}"
    );
    let rss_round1 = p.rss_kib();
    let inputs_round1 = ctx.tally.inputs;

    // Round 2: the same again; memory must not grow beyond the tolerance.
    round(&mut ctx).await;
    let (s2, f2) = drained(&p, sessions_base, fds_base).await;
    assert_eq!(s2, sessions_base, "sessions left after round 2");
    assert!(
        f2 <= fds_base + 1,
        "descriptors left after round 2: {f2} vs {fds_base}"
    );
    let rss_round2 = p.rss_kib();
    assert!(
        p.alive(),
        "the relay died; stderr: {}",
        p.stderr.lock().unwrap()
    );

    // A normal client after everything.
    normal_client(&ctx, "after").await;
    ctx.publish_main().await;

    // No publication lost, duplicated, reordered, altered or misrouted.
    let got_main = main.finish().await;
    let got_quiet = quiet.finish().await;
    let got_other = other.finish().await;
    let want: Vec<u64> = (1..=ctx.acked.len() as u64).collect();
    let acked_offsets: Vec<u64> = ctx.acked.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        acked_offsets, want,
        "the API's offsets have a gap or repeat"
    );
    let pubs: Vec<&Value> = got_main.iter().filter(|f| f["type"] == "pub").collect();
    assert_eq!(
        pubs.len(),
        got_main.len(),
        "unexpected frames: {got_main:?}"
    );
    let offsets: Vec<u64> = pubs.iter().map(|f| f["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, want, "main watcher's offsets");
    for (f, (_, text)) in pubs.iter().zip(&ctx.acked) {
        assert_eq!(f["channel"], main_channel());
        let plain = payload::decrypt(
            &PAYLOAD_KEY,
            &main_channel(),
            "Ev",
            f["data"].as_str().unwrap(),
        )
        .expect("payload intact");
        assert_eq!(plain, text.as_bytes());
    }
    assert!(
        got_quiet.is_empty(),
        "quiet channel received: {got_quiet:?}"
    );
    assert!(got_other.is_empty(), "other app received: {got_other:?}");

    eprintln!(
        "inputs: {} ({} per round); publications delivered: {}; VmRSS KiB: start {rss_start}, after round 1 {rss_round1}, after round 2 {rss_round2}; fds base {fds_base}",
        ctx.tally.inputs,
        inputs_round1,
        offsets.len()
    );
    for (k, n) in &ctx.tally.answers {
        eprintln!("  {k}: {n}");
    }
    assert!(ctx.tally.inputs >= 1000, "{} inputs", ctx.tally.inputs);
    // Coarse: the working size itself stays small (measured +3.5 MiB after round 1).
    assert!(
        rss_round1 <= rss_start + 64 * 1024,
        "VmRSS grew from {rss_start} KiB to {rss_round1} KiB in round 1"
    );
    assert!(
        rss_round2 <= rss_round1 + RSS_TOLERANCE_KIB,
        "VmRSS grew from {rss_round1} KiB to {rss_round2} KiB over an identical round"
    );
    assert!(p.alive());
}

const GENEROUS_LIMITS: &str = "[limits]\nmax_connections = 100000\nmax_connections_per_app = 100000\n\
     max_connections_per_namespace = 100000\nconnect_rate_per_ip = 100000\nconnect_burst_per_ip = 100000\n\
     publish_rate_per_app = 100000\npublish_burst_per_app = 100000\n";

// ---------------------------------------------------------------------------------------
// LIMITS FOLLOW-UP (enabled: `[limits]` has landed).

/// A connect flood from one IP is cut at `connect_burst_per_ip`: the excess upgrades are
/// refused with 429 (and counted), the connection cap holds, the relay keeps serving, and a
/// client that waits for the bucket to refill gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_flood_is_cut_at_the_per_ip_burst() {
    let p = spawn_relay(
        "[limits]\nmax_connections = 150\nconnect_rate_per_ip = 20\nconnect_burst_per_ip = 100\n",
    );
    let url = format!("ws://{}/v1/ws", p.addr);
    let started = Instant::now();
    let outcomes = join_all((0..300).map(|i| {
        let url = url.clone();
        async move {
            match tokio::time::timeout(
                WAIT,
                Client::connect(&url, &connect_token(NS, &format!("flood-{i}"), 600)),
            )
            .await
            {
                // Held open, so that the connection cap is reached too.
                Ok(Ok((c, _))) => Ok(c),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timeout".to_string()),
            }
        }
    }))
    .await;
    let connected = outcomes.iter().filter(|o| o.is_ok()).count();
    let refused: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    // The bucket refills at 20/s while the flood runs.
    let allowed = 100 + 20 * (started.elapsed().as_secs() as usize + 1);
    assert!(
        connected <= allowed,
        "burst not enforced: {connected} connected, at most {allowed} allowed"
    );
    assert!(connected >= 50, "too few connected: {connected}");
    assert!(
        refused
            .iter()
            .all(|e| e.contains("429") || e.contains("503")),
        "{refused:?}"
    );
    let m = metrics(p.addr).await;
    assert!(
        m.lines().any(|l| l.starts_with("sealcast_limit_hits_total")
            && l.contains("connect")
            && !l.ends_with(" 0")),
        "no connect-rate limit hit counted:\n{m}"
    );
    assert!(gauge(p.addr, "sealcast_connections ").await <= 150.0);
    drop(outcomes);
    // After the bucket refills (20/s), a normal client is served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ctx = Ctx {
        addr: p.addr,
        acked: Vec::new(),
        next_msg: 0,
        tally: Tally::default(),
    };
    normal_client(&ctx, "after-limited-flood").await;
}
