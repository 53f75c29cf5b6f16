//! WebSocket session behaviour (PROTOCOL.md 3) over real sockets.

mod common;

use std::time::Duration;

use common::raw::RawWs;
use common::*;
use sealcast::auth::{MintClaims, unix_now};
use sealcast_client::wire::{Client, Incoming};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn no_connect_within_the_auth_timeout_closes_4001() {
    let relay = Relay::start_with(|c| c.websocket.auth_timeout = Duration::from_millis(300)).await;
    let mut c = Client::open(&relay.ws_url()).await.unwrap();
    assert_eq!(c.next(WAIT).await.unwrap(), Incoming::Closed(Some(4001)));
    relay.stop().await;
}

#[tokio::test]
async fn anything_before_connect_is_a_protocol_violation() {
    let relay = Relay::start().await;
    let before = [
        Message::text(json!({"type":"subscribe","channel":channel("g")}).to_string()),
        Message::text("not json"),
        Message::text("[1,2]"),
        Message::text(r#"{"type":"hello"}"#),
    ];
    for m in before {
        let mut c = Client::open(&relay.ws_url()).await.unwrap();
        c.send_raw(m.clone()).await.unwrap();
        assert_eq!(
            c.next(WAIT).await.unwrap(),
            Incoming::Closed(Some(1008)),
            "{m:?}"
        );
    }
    // A binary frame is not this protocol's at all: 1003, before connect as after.
    let mut c = Client::open(&relay.ws_url()).await.unwrap();
    c.send_raw(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(c.next(WAIT).await.unwrap(), Incoming::Closed(Some(1003)));
    relay.stop().await;
}

#[tokio::test]
async fn violations_after_connect_close_1008_or_1003_and_bad_fields_only_refuse() {
    let relay = Relay::start().await;
    for m in [
        Message::text("{oops"),
        Message::text(r#"{"type":"nope"}"#),
        Message::text(json!({"type":"connect","token":"x"}).to_string()),
    ] {
        let mut c = relay.client().await;
        c.send_raw(m.clone()).await.unwrap();
        assert_eq!(c.closed(WAIT).await.unwrap(), Some(1008), "{m:?}");
    }
    let mut c = relay.client().await;
    c.send_raw(Message::binary(vec![0u8; 4])).await.unwrap();
    assert_eq!(c.closed(WAIT).await.unwrap(), Some(1003));
    // A known frame with a bad field is answered with an error and the session goes on.
    let mut c = relay.client().await;
    let e = c
        .request(json!({"type":"subscribe","channel":"no-separator"}))
        .await
        .unwrap();
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    let e = c.request(json!({"type":"subscribe"})).await.unwrap();
    assert_eq!(e["code"], "bad_request");
    let e = c
        .request(json!({"type":"unsubscribe","channel":channel("never")}))
        .await
        .unwrap();
    assert_eq!(e["code"], "bad_request");
    let s = c.subscribe(&channel("g"), None).await.unwrap();
    assert_eq!(s["type"], "subscribed");
    let again = c.subscribe(&channel("g"), None).await.unwrap();
    assert_eq!(again["code"], "bad_request");
    relay.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_1009() {
    let relay = Relay::start_with(|c| c.websocket.max_frame_bytes = 2048).await;
    let mut c = relay.client().await;
    let big =
        json!({"type":"subscribe","channel":channel(&"x".repeat(100)),"pad":"y".repeat(4000)});
    c.send(&big).await.unwrap();
    assert_eq!(c.closed(WAIT).await.unwrap(), Some(1009));
    // Also before connect.
    let mut c = Client::open(&relay.ws_url()).await.unwrap();
    c.send(&json!({"type":"connect","token":"t".repeat(3000)}))
        .await
        .unwrap();
    assert_eq!(c.closed(WAIT).await.unwrap(), Some(1009));
    relay.stop().await;
}

#[tokio::test]
async fn subscribe_outside_the_namespace_is_forbidden_and_the_session_stays_usable() {
    let relay = Relay::start().await;
    let mut c = relay.client().await;
    for outside in [
        format!("{NS}0#g"),                                      // suffix of the ns
        "ari:cloud:jira::site/7f3c0d2e/dashboard/1000#g".into(), // prefix of the ns
        "ari:cloud:jira::site/7f3c0d2e#g".into(),
        format!("other{NS}#g"),
    ] {
        let e = c.subscribe(&outside, None).await.unwrap();
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{outside}"
        );
    }
    assert_eq!(relay.metric("sealcast_forbidden_total"), 4.0);
    let ch = channel("g");
    let s = c.subscribe(&ch, None).await.unwrap();
    assert_eq!(s["type"], "subscribed");
    let (off, _) = publish(&relay.publisher(), &ch, "{}").await;
    assert_eq!(read_pubs(&mut c, 1).await, vec![off]);
    relay.stop().await;
}

#[tokio::test]
async fn apps_never_see_each_others_channels() {
    let relay = Relay::start().await;
    let ch = channel("shared-name");
    let mut acme = relay.client().await;
    acme.subscribe(&ch, None).await.unwrap();
    let other_token =
        MintClaims::connect("other", NS, "u", unix_now(), 600).sign(Some("k1"), OTHER_K1);
    let (mut other, _) = Client::connect(&relay.ws_url(), &other_token)
        .await
        .unwrap();
    other.subscribe(&ch, None).await.unwrap();
    let other_pub = MintClaims::publish("other", None, unix_now(), 60).sign(Some("k1"), OTHER_K1);
    let a = relay
        .publisher()
        .publish(&other_pub, &ch, "Ev", &sealed(&ch, "Ev", "for other"), None)
        .await
        .unwrap();
    assert_eq!(a.body["offset"], 1);
    publish(&relay.publisher(), &ch, "for acme").await;
    let f = other.frame(WAIT).await.unwrap();
    assert_eq!(f["offset"], 1);
    let f = acme.frame(WAIT).await.unwrap();
    assert_eq!(f["offset"], 1, "acme's channel has its own offsets");
    assert_eq!(
        sealcast::payload::decrypt(&PAYLOAD_KEY, &ch, "Ev", f["data"].as_str().unwrap()).unwrap(),
        b"for acme"
    );
    // Neither got the other's publication.
    assert!(matches!(
        acme.next(Duration::from_millis(300)).await,
        Err(sealcast_client::wire::ClientError::Timeout)
    ));
    assert!(matches!(
        other.next(Duration::from_millis(300)).await,
        Err(sealcast_client::wire::ClientError::Timeout)
    ));
    relay.stop().await;
}

#[tokio::test]
async fn the_session_closes_4002_when_its_token_expires() {
    let relay = Relay::start_with(|c| c.tokens.leeway = Duration::ZERO).await;
    let token = connect_token(NS, "user-1", 2);
    let (mut c, connected) = Client::connect(&relay.ws_url(), &token).await.unwrap();
    let exp = connected["expires_at"].as_i64().unwrap();
    c.subscribe(&channel("g"), None).await.unwrap();
    assert_eq!(c.closed(Duration::from_secs(6)).await.unwrap(), Some(4002));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(now >= exp as f64, "not closed before exp");
    relay.stop().await;
}

#[tokio::test]
async fn refresh_extends_the_session_and_a_mismatch_is_refused() {
    let relay = Relay::start_with(|c| c.tokens.leeway = Duration::ZERO).await;
    let (mut c, _) = Client::connect(&relay.ws_url(), &connect_token(NS, "user-1", 2))
        .await
        .unwrap();
    for (token, code) in [
        (connect_token(NS, "user-2", 600), "forbidden"),
        (connect_token(&format!("{NS}0"), "user-1", 600), "forbidden"),
        ("garbage".to_string(), "unauthorized"),
    ] {
        let e = c
            .request(json!({"type":"refresh","token":token}))
            .await
            .unwrap();
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code))
        );
    }
    let fresh = connect_token(NS, "user-1", 600);
    let r = c
        .request(json!({"type":"refresh","token":fresh}))
        .await
        .unwrap();
    assert_eq!(r["type"], "refreshed");
    assert!(r["expires_at"].as_i64().unwrap() >= unix_now() + 590);
    // Past the first token's expiry the session is still open and serving.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ch = channel("after-refresh");
    assert_eq!(c.subscribe(&ch, None).await.unwrap()["type"], "subscribed");
    relay.stop().await;
}

