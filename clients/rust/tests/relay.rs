//! The SDK against the real relay binary (`cargo build --bin sealcast`, or `SEALCAST_BIN`)
//! on 127.0.0.1: what the publisher encrypts arrives at the subscriber byte for byte, and
//! the subscriber recovers exactly after a dropped connection, reports `recovered:false`
//! after the relay restarted, and reconnects with a new token after 4002.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{NS, Proxy, Relay, WAIT, channel, next, payload_key, signer};
use sealcast_client::subscriber::{
    Backoff, ConnectionState, ErrorKind, Event, Options, Position, SubscribeOptions, Subscriber,
    SubscriberError,
};
use sealcast_client::{PayloadKey, Publisher};
use serde_json::{Value, json};

fn fast_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(50),
        max: Duration::from_millis(300),
        ..Backoff::default()
    }
}

/// Options for `url` with connect tokens of `ttl` seconds, counting the token calls and
/// recording every state and every reported error.
struct Probe {
    tokens: Arc<AtomicUsize>,
    states: Arc<Mutex<Vec<ConnectionState>>>,
    errors: Arc<Mutex<Vec<SubscriberError>>>,
}

fn options(url: &str, ttl: u64) -> (Options, Probe) {
    let probe = Probe {
        tokens: Arc::default(),
        states: Arc::default(),
        errors: Arc::default(),
    };
    let (tokens, states, errors) = (
        Arc::clone(&probe.tokens),
        Arc::clone(&probe.states),
        Arc::clone(&probe.errors),
    );
    let s = signer();
    let o = Options::new(url, payload_key(), move || {
        tokens.fetch_add(1, Ordering::SeqCst);
        let t = s.connect_token(NS, "user-1", ttl);
        async move { t }
    })
    .backoff(fast_backoff())
    .on_state(move |st| states.lock().unwrap().push(st.clone()))
    .on_error(move |e| errors.lock().unwrap().push(e.clone()));
    (o, probe)
}

fn publisher(relay: &Relay) -> Publisher {
    Publisher::new(&relay.base(), signer(), payload_key())
}

/// Reads the next event, which must be a publication; returns (offset, replayed, plaintext).
async fn publication(sub: &mut sealcast_client::Subscription) -> (u64, bool, Vec<u8>) {
    match next(sub).await {
        Event::Publication(p) => (p.offset, p.replayed, p.plaintext),
        other => panic!("expected a publication, got {other:?}"),
    }
}

async fn subscribed(sub: &mut sealcast_client::Subscription) -> (Position, Option<bool>) {
    match next(sub).await {
        Event::Subscribed {
            position,
            recovered,
        } => (position, recovered),
        other => panic!("expected subscribed, got {other:?}"),
    }
}

#[tokio::test]
async fn what_the_publisher_encrypts_arrives_byte_for_byte_and_revoke_ends_it() {
    let relay = Relay::start("127.0.0.1:0", "");
    let (o, probe) = options(&relay.ws_url(), 3600);
    let sub = Subscriber::start(o);
    let ch = channel("gadget-1");
    let mut s = sub.subscribe(&ch, SubscribeOptions::default()).unwrap();
    let (at, recovered) = subscribed(&mut s).await;
    assert_eq!((at.offset, recovered), (0, None));
    let p = publisher(&relay);
    let payloads = [
        json!({"who": "Zoë", "days": ["2026-12-24"], "note": "Weihnachten ✓ 🎄"}),
        json!([1, 2.5, null, true, "x"]),
        json!("just a string"),
    ];
    for (i, v) in payloads.iter().enumerate() {
        let r = p.publish(&ch, "AddAbsence", v).await.unwrap();
        assert_eq!(r.offset, i as u64 + 1);
        assert_eq!(r.epoch, at.epoch);
    }
    let batch = p
        .publish_batch(&[
            (ch.as_str(), "RemoveAbsence", json!({"id": 4})),
            (ch.as_str(), "RemoveAbsence", json!({"id": 5})),
        ])
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);
    for (i, v) in payloads
        .iter()
        .chain(&[json!({"id": 4}), json!({"id": 5})])
        .enumerate()
    {
        let (offset, replayed, plaintext) = publication(&mut s).await;
        assert_eq!(offset, i as u64 + 1);
        assert!(!replayed);
        assert_eq!(plaintext, serde_json::to_vec(v).unwrap(), "byte for byte");
    }
    assert_eq!(s.position().unwrap().offset, 5);

    // Revoking the user closes the session with 4003, which is never retried.
    let revoked = p.revoke_sub("user-1").await.unwrap();
    assert_eq!(revoked.closed, 1);
    let end = tokio::time::timeout(WAIT, s.next())
        .await
        .expect("the subscription ends");
    assert_eq!(end, None);
    let last = probe.states.lock().unwrap().last().cloned().unwrap();
    assert!(
        matches!(
            last,
            ConnectionState::Disconnected {
                code: 4003,
                will_retry: false,
                ..
            }
        ),
        "{last:?}"
    );
    assert!(
        probe
            .errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.kind == ErrorKind::Closed && e.code.as_deref() == Some("4003"))
    );
    assert_eq!(
        probe.tokens.load(Ordering::SeqCst),
        1,
        "no reconnect after 4003"
    );
}

