//! Browser-facing protections and token lifecycle (hardening), over real sockets:
//! origins, connection and rate limits, revocation.

mod common;

use std::time::Duration;

use common::*;
use sealcast::auth::{MintClaims, unix_now};
use sealcast_client::wire::{Client, Incoming};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A 429 that says when to retry.
fn assert_rate_limited(r: &reqwest::Response) {
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1);
}

/// Opens a WebSocket with an `Origin` header; the HTTP status of a refusal.
async fn open_with_origin(relay: &Relay, origin: Option<&str>) -> Result<(), u16> {
    let mut req = relay.ws_url().into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", HeaderValue::from_str(o).unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn only_allowed_origins_may_open_a_websocket() {
    let relay = Relay::start_with(|c| {
        c.allowed_origins = Some(vec![
            "https://dash.example.com".into(),
            "https://*.gadgets.example.com".into(),
        ]);
    })
    .await;
    assert_eq!(
        open_with_origin(&relay, Some("https://dash.example.com")).await,
        Ok(())
    );
    assert_eq!(
        open_with_origin(&relay, Some("https://a.gadgets.example.com")).await,
        Ok(())
    );
    assert_eq!(
        open_with_origin(&relay, None).await,
        Ok(()),
        "non-browser clients"
    );
    for bad in [
        "https://evil.example",
        "http://dash.example.com",
        "https://gadgets.example.com",
        "https://dash.example.com.evil.io",
        "null",
    ] {
        assert_eq!(open_with_origin(&relay, Some(bad)).await, Err(403), "{bad}");
    }
    assert_eq!(
        relay.metric("sealcast_limit_hits_total{limit=\"origin\"}"),
        5.0
    );
    relay.stop().await;
}

#[tokio::test]
async fn total_connections_are_capped_before_upgrade() {
    let relay = Relay::start_with(|c| c.limits.max_connections = 3).await;
    let url = relay.ws_url();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::open(&url).await.unwrap());
    }
    assert_eq!(open_with_origin(&relay, None).await, Err(503));
    assert_eq!(
        relay.metric("sealcast_limit_hits_total{limit=\"connections\"}"),
        1.0
    );
    drop(held);
    // Places come back as the sessions end (bounded wait).
    let deadline = tokio::time::Instant::now() + WAIT;
    while open_with_origin(&relay, None).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop().await;
}

