//! Fan-out: one slow client never delays the others; it is closed with 4008 and recovers
//! every publication it missed from history.

mod common;

use std::time::Instant;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_is_closed_4008_by_the_frame_bound_and_recovers_everything() {
    stuck_client_scenario(20, |c| c.websocket.outbound_queue_frames = 32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_is_closed_4008_by_the_byte_bound_and_recovers_everything() {
    // About sixteen 48 KiB publications fit; the frame bound is far away. Batches of 4 so
    // that a reader that keeps up never holds more than a few.
    stuck_client_scenario(4, |c| {
        c.websocket.outbound_queue_frames = 100_000;
        c.websocket.outbound_queue_bytes = 1 << 20;
        c.http.max_payload_bytes = 64 * 1024;
    })
    .await;
}

async fn stuck_client_scenario(batch: u64, bound: impl FnOnce(&mut sealcast::config::Config)) {
    const N: u64 = 240;
    let relay = Relay::start_with(|c| {
        bound(c);
        c.http.max_body_bytes = 16 << 20;
    })
    .await;
    let ch = channel("firehose");
    let mut fast = relay.client().await;
    let mut stuck = relay.client().await;
    let epoch = fast.subscribe(&ch, None).await.unwrap()["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    stuck.subscribe(&ch, None).await.unwrap();
    // ~48 KiB payloads: enough bytes to fill the loopback socket buffers of a client
    // that does not read, so its session's queue overflows.
    let payload = "p".repeat(48 * 1024);
    let p = relay.publisher();
    let t = publish_token(None);
    let publishing = {
        let (p, ch) = (p.clone(), ch.clone());
        tokio::spawn(async move {
            for chunk in 0..(N / batch) {
                let items: Vec<_> = (0..batch)
                    .map(|i| json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", &format!("{}:{payload}", chunk * batch + i))}))
                    .collect();
                let a = p.publish_batch(&t, &items).await.unwrap();
                assert_eq!(a.status, 200);
            }
        })
    };
    // The fast client receives every publication while the stuck one reads nothing until
    // its queue has overflowed; then it reads (at once, not after the fast client: the
    // relay waits `write_timeout` for it to take what was on its way, then the 4008).
    let started = Instant::now();
    let fast_reads = async {
        let offsets = read_pubs(&mut fast, N as usize).await;
        (offsets, started.elapsed())
    };
    let stuck_reads = async {
        let overflowed = async {
            while relay.metric("sealcast_limit_hits_total{limit=\"outbound_queue\"}") < 1.0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(90), overflowed)
            .await
            .expect("the stuck client's queue overflowed");
        let mut got = Vec::new();
        loop {
            match stuck.next(WAIT).await.unwrap() {
                sealcast_client::wire::Incoming::Frame(f) => {
                    got.push(f["offset"].as_u64().unwrap())
                }
                sealcast_client::wire::Incoming::Closed(code) => break (got, code),
            }
        }
    };
    let ((offsets, fast_took), (got, code)) = tokio::join!(fast_reads, stuck_reads);
    assert_eq!(offsets, (1..=N).collect::<Vec<_>>());
    publishing.await.unwrap();
    assert_eq!(code, Some(4008));
    assert!((got.len() as u64) < N, "it missed some");
    assert_eq!(
        got,
        (1..=got.len() as u64).collect::<Vec<_>>(),
        "what it got was in order, without gap"
    );
    // It reconnects and recovers the rest from history, exactly once each.
    let mut again = relay.client().await;
    let last = got.last().copied().unwrap_or(0);
    let s = again.subscribe(&ch, Some((&epoch, last))).await.unwrap();
    assert_eq!(
        (s["recovered"].as_bool(), s["offset"].as_u64()),
        (Some(true), Some(N))
    );
    assert_eq!(
        read_pubs(&mut again, (N - last) as usize).await,
        ((last + 1)..=N).collect::<Vec<_>>()
    );
    eprintln!(
        "fast client: {N} x 48 KiB in {fast_took:?}; stuck client got {} before 4008",
        got.len()
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_each_get_every_publication_once() {
    let relay = Relay::start().await;
    let ch = channel("wide");
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut c = relay.client().await;
        c.subscribe(&ch, None).await.unwrap();
        clients.push(c);
    }
    let p = relay.publisher();
    for i in 0..20 {
        publish(&p, &ch, &format!("{i}")).await;
    }
    for c in &mut clients {
        assert_eq!(read_pubs(c, 20).await, (1..=20).collect::<Vec<_>>());
    }
    assert_eq!(relay.metric("sealcast_deliveries_total"), 1000.0);
    relay.stop().await;
}