#[tokio::test]
async fn a_dropped_connection_recovers_exactly_with_no_gap_and_no_duplicate() {
    let relay = Relay::start("127.0.0.1:0", "");
    let proxy = Proxy::start(relay.addr).await;
    let (o, probe) = options(&proxy.ws_url(), 3600);
    let sub = Subscriber::start(o);
    let ch = channel("recovery");
    let mut s = sub.subscribe(&ch, SubscribeOptions::default()).unwrap();
    let (first, _) = subscribed(&mut s).await;
    let p = publisher(&relay);
    for i in 1..=2 {
        p.publish(&ch, "Ev", &json!({"n": i})).await.unwrap();
    }
    for i in 1..=2u64 {
        assert_eq!(publication(&mut s).await.0, i);
    }
    proxy.cut();
    // Once the subscriber has seen the drop, the publications are surely made while it is
    // away (its attempts through the proxy fail until it is up again).
    let mut rx = sub.watch_state();
    common::state_where(&mut rx, |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    for i in 3..=5 {
        p.publish(&ch, "Ev", &json!({"n": i})).await.unwrap();
    }
    proxy.up();
    let (at, recovered) = subscribed(&mut s).await;
    assert_eq!(recovered, Some(true));
    assert_eq!(
        at,
        Position {
            epoch: first.epoch.clone(),
            offset: 5
        }
    );
    for i in 3..=5u64 {
        let (offset, replayed, plaintext) = publication(&mut s).await;
        assert_eq!((offset, replayed), (i, true));
        assert_eq!(plaintext, serde_json::to_vec(&json!({"n": i})).unwrap());
    }
    p.publish(&ch, "Ev", &json!({"n": 6})).await.unwrap();
    assert_eq!(publication(&mut s).await.0, 6, "live again, nothing twice");
    assert!(
        probe.tokens.load(Ordering::SeqCst) >= 2,
        "a token per connect"
    );
    assert!(
        probe.errors.lock().unwrap().is_empty(),
        "{:?}",
        probe.errors.lock().unwrap()
    );
}

#[tokio::test]
async fn after_a_relay_restart_recovery_fails_and_the_callback_says_so() {
    let relay = Relay::start("127.0.0.1:0", "");
    let (o, _probe) = options(&relay.ws_url(), 3600);
    let sub = Subscriber::start(o);
    let ch = channel("restart");
    let failed: Arc<Mutex<Vec<(Position, Position)>>> = Arc::default();
    let seen = Arc::clone(&failed);
    let opts = SubscribeOptions::default().on_recovery_failed(move |r| {
        seen.lock()
            .unwrap()
            .push((r.since.clone(), r.position.clone()))
    });
    let mut s = sub.subscribe(&ch, opts).unwrap();
    subscribed(&mut s).await;
    let r = publisher(&relay)
        .publish(&ch, "Ev", &json!({"before": true}))
        .await
        .unwrap();
    assert_eq!(publication(&mut s).await.0, 1);

    // Killed (its history is gone with it), then a new relay on the same address.
    let addr = relay.kill();
    let relay = Relay::start(&addr.to_string(), "");
    match next(&mut s).await {
        Event::RecoveryFailed(info) => {
            assert_eq!(
                info.since,
                Position {
                    epoch: r.epoch.clone(),
                    offset: 1
                }
            );
            assert_ne!(info.position.epoch, r.epoch);
        }
        other => panic!("expected RecoveryFailed, got {other:?}"),
    }
    let (at, recovered) = subscribed(&mut s).await;
    assert_eq!(recovered, Some(false));
    assert_eq!(failed.lock().unwrap().len(), 1, "the callback ran once");
    assert_eq!(failed.lock().unwrap()[0].1, at);
    let after = publisher(&relay)
        .publish(&ch, "Ev", &json!({"after": true}))
        .await
        .unwrap();
    let (offset, replayed, plaintext) = publication(&mut s).await;
    assert_eq!((offset, replayed), (after.offset, false));
    assert_eq!(plaintext, br#"{"after":true}"#);
}

#[tokio::test]
async fn at_expiry_4002_brings_a_new_token_and_the_stream_continues() {
    let relay = Relay::start("127.0.0.1:0", "[tokens]\nleeway = \"0s\"\n");
    // Refresh off: the relay closes with 4002 when the 2 s token expires.
    let (o, probe) = options(&relay.ws_url(), 2);
    let sub = Subscriber::start(o.refresh_at(None));
    let ch = channel("expiry");
    let mut s = sub.subscribe(&ch, SubscribeOptions::default()).unwrap();
    subscribed(&mut s).await;
    let p = publisher(&relay);
    p.publish(&ch, "Ev", &json!(1)).await.unwrap();
    assert_eq!(publication(&mut s).await.0, 1);
    let (_, recovered) = subscribed(&mut s).await; // after the 4002 and the new token
    assert_eq!(recovered, Some(true));
    let states = probe.states.lock().unwrap().clone();
    let closed = states
        .iter()
        .position(|st| {
            matches!(
                st,
                ConnectionState::Disconnected {
                    code: 4002,
                    will_retry: true,
                    ..
                }
            )
        })
        .unwrap_or_else(|| panic!("no 4002 in {states:?}"));
    if let ConnectionState::Disconnected { retry_in, .. } = &states[closed] {
        assert!(
            retry_in.unwrap() < Duration::from_millis(250),
            "a new token at once"
        );
    }
    assert!(matches!(
        states.last(),
        Some(ConnectionState::Connected { .. })
    ));
    assert_eq!(probe.tokens.load(Ordering::SeqCst), 2);
    p.publish(&ch, "Ev", &json!(2)).await.unwrap();
    assert_eq!(publication(&mut s).await.0, 2);
    sub.close().await;
}

#[tokio::test]
async fn the_in_band_refresh_keeps_the_session_past_its_first_token() {
    let relay = Relay::start("127.0.0.1:0", "[tokens]\nleeway = \"0s\"\n");
    let (o, probe) = options(&relay.ws_url(), 2);
    let sub = Subscriber::start(o.refresh_at(Some(0.5)));
    let ch = channel("refresh");
    let mut s = sub.subscribe(&ch, SubscribeOptions::default()).unwrap();
    subscribed(&mut s).await;
    // Past two lifetimes of the first token, on the same socket.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let p = publisher(&relay);
    p.publish(&ch, "Ev", &json!("still here")).await.unwrap();
    assert_eq!(publication(&mut s).await.0, 1);
    let states = probe.states.lock().unwrap().clone();
    assert!(
        !states
            .iter()
            .any(|st| matches!(st, ConnectionState::Disconnected { .. })),
        "{states:?}"
    );
    let expiries: Vec<i64> = states
        .iter()
        .filter_map(|st| match st {
            ConnectionState::Connected { expires_at, .. } => Some(*expires_at),
            _ => None,
        })
        .collect();
    assert!(
        expiries.len() >= 3 && expiries.windows(2).all(|w| w[0] <= w[1]),
        "{expiries:?}"
    );
    assert!(probe.tokens.load(Ordering::SeqCst) >= 3);
    assert!(probe.errors.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_subscription_ends_and_a_foreign_key_is_dropped_and_reported() {
    let relay = Relay::start("127.0.0.1:0", "");
    let (o, probe) = options(&relay.ws_url(), 3600);
    let sub = Subscriber::start(o);
    let mut outside = sub
        .subscribe("another/ns#x", SubscribeOptions::default())
        .unwrap();
    match next(&mut outside).await {
        Event::Refused { code, .. } => assert_eq!(code, "forbidden"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        tokio::time::timeout(WAIT, outside.next()).await.unwrap(),
        None
    );
    assert!(
        sub.subscribe("no-separator", SubscribeOptions::default())
            .is_err()
    );

    let ch = channel("keys");
    let mut s = sub.subscribe(&ch, SubscribeOptions::default()).unwrap();
    subscribed(&mut s).await;
    let other_key = PayloadKey::from_bytes(&[1; 32]).unwrap();
    let stranger = Publisher::new(&relay.base(), signer(), other_key.clone());
    stranger
        .publish(&ch, "Ev", &json!("unreadable"))
        .await
        .unwrap();
    publisher(&relay)
        .publish(&ch, "Ev", &json!("readable"))
        .await
        .unwrap();
    let (offset, _, plaintext) = publication(&mut s).await;
    assert_eq!(
        (offset, plaintext.as_slice()),
        (2, br#""readable""#.as_slice())
    );
    assert!(
        probe
            .errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.kind == ErrorKind::DecryptFailed)
    );
    // With the key added to the ring, its publications open.
    sub.set_keys(sealcast_client::KeyRing::new([payload_key(), other_key]).unwrap());
    stranger
        .publish(&ch, "Ev", &json!({"now": "readable"}))
        .await
        .unwrap();
    let (offset, _, plaintext) = publication(&mut s).await;
    assert_eq!(offset, 3);
    let v: Value = serde_json::from_slice(&plaintext).unwrap();
    assert_eq!(v["now"], "readable");
}

#[tokio::test]
async fn two_subscriptions_share_a_channel_and_each_tracks_its_position() {
    let relay = Relay::start("127.0.0.1:0", "");
    let (o, _probe) = options(&relay.ws_url(), 3600);
    let sub = Subscriber::start(o);
    let ch = channel("shared");
    let mut a = sub.subscribe(&ch, SubscribeOptions::default()).unwrap();
    subscribed(&mut a).await;
    let p = publisher(&relay);
    p.publish(&ch, "Ev", &json!(1)).await.unwrap();
    assert_eq!(publication(&mut a).await.0, 1);
    // A second listener on the live channel learns where the stream stands.
    let mut b = sub.subscribe(&ch, SubscribeOptions::default()).unwrap();
    let (at, recovered) = subscribed(&mut b).await;
    assert_eq!((at.offset, recovered), (1, None));
    p.publish(&ch, "Ev", &json!(2)).await.unwrap();
    assert_eq!(publication(&mut a).await.0, 2);
    assert_eq!(publication(&mut b).await.0, 2);
    assert_eq!(b.position().unwrap().offset, 2);
    // Dropping one keeps the relay subscription for the other.
    drop(a);
    p.publish(&ch, "Ev", &json!(3)).await.unwrap();
    assert_eq!(publication(&mut b).await.0, 3);
    assert_eq!(b.position().unwrap().offset, 3);
}

#[tokio::test]
async fn over_tls_with_a_private_ca() {
    let (ca, cert, key, tls) = common::test_pki();
    let dir = Relay::scratch("tls");
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let relay = Relay::start(
        "127.0.0.1:0",
        &format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    );
    let (o, _probe) = options(
        &format!("wss://127.0.0.1:{}/v1/ws", relay.addr.port()),
        3600,
    );
    let sub = Subscriber::start(o.tls_config(tls));
    let ch = channel("tls");
    let mut s = sub.subscribe(&ch, SubscribeOptions::default()).unwrap();
    subscribed(&mut s).await;
    let base = format!("https://127.0.0.1:{}", relay.addr.port());
    // Without the CA the relay's certificate is not trusted: a transport error.
    let untrusted =
        Publisher::new(&base, signer(), payload_key()).with_retry(sealcast_client::RetryPolicy {
            retries: 0,
            ..Default::default()
        });
    assert!(matches!(
        untrusted.publish(&ch, "Ev", &1).await,
        Err(sealcast_client::Error::Transport(_))
    ));
    let p = Publisher::new(&base, signer(), payload_key())
        .with_root_certificates_pem(ca.as_bytes())
        .unwrap();
    p.publish(&ch, "Ev", &json!({"over": "tls"})).await.unwrap();
    let (offset, _, plaintext) = publication(&mut s).await;
    assert_eq!(
        (offset, plaintext.as_slice()),
        (1, br#"{"over":"tls"}"#.as_slice())
    );
    let _ = std::fs::remove_dir_all(dir);
}