#[tokio::test]
async fn per_ip_connect_attempts_are_rate_limited_with_retry_after() {
    let relay = Relay::start_with(|c| {
        c.limits.connect_rate_per_ip = 1;
        c.limits.connect_burst_per_ip = 5;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(Client::open(&relay.ws_url()).await.unwrap());
    }
    let r = reqwest::Client::new()
        .get(format!("{}/v1/ws", relay.base()))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_rate_limited(&r);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    relay.stop().await;
}

#[tokio::test]
async fn sessions_per_app_and_per_namespace_are_capped_with_4029() {
    let relay = Relay::start_with(|c| {
        c.limits.max_connections_per_namespace = 2;
        c.limits.max_connections_per_app = 3;
    })
    .await;
    let url = relay.ws_url();
    let (_a, _) = Client::connect(&url, &connect_token(NS, "u1", 600))
        .await
        .unwrap();
    let (_b, _) = Client::connect(&url, &connect_token(NS, "u2", 600))
        .await
        .unwrap();
    let mut c = Client::open(&url).await.unwrap();
    c.send(&json!({"type":"connect","token":connect_token(NS, "u3", 600)}))
        .await
        .unwrap();
    assert_eq!(c.next(WAIT).await.unwrap(), Incoming::Closed(Some(4029)));
    let other_ns = format!("{NS}/other");
    let (_d, _) = Client::connect(&url, &connect_token(&other_ns, "u4", 600))
        .await
        .unwrap();
    let mut e = Client::open(&url).await.unwrap();
    e.send(&json!({"type":"connect","token":connect_token("third/ns", "u5", 600)}))
        .await
        .unwrap();
    assert_eq!(
        e.next(WAIT).await.unwrap(),
        Incoming::Closed(Some(4029)),
        "per app"
    );
    // Another app is counted apart.
    let other = MintClaims::connect("other", NS, "x", unix_now(), 600).sign(Some("k1"), OTHER_K1);
    assert!(Client::connect(&url, &other).await.is_ok());
    assert!(relay.metric("sealcast_limit_hits_total{limit=\"connections_per_namespace\"}") >= 1.0);
    assert!(relay.metric("sealcast_limit_hits_total{limit=\"connections_per_app\"}") >= 1.0);
    relay.stop().await;
}

#[tokio::test]
async fn publishes_per_app_are_rate_limited_with_retry_after_and_nothing_half_applies() {
    let relay = Relay::start_with(|c| {
        c.limits.publish_rate_per_app = 1;
        c.limits.publish_burst_per_app = 4;
    })
    .await;
    let p = relay.publisher();
    let ch = channel("g");
    // The whole burst in one request, so no refill can happen in between.
    let burst: Vec<_> = (0..4)
        .map(|_| json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", "x")}))
        .collect();
    assert_eq!(
        p.publish_batch(&publish_token(None), &burst)
            .await
            .unwrap()
            .status,
        200
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/publish", relay.base()))
        .bearer_auth(publish_token(None))
        .json(&json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", "y")}))
        .send()
        .await
        .unwrap();
    assert_rate_limited(&r);
    // A batch larger than the whole burst can never pass, and is refused whole.
    let items: Vec<_> = (0..5)
        .map(|_| json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", "z")}))
        .collect();
    let a = p.publish_batch(&publish_token(None), &items).await.unwrap();
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(relay.metric("sealcast_publications_total"), 4.0);
    // Another app has its own bucket.
    let other = MintClaims::publish("other", None, unix_now(), 60).sign(Some("k1"), OTHER_K1);
    let a = p
        .publish(&other, &ch, "Ev", &sealed(&ch, "Ev", "o"), None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    relay.stop().await;
}

#[tokio::test]
async fn revoking_a_user_closes_their_sessions_with_4003_and_refuses_their_tokens_until_then() {
    let relay = Relay::start().await;
    let url = relay.ws_url();
    let (mut a1, _) = Client::connect(&url, &connect_token(NS, "mallory", 600))
        .await
        .unwrap();
    let (mut a2, _) = Client::connect(&url, &connect_token(&format!("{NS}/x"), "mallory", 600))
        .await
        .unwrap();
    let (mut bob, _) = Client::connect(&url, &connect_token(NS, "bob", 600))
        .await
        .unwrap();
    let p = relay.publisher();
    let until = unix_now() + 3;
    let a = p
        .post(
            "/v1/revoke",
            &publish_token(None),
            &json!({"sub":"mallory","until":until}),
        )
        .await
        .unwrap();
    assert_eq!((a.status, a.body["closed"].as_u64()), (200, Some(2)));
    assert_eq!(a1.closed(WAIT).await.unwrap(), Some(4003));
    assert_eq!(a2.closed(WAIT).await.unwrap(), Some(4003));
    assert_eq!(
        bob.subscribe(&channel("g"), None).await.unwrap()["type"],
        "subscribed",
        "others unaffected"
    );
    // A fresh token for the user is refused with 4003 until `until`.
    let mut again = Client::open(&url).await.unwrap();
    again
        .send(&json!({"type":"connect","token":connect_token(NS, "mallory", 600)}))
        .await
        .unwrap();
    assert_eq!(
        again.next(WAIT).await.unwrap(),
        Incoming::Closed(Some(4003))
    );
    // After `until`, accepted again (bounded wait).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        if Client::connect(&url, &connect_token(NS, "mallory", 600))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "revocation never expired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    relay.stop().await;
}

#[tokio::test]
async fn revoking_a_token_id_and_the_rules_of_the_endpoint() {
    let relay = Relay::start().await;
    let url = relay.ws_url();
    let mut claims = MintClaims::connect("acme", NS, "carol", unix_now(), 600);
    claims.jti = Some("tok-1".into());
    let t1 = claims.sign(Some("k1"), ACME_K1);
    claims.jti = Some("tok-2".into());
    let t2 = claims.sign(Some("k1"), ACME_K1);
    let (mut s1, _) = Client::connect(&url, &t1).await.unwrap();
    let (mut s2, _) = Client::connect(&url, &t2).await.unwrap();
    let p = relay.publisher();
    let a = p
        .post("/v1/revoke", &publish_token(None), &json!({"jti":"tok-1"}))
        .await
        .unwrap();
    assert_eq!(a.body["closed"], 1);
    assert_eq!(s1.closed(WAIT).await.unwrap(), Some(4003));
    assert_eq!(
        s2.subscribe(&channel("g"), None).await.unwrap()["type"],
        "subscribed"
    );
    // A session that refreshes to a revoked token is closed.
    let r = s2.request(json!({"type":"refresh","token":t1})).await;
    assert!(
        matches!(
            r,
            Err(sealcast_client::wire::ClientError::Closed { code: Some(4003) })
        ),
        "{r:?}"
    );
    for (body, status) in [
        (json!({}), 400),
        (json!({"sub":"a","jti":"b"}), 400),
        (json!({"sub":""}), 400),
        (json!({"sub":"a","until":unix_now() - 1}), 400),
        (json!({"sub":"a","bogus":1}), 400),
    ] {
        assert_eq!(
            p.post("/v1/revoke", &publish_token(None), &body)
                .await
                .unwrap()
                .status,
            status,
            "{body}"
        );
    }
    // A namespace-limited publish token cannot revoke; a connect token cannot either.
    assert_eq!(
        p.post("/v1/revoke", &publish_token(Some(NS)), &json!({"sub":"a"}))
            .await
            .unwrap()
            .status,
        403
    );
    assert_eq!(
        p.post(
            "/v1/revoke",
            &connect_token(NS, "x", 60),
            &json!({"sub":"a"})
        )
        .await
        .unwrap()
        .status,
        401
    );
    relay.stop().await;
}

#[tokio::test]
async fn revocations_are_bounded() {
    let relay = Relay::start_with(|c| c.revocation.max_entries = 2).await;
    let p = relay.publisher();
    for (i, want) in [(1, 200), (2, 200), (3, 503)] {
        let a = p
            .post(
                "/v1/revoke",
                &publish_token(None),
                &json!({"sub":format!("u{i}")}),
            )
            .await
            .unwrap();
        assert_eq!(a.status, want);
    }
    // Repeating one already revoked takes no new place.
    assert_eq!(
        p.post("/v1/revoke", &publish_token(None), &json!({"sub":"u1"}))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        relay.metric("sealcast_limit_hits_total{limit=\"revocations\"}"),
        1.0
    );
    relay.stop().await;
}
