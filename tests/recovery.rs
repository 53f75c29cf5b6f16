//! History and recovery (PROTOCOL.md 6) over real sockets.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use sealcast_client::wire::Client;
use serde_json::json;

#[tokio::test]
async fn since_replays_exactly_the_missed_publications_then_live_ones() {
    let relay = Relay::start().await;
    let ch = channel("g");
    let p = relay.publisher();
    let mut c = relay.client().await;
    let s = c.subscribe(&ch, None).await.unwrap();
    let epoch = s["epoch"].as_str().unwrap().to_string();
    for i in 0..3 {
        publish(&p, &ch, &format!("live {i}")).await;
    }
    assert_eq!(read_pubs(&mut c, 3).await, vec![1, 2, 3]);
    c.close().await;
    // Missed while away.
    for i in 0..4 {
        publish(&p, &ch, &format!("missed {i}")).await;
    }
    let mut c = relay.client().await;
    let s = c.subscribe(&ch, Some((&epoch, 3))).await.unwrap();
    assert_eq!(
        (
            s["recovered"].as_bool(),
            s["offset"].as_u64(),
            s["epoch"].as_str()
        ),
        (Some(true), Some(7), Some(epoch.as_str()))
    );
    publish(&p, &ch, "after").await;
    let frames: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(c.frame(WAIT).await.unwrap());
        }
        v
    };
    let offsets: Vec<u64> = frames
        .iter()
        .map(|f| f["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![4, 5, 6, 7, 8]);
    let plain =
        sealcast::payload::decrypt(&PAYLOAD_KEY, &ch, "Ev", frames[0]["data"].as_str().unwrap())
            .unwrap();
    assert_eq!(plain, b"missed 0");
    assert!(
        c.next(Duration::from_millis(200)).await.is_err(),
        "no duplicate after"
    );
    relay.stop().await;
}

#[tokio::test]
async fn wrong_epoch_future_offset_or_evicted_range_is_not_recovered() {
    let relay = Relay::start_with(|c| c.history.max_per_channel = 5).await;
    let ch = channel("g");
    let p = relay.publisher();
    let (_, epoch) = publish(&p, &ch, "x").await;
    for _ in 0..9 {
        publish(&p, &ch, "x").await;
    }
    let mut c = relay.client().await;
    for (since, name) in [
        (("deadbeef", 9), "wrong epoch"),
        ((epoch.as_str(), 11), "ahead"),
        ((epoch.as_str(), 3), "evicted"),
    ] {
        let s = c.subscribe(&ch, Some(since)).await.unwrap();
        assert_eq!(
            (s["recovered"].as_bool(), s["offset"].as_u64()),
            (Some(false), Some(10)),
            "{name}"
        );
        // No replay follows a failed recovery.
        assert!(c.next(Duration::from_millis(150)).await.is_err(), "{name}");
        c.request(json!({"type":"unsubscribe","channel":ch}))
            .await
            .unwrap();
    }
    let s = c.subscribe(&ch, Some((&epoch, 5))).await.unwrap();
    assert_eq!(s["recovered"], true);
    assert_eq!(read_pubs(&mut c, 5).await, vec![6, 7, 8, 9, 10]);
    relay.stop().await;
}

#[tokio::test]
async fn caught_up_client_recovers_with_nothing_after_history_expired() {
    let relay = Relay::start_with(|c| c.history.ttl = Duration::from_millis(300)).await;
    let ch = channel("g");
    let p = relay.publisher();
    publish(&p, &ch, "a").await;
    let (last, epoch) = publish(&p, &ch, "b").await;
    // Bounded wait for the sweeper to expire the history.
    let deadline = tokio::time::Instant::now() + WAIT;
    while relay.state.metrics.history_bytes.get() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "history never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = relay.client().await;
    let s = c.subscribe(&ch, Some((&epoch, last))).await.unwrap();
    assert_eq!(
        (s["recovered"].as_bool(), s["offset"].as_u64()),
        (Some(true), Some(last))
    );
    c.request(json!({"type":"unsubscribe","channel":ch}))
        .await
        .unwrap();
    let s = c.subscribe(&ch, Some((&epoch, last - 1))).await.unwrap();
    assert_eq!(
        s["recovered"], false,
        "the expired one cannot be vouched for"
    );
    relay.stop().await;
}

#[tokio::test]
async fn history_byte_budget_is_enforced() {
    let relay = Relay::start_with(|c| c.history.max_bytes = 8 * 1024).await;
    let p = relay.publisher();
    for i in 0..40 {
        publish(&p, &channel(&format!("t{}", i % 4)), &"x".repeat(500)).await;
        assert!(relay.state.metrics.history_bytes.get() <= 8 * 1024);
    }
    assert!(relay.metric("sealcast_limit_hits_total{limit=\"history_bytes\"}") > 0.0);
    relay.stop().await;
}

/// The race of the issue: a publisher keeps publishing while a client disconnects and
/// resubscribes with `since` again and again; every publication must arrive exactly once,
/// in order, across all the reconnections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_while_a_publisher_keeps_publishing_has_no_gap_and_no_duplicate() {
    let relay = Relay::start().await;
    let ch = channel("race");
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (p, ch, stop, published) = (
            relay.publisher(),
            ch.clone(),
            Arc::clone(&stop),
            Arc::clone(&published),
        );
        tokio::spawn(async move {
            let t = publish_token(None);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 5_000 {
                // Small batches make publications arrive in bursts during resubscribes.
                let items: Vec<_> = (0..5).map(|i| json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", &format!("{}", n + i))})).collect();
                let a = p.publish_batch(&t, &items).await.unwrap();
                assert_eq!(a.status, 200);
                n += 5;
                published.store(n, Ordering::Relaxed);
            }
        })
    };
    let url = relay.ws_url();
    let mut received: Vec<u64> = Vec::new();
    let mut position: Option<(String, u64)> = None;
    for iteration in 0..40 {
        let (mut c, _) = Client::connect(&url, &connect_token(NS, "racer", 600))
            .await
            .unwrap();
        let since = position.as_ref().map(|(e, o)| (e.as_str(), *o));
        let s = c.subscribe(&ch, since).await.unwrap();
        assert_eq!(s["type"], "subscribed", "{s}");
        if iteration > 0 {
            assert_eq!(s["recovered"], true, "iteration {iteration}: {s}");
        }
        let epoch = s["epoch"].as_str().unwrap().to_string();
        let target = s["offset"].as_u64().unwrap();
        if iteration == 0 {
            received.extend(1..=target); // the first subscribe starts live at the current offset
        }
        // Read the replay and a few live ones, then drop the connection abruptly.
        let mut live = 0;
        loop {
            let f = match c.next(Duration::from_millis(500)).await {
                Ok(sealcast_client::wire::Incoming::Frame(f)) => f,
                _ => break,
            };
            let off = f["offset"].as_u64().unwrap();
            received.push(off);
            if off > target {
                live += 1;
                if live >= 3 + iteration % 7 {
                    break;
                }
            }
        }
        position = Some((epoch, *received.last().unwrap_or(&0)));
        drop(c);
    }
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    // Catch up to the end once more.
    let (mut c, _) = Client::connect(&url, &connect_token(NS, "racer", 600))
        .await
        .unwrap();
    let (epoch, last) = position.unwrap();
    let s = c.subscribe(&ch, Some((&epoch, last))).await.unwrap();
    assert_eq!(s["recovered"], true);
    let end = s["offset"].as_u64().unwrap();
    received.extend(read_pubs(&mut c, (end - last) as usize).await);
    let total = published.load(Ordering::Relaxed);
    assert_eq!(end, total);
    assert!(total >= 100, "the publisher ran during the test: {total}");
    assert_eq!(
        received,
        (1..=total).collect::<Vec<_>>(),
        "every publication exactly once, in order"
    );
    relay.stop().await;
}
