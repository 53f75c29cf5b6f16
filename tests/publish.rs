//! The publish API (PROTOCOL.md 4.1, 4.2) over real HTTP.

mod common;

use common::*;
use serde_json::{Value, json};

async fn post_raw(relay: &Relay, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", relay.base()))
        .bearer_auth(publish_token(None))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn publish_validates_every_field_and_publishes_nothing_on_error() {
    let relay = Relay::start_with(|c| c.http.max_payload_bytes = 1024).await;
    let p = relay.publisher();
    let t = publish_token(None);
    let ch = channel("g");
    let ok = sealed(&ch, "Ev", "{}");
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"channel":"no-hash","event":"Ev","data":ok}),
            400,
            "bad_request",
        ),
        (
            json!({"channel":format!("{NS}#bad topic"),"event":"Ev","data":ok}),
            400,
            "bad_request",
        ),
        (
            json!({"channel":ch,"event":"bad event","data":ok}),
            400,
            "bad_request",
        ),
        (
            json!({"channel":ch,"event":"","data":ok}),
            400,
            "bad_request",
        ),
        (
            json!({"channel":ch,"event":"Ev","data":"not base64!"}),
            400,
            "bad_request",
        ),
        (
            json!({"channel":ch,"event":"Ev","data":"aGVsbG8gd29ybGQ"}),
            400,
            "bad_request",
        ),
        // Clear text that happens to be base64 but is too short for nonce and tag.
        (
            json!({"channel":ch,"event":"Ev","data":"aGVsbG8gd29ybGQ="}),
            400,
            "bad_request",
        ),
        (
            json!({"channel":ch,"event":"Ev","data":base64_of(27)}),
            400,
            "bad_request",
        ),
        (
            json!({"channel":ch,"event":"Ev","data":base64_of(1025)}),
            413,
            "payload_too_large",
        ),
        (
            json!({"channel":ch,"event":"Ev","data":ok,"idempotency_key":""}),
            400,
            "bad_request",
        ),
        (
            json!({"channel":ch,"event":"Ev","data":ok,"idempotency_key":"k".repeat(65)}),
            400,
            "bad_request",
        ),
        (json!({"channel":ch,"event":"Ev"}), 400, "bad_request"),
        (
            json!({"channel":ch,"event":7,"data":ok}),
            400,
            "bad_request",
        ),
        (json!([1, 2]), 400, "bad_request"),
    ];
    for (body, status, code) in cases {
        let a = p.post("/v1/publish", &t, &body).await.unwrap();
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(
            a.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (s, b) = post_raw(
        &relay,
        "/v1/publish",
        "text/plain",
        json!({"channel":ch,"event":"Ev","data":ok})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (s, _) = post_raw(
        &relay,
        "/v1/publish",
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(s, 400);
    // Boundaries accepted: 28 bytes and exactly the payload limit.
    for n in [28, 1024] {
        let a = p.publish(&t, &ch, "Ev", &base64_of(n), None).await.unwrap();
        assert_eq!(a.status, 200, "{n}");
    }
    assert_eq!(
        relay.metric("sealcast_publications_total"),
        2.0,
        "only the two good ones"
    );
    relay.stop().await;
}

fn base64_of(n: usize) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![0xA5u8; n])
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let relay = Relay::start_with(|c| c.http.max_body_bytes = 4096).await;
    let ch = channel("g");
    let body = json!({"channel":ch,"event":"Ev","data":base64_of(6000)})
        .to_string()
        .into_bytes();
    let (s, b) = post_raw(&relay, "/v1/publish", "application/json", body).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    // The message names the limit and the key that sets it.
    let message = b["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("4096") && message.contains("http.max_body_bytes"),
        "{message}"
    );
    // So does the decoded payload's 413.
    let small = Relay::start_with(|c| c.http.max_payload_bytes = 1024).await;
    let a = small
        .publisher()
        .publish(&publish_token(None), &ch, "Ev", &base64_of(1025), None)
        .await
        .unwrap();
    assert_eq!(a.status, 413, "{:?}", a.body);
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1024") && message.contains("http.max_payload_bytes"),
        "{message}"
    );
    small.stop().await;
    assert_eq!(relay.metric("sealcast_publications_total"), 0.0);
    relay.stop().await;
}

