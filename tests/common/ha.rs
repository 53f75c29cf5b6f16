//! Helpers of the high-availability tests (Redis Cluster, Sentinel): readiness, publishing
//! through a failover, and subscribers that check "every publication once, in order".

use std::time::{Duration, Instant};

use sealcast_client::wire::{Client, Incoming, Publisher};

use super::proc::Proc;
use super::{NS, connect_token, publish_token, sealed};

pub async fn ready(p: &Proc) -> bool {
    reqwest::get(format!("http://{}/readyz", p.addr))
        .await
        .is_ok_and(|r| r.status() == 200)
}

pub async fn wait_ready(p: &Proc, within: Duration) {
    let deadline = Instant::now() + within;
    while !ready(p).await {
        assert!(Instant::now() < deadline, "relay never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes, retrying (bounded by `deadline`) while the relay answers 503 or fails.
pub async fn publish_until(
    p: &Publisher,
    ch: &str,
    text: &str,
    deadline: Instant,
) -> (u64, String) {
    loop {
        let a = p
            .publish(
                &publish_token(None),
                ch,
                "Ev",
                &sealed(ch, "Ev", text),
                None,
            )
            .await;
        match a {
            Ok(a) if a.status == 200 => {
                return (
                    a.body["offset"].as_u64().unwrap(),
                    a.body["epoch"].as_str().unwrap().to_string(),
                );
            }
            Ok(a) => assert!(
                a.status == 503,
                "only 503 while the cluster fails over: {} {:?}",
                a.status,
                a.body
            ),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return (0, String::new());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A subscriber of one channel: what it has seen, on which relay.
pub struct Sub {
    pub ch: String,
    pub client: Client,
    pub epoch: String,
    pub seen: Vec<u64>,
}

/// Subscribes (retrying on errors, bounded) on one of `relays`, from `since`.
pub async fn subscribe(relays: &[&Proc], ch: &str, since: Option<(&str, u64)>, i: usize) -> Sub {
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut attempt = 0;
    loop {
        let relay = relays[(i + attempt) % relays.len()];
        attempt += 1;
        let connected = Client::connect(
            &format!("ws://{}/v1/ws", relay.addr),
            &connect_token(NS, &format!("u{i}"), 600),
        )
        .await;
        if let Ok((mut client, _)) = connected
            && let Ok(sub) = client.subscribe(ch, since).await
        {
            let epoch = sub["epoch"].as_str().unwrap().to_string();
            if let Some((e, _)) = since {
                assert!(
                    sub["recovered"] == true || sub["recovered"] == false,
                    "{sub}"
                );
                if sub["recovered"] == true {
                    assert_eq!(e, epoch, "recovered in the same epoch");
                }
            }
            return Sub {
                ch: ch.into(),
                client,
                epoch,
                seen: match since {
                    Some((_, o)) if sub["recovered"] == true => (1..=o).collect(),
                    _ => (1..=sub["offset"].as_u64().unwrap()).collect(),
                },
            };
        }
        assert!(Instant::now() < deadline, "could not subscribe to {ch}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads until `want` offsets are seen in order (true) or the relay closes (false).
pub async fn read_until(s: &mut Sub, want: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.seen.last().copied().unwrap_or(0) < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match s.client.next(left).await {
            Ok(Incoming::Frame(f)) if f["type"] == "pub" => {
                assert_eq!(f["channel"], s.ch.as_str());
                let o = f["offset"].as_u64().unwrap();
                assert_eq!(
                    o,
                    s.seen.len() as u64 + 1,
                    "in order, once: {:?} then {o}",
                    s.seen
                );
                s.seen.push(o);
            }
            Ok(Incoming::Frame(_)) => {}
            Ok(Incoming::Closed(_)) => return false,
            Err(e) => panic!("{}: waiting for offset {want}: {e:?}", s.ch),
        }
    }
    true
}