#[tokio::test]
async fn pings_are_sent_and_a_silent_client_is_closed_at_the_idle_timeout() {
    let relay = Relay::start_with(|c| {
        c.websocket.ping_interval = Duration::from_millis(200);
        c.websocket.idle_timeout = Duration::from_millis(900);
    })
    .await;
    // A hand-rolled socket that never answers pings (a tungstenite client would queue
    // pongs by itself).
    let mut raw = RawWs::open(relay.addr).await;
    raw.send_text(&json!({"type":"connect","token":connect_token(NS, "u", 600)}).to_string())
        .await;
    let mut pings = 0;
    let code = tokio::time::timeout(WAIT, async {
        loop {
            match raw.read_frame().await {
                Some((0x9, _)) => pings += 1,
                Some((0x8, payload)) => {
                    break payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                }
                Some(_) => {}
                None => break None,
            }
        }
    })
    .await
    .unwrap();
    assert!(pings >= 2, "pings seen: {pings}");
    assert_eq!(code, Some(1001));
    // A client that answers pings stays connected past the idle timeout.
    let mut c = relay.client().await;
    for _ in 0..6 {
        // Reading lets tungstenite queue pongs; the request flushes them.
        let _ = c.next(Duration::from_millis(250)).await;
        c.send_raw(Message::Pong(Default::default())).await.unwrap();
    }
    assert_eq!(
        c.subscribe(&channel("alive"), None).await.unwrap()["type"],
        "subscribed"
    );
    relay.stop().await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_limited() {
    let relay = Relay::start_with(|c| c.websocket.max_subscriptions = 3).await;
    let mut c = relay.client().await;
    for i in 0..3 {
        assert_eq!(
            c.subscribe(&channel(&format!("g{i}")), None).await.unwrap()["type"],
            "subscribed"
        );
    }
    let e = c.subscribe(&channel("g3"), None).await.unwrap();
    assert_eq!(e["code"], "limit_exceeded");
    let u = c
        .request(json!({"type":"unsubscribe","channel":channel("g0")}))
        .await
        .unwrap();
    assert_eq!(u["type"], "unsubscribed");
    assert_eq!(
        c.subscribe(&channel("g3"), None).await.unwrap()["type"],
        "subscribed"
    );
    relay.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001() {
    let relay = Relay::start_with(|c| c.shutdown.drain = Duration::from_millis(200)).await;
    let mut a = relay.client().await;
    let mut b = relay.client().await;
    let ws = relay.ws_url();
    let stopping = tokio::spawn(relay.stop());
    assert_eq!(a.closed(WAIT).await.unwrap(), Some(1001));
    assert_eq!(b.closed(WAIT).await.unwrap(), Some(1001));
    stopping.await.unwrap();
    assert!(Client::open(&ws).await.is_err(), "listener closed");
}
