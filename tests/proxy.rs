//! `[http] trusted_proxies` over real sockets: behind a trusted proxy each forwarded
//! client has its own connect-rate bucket and audit records name it; without one, the
//! `X-Forwarded-For` header changes nothing.

mod common;

use std::time::Duration;

use common::proc::{spawn, temp_dir};
use common::*;
use sealcast_client::wire::{Client, ClientError};
use serde_json::json;

const SECRET: &str = "acme-key-one-0123456789abcdefghijklmnop";

/// Opens a WebSocket as a proxy would forward it; the HTTP status of a refusal.
async fn open_forwarded(ws: &str, forwarded_for: Option<&str>) -> Result<Client, u16> {
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|f| vec![("x-forwarded-for", f)])
        .unwrap_or_default();
    match Client::open_with_headers(ws, &headers).await {
        Ok(c) => Ok(c),
        Err(ClientError::Ws(tokio_tungstenite::tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_is_limited_and_audited_on_its_own() {
    let dir = temp_dir("proxy");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sealcast.toml");
    // One attempt per second refills each bucket; each burst below is spent within
    // milliseconds.
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n\
         [http]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [limits]\nconnect_rate_per_ip = 1\nconnect_burst_per_ip = 2\n\
         [shutdown]\ndrain = \"200ms\"\n\
         [[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n",
    )
    .unwrap();
    let p = spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[("ACME_KEY_1", SECRET)],
    );
    let ws = format!("ws://{}/v1/ws", p.addr);

    // Client A, as the proxy reports it, spends its burst of 2; the third attempt is 429.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(open_forwarded(&ws, Some("127.20.0.1")).await.unwrap());
    }
    assert_eq!(
        open_forwarded(&ws, Some("127.20.0.1")).await.err(),
        Some(429)
    );
    // Another client behind the same proxy is not held back by A.
    held.push(open_forwarded(&ws, Some("127.20.0.2")).await.unwrap());
    // A client cannot escape its bucket by prepending addresses: the proxy appended its
    // real address last, and that is the one counted.
    assert_eq!(
        open_forwarded(&ws, Some("127.30.0.9, 127.20.0.1"))
            .await
            .err(),
        Some(429)
    );
    // Hops that are trusted proxies themselves are skipped.
    held.push(
        open_forwarded(&ws, Some("127.20.0.3, 127.0.0.1"))
            .await
            .unwrap(),
    );
    held.push(
        open_forwarded(&ws, Some("127.20.0.3, 127.0.0.1"))
            .await
            .unwrap(),
    );
    assert_eq!(
        open_forwarded(&ws, Some("127.20.0.3")).await.err(),
        Some(429)
    );
    // No header: the proxy's own address, with a bucket of its own.
    held.push(open_forwarded(&ws, None).await.unwrap());

    // Audit records name the forwarded client and the proxy it came through.
    let bad = sealcast::auth::MintClaims::connect("acme", NS, "u", sealcast::auth::unix_now(), 60)
        .sign(Some("k1"), b"wrong-secret-wrong-secret-wrong-secret");
    let mut c = open_forwarded(&ws, Some("127.20.0.4")).await.unwrap();
    c.send(&json!({"type":"connect","token":bad}))
        .await
        .unwrap();
    assert_eq!(c.closed(WAIT).await.unwrap(), Some(4001));
    let deadline = std::time::Instant::now() + WAIT;
    let record = loop {
        let logs = p.stderr.lock().unwrap().clone();
        if let Some(l) = logs.lines().find(|l| l.contains("token_refused")) {
            break l.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audit record: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        record.contains("peer=127.20.0.4 via 127.0.0.1:"),
        "{record}"
    );
    drop(held);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn without_trusted_proxies_the_forwarded_header_changes_nothing() {
    let relay = Relay::start_with(|c| {
        c.limits.connect_rate_per_ip = 1;
        c.limits.connect_burst_per_ip = 2;
    })
    .await;
    let ws = relay.ws_url();
    let _a = open_forwarded(&ws, Some("127.20.0.1")).await.unwrap();
    let _b = open_forwarded(&ws, Some("127.20.0.2")).await.unwrap();
    // Every attempt is the TCP peer's, whatever the header claims.
    assert_eq!(
        open_forwarded(&ws, Some("127.20.0.3")).await.err(),
        Some(429)
    );
    assert_eq!(
        relay.metric("sealcast_limit_hits_total{limit=\"connect_rate_per_ip\"}"),
        1.0
    );
    relay.stop().await;
}
