//! Abuse at the connection level rather than in any one input: half-open connections
//! (TCP only, half a handshake, half a frame) held while a normal client is served, and a
//! connect flood.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sealcast_client::wire::Client;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::raw::{RawWs, upgrade_request, ws_frame};
use crate::common::*;
use crate::harness::{Ctx, normal_client};

/// Half-open connections: TCP only, half a handshake, half a frame. Held while a normal
/// client works, then the relay must have closed those it can judge.
pub(crate) async fn half_open(ctx: &mut Ctx) {
    let addr = ctx.addr;
    let mut tcp_only = Vec::new();
    for _ in 0..40 {
        tcp_only.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut half_handshake = Vec::new();
    let req = upgrade_request(addr);
    for cut in [
        1,
        5,
        16,
        30,
        60,
        req.len() - 4,
        req.len() - 2,
        req.len() - 1,
    ] {
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&req.as_bytes()[..cut]).await.unwrap();
            half_handshake.push(s);
        }
    }
    let mut half_frame = Vec::new();
    let connect = json!({"type":"connect","token":connect_token(NS, "half", 600)}).to_string();
    let full = ws_frame(true, 0x1, connect.as_bytes(), true);
    for cut in [1, 2, 4, 6, full.len() / 2, full.len() - 1] {
        for authed in [false, true] {
            let mut w = if authed {
                RawWs::authed(addr).await
            } else {
                RawWs::open(addr).await
            };
            w.send(&full[..cut]).await;
            half_frame.push((authed, w));
        }
    }
    ctx.tally.inputs += tcp_only.len() + half_handshake.len() + half_frame.len();
    // Meanwhile a normal client is served.
    normal_client(ctx, "during-half-open").await;
    ctx.publish_main().await;
    // Sessions with half a frame end by the auth timeout (1 s) or the idle timeout (4 s).
    let ends = join_all(
        half_frame
            .iter_mut()
            .map(|(authed, w)| async move { (*authed, w.ending(Duration::from_secs(10)).await) }),
    )
    .await;
    for (authed, end) in ends {
        let want = if authed { Some(1001) } else { Some(4001) };
        assert_eq!(end, want, "half frame, authenticated: {authed}");
    }
    // TCP connections that never complete a request head are closed by the relay after
    // `http.header_read_timeout` (slowloris), set short by `spawn_relay`.
    let closed_by_relay = join_all(tcp_only.iter_mut().chain(half_handshake.iter_mut()).map(
        |s| async move {
            let mut b = [0u8; 512];
            matches!(
                tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await,
                Ok(Ok(_) | Err(_))
            )
        },
    ))
    .await
    .into_iter()
    .filter(|c| *c)
    .count();
    eprintln!(
        "half-open: {closed_by_relay} of {} request-less TCP connections closed by the relay",
        tcp_only.len() + half_handshake.len()
    );
    assert_eq!(closed_by_relay, tcp_only.len() + half_handshake.len());
    drop(tcp_only);
    drop(half_handshake);
    drop(half_frame);
}

/// Connect flood: 300 concurrent upgrades with a connect, 150 TCP connects that close at
/// once, 100 upgrades dropped before authenticating.
pub(crate) async fn connect_flood(ctx: &mut Ctx) {
    let addr = ctx.addr;
    let url = ctx.ws_url();
    let started = Instant::now();
    let flood = join_all((0..300).map(|i| {
        let url = url.clone();
        async move {
            match tokio::time::timeout(
                WAIT,
                Client::connect(&url, &connect_token(NS, &format!("flood-{i}"), 600)),
            )
            .await
            {
                Ok(Ok((c, _))) => {
                    c.close().await;
                    "connected".to_string()
                }
                Ok(Err(e)) => format!("refused: {e}"),
                Err(_) => "timeout".to_string(),
            }
        }
    }))
    .await;
    let mut flood_outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for o in &flood {
        let key: String = o.chars().take(60).collect();
        *flood_outcomes.entry(key).or_default() += 1;
    }
    for _ in 0..150 {
        if let Ok(s) = TcpStream::connect(addr).await {
            drop(s);
        }
    }
    join_all((0..100).map(|_| {
        let url = url.clone();
        async move {
            if let Ok(c) = Client::open(&url).await {
                drop(c);
            }
        }
    }))
    .await;
    eprintln!("flood: {flood_outcomes:?} in {:?}", started.elapsed());
    ctx.tally.inputs += 550;
    assert!(
        flood.iter().all(|o| o == "connected"
            || o.contains("429")
            || o.contains("503")
            || o.contains("4029")),
        "{flood_outcomes:?}"
    );
}