#[tokio::test]
async fn publish_answers_offset_and_epoch_and_delivers_the_ciphertext_untouched() {
    let relay = Relay::start().await;
    let ch = channel("g");
    let mut c = relay.client().await;
    let s = c.subscribe(&ch, None).await.unwrap();
    assert_eq!((s["offset"].as_u64(), s.get("recovered")), (Some(0), None));
    let data = sealed(&ch, "AddAbsence", r#"{"user":"ana","day":"2026-12-01"}"#);
    let a = relay
        .publisher()
        .publish(&publish_token(None), &ch, "AddAbsence", &data, None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body["offset"], 1);
    assert_eq!(a.body["epoch"], s["epoch"]);
    let f = c.frame(WAIT).await.unwrap();
    assert_eq!(
        f,
        json!({"type":"pub","channel":ch,"event":"AddAbsence","data":data,"offset":1})
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_result_and_delivers_once() {
    let relay = Relay::start().await;
    let ch = channel("g");
    let mut c = relay.client().await;
    c.subscribe(&ch, None).await.unwrap();
    let p = relay.publisher();
    let t = publish_token(None);
    let data = sealed(&ch, "Ev", "once");
    let first = p
        .publish(&t, &ch, "Ev", &data, Some("retry-1"))
        .await
        .unwrap();
    let second = p
        .publish(&t, &ch, "Ev", &data, Some("retry-1"))
        .await
        .unwrap();
    assert_eq!(first.body, second.body);
    let other = p
        .publish(&t, &ch, "Ev", &data, Some("retry-2"))
        .await
        .unwrap();
    assert_eq!(other.body["offset"], 2);
    assert_eq!(read_pubs(&mut c, 2).await, vec![1, 2]);
    assert!(
        c.next(std::time::Duration::from_millis(300)).await.is_err(),
        "no third delivery"
    );
    relay.stop().await;
}

#[tokio::test]
async fn batch_results_are_per_item_in_order() {
    let relay = Relay::start_with(|c| c.http.max_batch = 5).await;
    let ch = channel("g");
    let ch2 = channel("h");
    let mut c = relay.client().await;
    c.subscribe(&ch, None).await.unwrap();
    let p = relay.publisher();
    let t = publish_token(None);
    let items = vec![
        json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", "1")}),
        json!({"channel":"bad","event":"Ev","data":sealed(&ch, "Ev", "x")}),
        json!({"channel":ch2,"event":"Ev","data":sealed(&ch2, "Ev", "2"),"idempotency_key":"a"}),
        json!({"nonsense":true}),
        json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", "3")}),
    ];
    let a = p.publish_batch(&t, &items).await.unwrap();
    assert_eq!(a.status, 200);
    let r = a.body["results"].as_array().unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(
        (
            r[0]["offset"].as_u64(),
            r[2]["offset"].as_u64(),
            r[4]["offset"].as_u64()
        ),
        (Some(1), Some(1), Some(2))
    );
    assert_eq!(r[1]["error"]["code"], "bad_request");
    assert_eq!(r[3]["error"]["code"], "bad_request");
    assert!(r[0]["epoch"].is_string());
    assert_eq!(read_pubs(&mut c, 2).await, vec![1, 2]);
    // The same batch again: the idempotent item is not published twice.
    let again = p.publish_batch(&t, &items[2..3]).await.unwrap();
    assert_eq!(again.body["results"][0]["offset"], 1);
    // Over the batch limit: refused whole, nothing published.
    let before = relay.metric("sealcast_publications_total");
    let six: Vec<Value> = (0..6).map(|_| items[0].clone()).collect();
    let a = p.publish_batch(&t, &six).await.unwrap();
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    assert_eq!(relay.metric("sealcast_publications_total"), before);
    relay.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    // `/metrics` is on the public listener only when asked for (see tests/admin.rs).
    let relay = Relay::start_with(|c| c.http.public_metrics = true).await;
    let http = reqwest::Client::new();
    for (path, want) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let r = http
            .get(format!("{}{path}", relay.base()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap().trim(), want);
    }
    let _c = relay.client().await;
    let m = http
        .get(format!("{}/metrics", relay.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("# TYPE sealcast_connections gauge"), "{m}");
    assert_eq!(metric_value(&m, "sealcast_connections "), 1.0);
    relay.stop().await;
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400_not_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = Relay::start().await;
    let mut tcp = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let req = format!(
        "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n",
        publish_token(None)
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        relay.metric("sealcast_limit_hits_total{limit=\"http_body_bytes\"}"),
        0.0
    );
    relay.stop().await;
}
