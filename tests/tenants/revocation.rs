//! The revocation store: a rate and a quota per app, a `jti` that cannot outlive its token,
//! and no connect that slips past a revocation made at the same moment.

use std::time::Duration;

use sealcast::auth::{MintClaims, unix_now};
use sealcast_client::wire::{Client, ClientError};
use serde_json::{Value, json};

use crate::common::proc::{Proc, serve};
use crate::common::*;

async fn revoke(p: &Proc, token: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/v1/revoke", p.addr))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_is_rate_limited_per_app() {
    let (p, _) = serve(
        "rev-rate",
        "admin_listen = \"127.0.0.1:0\"\n[limits]\nrevoke_rate_per_app = 1\nrevoke_burst_per_app = 3\n",
    );
    for i in 0..3 {
        let r = revoke(&p, &publish_token(None), json!({"sub":format!("u{i}")})).await;
        assert_eq!(r.status(), 200);
    }
    let r = revoke(&p, &publish_token(None), json!({"sub":"u3"})).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another app has its own bucket.
    let r = revoke(&p, &other_publish_token(), json!({"sub":"u3"})).await;
    assert_eq!(r.status(), 200);
    let m = p.metrics().await;
    assert!(metric_with_label(&m, "sealcast_limit_hits_total", "revoke_rate_per_app") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_at_its_revocation_quota_never_stops_another() {
    let (p, _) = serve(
        "rev-quota",
        "admin_listen = \"127.0.0.1:0\"\n[limits]\nmax_revocations_per_app = 5\n",
    );
    for i in 0..5 {
        let r = revoke(&p, &publish_token(None), json!({"sub":format!("u{i}")})).await;
        assert_eq!(r.status(), 200);
    }
    // Repeating a live revocation takes no new place.
    assert_eq!(
        revoke(&p, &publish_token(None), json!({"sub":"u0"}))
            .await
            .status(),
        200
    );
    let r = revoke(&p, &publish_token(None), json!({"sub":"u5"})).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_revocations_per_app"),
        "{body}"
    );
    for i in 0..5 {
        let r = revoke(&p, &other_publish_token(), json!({"jti":format!("j{i}")})).await;
        assert_eq!(r.status(), 200, "app other is unaffected");
    }
    let m = p.metrics().await;
    assert_eq!(metric_value(&m, "sealcast_revocations "), 10.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jti_revocation_lasts_no_longer_than_a_connect_token() {
    let (p, _) = serve(
        "rev-jti",
        "[tokens]\nmax_connect_lifetime = \"1h\"\nleeway = \"10s\"\n",
    );
    let now = unix_now();
    let r = revoke(
        &p,
        &publish_token(None),
        json!({"jti":"j1","until":now + 30 * 86400}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let until = r.json::<Value>().await.unwrap()["until"].as_i64().unwrap();
    assert!(
        until <= unix_now() + 3600 + 10 && until >= now + 3600,
        "{until}"
    );
    // A user revocation keeps the `until` it asked for.
    let r = revoke(
        &p,
        &publish_token(None),
        json!({"sub":"u","until":now + 30 * 86400}),
    )
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["until"], now + 30 * 86400);
}

fn token_with_jti(sub: &str, jti: &str) -> String {
    let mut c = MintClaims::connect("acme", NS, sub, unix_now(), 600);
    c.jti = Some(jti.into());
    c.sign(Some("k1"), ACME_K1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connect_slips_past_a_revocation_made_at_the_same_moment() {
    let (p, _) = serve("rev-race", "[limits]\nrevoke_burst_per_app = 1000\n");
    let url = format!("ws://{}/v1/ws", p.addr);
    for round in 0..20 {
        let sub = format!("racer-{round}");
        let connects: Vec<_> = (0..8)
            .map(|i| {
                let (url, token) = (url.clone(), token_with_jti(&sub, &format!("{round}-{i}")));
                tokio::spawn(async move { Client::connect(&url, &token).await })
            })
            .collect();
        let r = revoke(&p, &publish_token(None), json!({"sub":sub})).await;
        assert_eq!(r.status(), 200);
        for c in connects {
            match c.await.unwrap() {
                // Refused at connect: fine.
                Err(ClientError::Closed { code }) => assert_eq!(code, Some(4003)),
                Err(e) => panic!("{e}"),
                // Connected before the revocation: it must be closed by it.
                Ok((mut client, _)) => {
                    assert_eq!(
                        client.closed(Duration::from_secs(5)).await.unwrap(),
                        Some(4003),
                        "round {round}: a session survived the revocation of its user"
                    );
                }
            }
        }
    }
}
