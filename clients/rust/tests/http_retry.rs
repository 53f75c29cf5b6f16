//! The publisher's retry rules against a scripted HTTP server on 127.0.0.1: which answers
//! are retried, that every attempt carries the same idempotency key and a freshly minted
//! token, that `Retry-After` is honoured, that a batch retries only its transient items, and
//! that an unreachable relay ends as a transport error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealcast_client::publish::{BatchItemResult, HttpClient, Publication, RetryPolicy};
use sealcast_client::{Error, PayloadKey, Publisher, Signer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "retry-test-secret-0123456789abcdef-0123";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: String,
    body: Value,
}

/// Answers each request with the next scripted `(status, extra headers, body)`.
async fn scripted(script: Vec<(u16, &'static str, Value)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        for (status, headers, body) in script {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, len) = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "request cut short");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    break (i + 4, len);
                }
            };
            while buf.len() < head_end + len {
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            log.lock().unwrap().push(Seen {
                path: head.split(' ').nth(1).unwrap().to_string(),
                authorization: head
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: "))
                    .unwrap_or("")
                    .to_string(),
                body: serde_json::from_slice(&buf[head_end..head_end + len]).unwrap(),
            });
            let text = body.to_string();
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{text}",
                text.len()
            );
            sock.write_all(answer.as_bytes()).await.unwrap();
            let _ = sock.shutdown().await;
        }
    });
    (base, seen)
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        retries: 4,
        base: Duration::from_millis(1),
        max: Duration::from_millis(5),
    }
}

fn signer() -> Signer {
    Signer::new("acme", Some("k1"), SECRET).unwrap()
}

#[tokio::test]
async fn transient_answers_are_retried_with_one_idempotency_key() {
    let (base, seen) = scripted(vec![
        (
            503,
            "",
            json!({"error": {"code": "unavailable", "message": "broker"}}),
        ),
        (
            429,
            "",
            json!({"error": {"code": "rate_limited", "message": "slow"}}),
        ),
        (502, "", json!("bad gateway")),
        (200, "", json!({"offset": 7, "epoch": "e1"})),
    ])
    .await;
    let p = Publisher::new(&base, signer(), PayloadKey::generate()).with_retry(fast());
    let at = p.publish("ns#t", "Ev", &json!({"a": 1})).await.unwrap();
    assert_eq!((at.offset, at.epoch.as_str()), (7, "e1"));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    let key = &seen[0].body["idempotency_key"];
    assert!(key.as_str().is_some_and(|k| !k.is_empty() && k.len() <= 64));
    for s in &seen {
        assert_eq!(s.path, "/v1/publish");
        assert_eq!(
            &s.body["idempotency_key"], key,
            "the same key on every attempt"
        );
        assert_eq!(s.body["data"], seen[0].body["data"], "the same ciphertext");
        assert!(s.authorization.starts_with("Bearer ey"));
    }
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_refusal_is_not_retried() {
    let (base, seen) = scripted(vec![
        (
            429,
            "retry-after: 1\r\n",
            json!({"error": {"code": "rate_limited", "message": "x"}}),
        ),
        (
            403,
            "",
            json!({"error": {"code": "forbidden", "message": "namespace"}}),
        ),
    ])
    .await;
    let retry = RetryPolicy {
        max: Duration::from_secs(2),
        ..fast()
    };
    let p = Publisher::new(&base, signer(), PayloadKey::generate()).with_retry(retry);
    let started = Instant::now();
    let err = p
        .publish_with_key("ns#t", "Ev", &1, Some("mine"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After"
    );
    match err {
        Error::Http {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!(
                (status, code.as_str(), message.as_str()),
                (403, "forbidden", "namespace")
            );
        }
        other => panic!("{other:?}"),
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "403 is final");
    assert!(seen.iter().all(|s| s.body["idempotency_key"] == "mine"));
}

#[tokio::test]
async fn retries_stop_after_the_policys_count_with_the_last_answer() {
    let (base, seen) = scripted(vec![
        (
            500,
            "",
            json!({"error": {"code": "internal", "message": "m"}})
        );
        3
    ])
    .await;
    let retry = RetryPolicy {
        retries: 2,
        ..fast()
    };
    let http = HttpClient::new(&base, || Ok("t".into())).with_retry(retry);
    let p = Publication {
        channel: "ns#t".into(),
        event: "Ev".into(),
        data: "AAAA".into(),
        idempotency_key: None,
    };
    let err = http.publish(&p).await.unwrap_err();
    assert_eq!(err.status(), 500);
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_batch_retries_only_its_transient_items_with_their_keys() {
    let (base, seen) = scripted(vec![
        (
            200,
            "",
            json!({"results": [
                {"offset": 1, "epoch": "e"},
                {"error": {"code": "rate_limited", "message": "later"}},
                {"error": {"code": "forbidden", "message": "no"}}
            ]}),
        ),
        (200, "", json!({"results": [{"offset": 2, "epoch": "e"}]})),
    ])
    .await;
    let p = Publisher::new(&base, signer(), PayloadKey::generate()).with_retry(fast());
    let rs = p
        .publish_batch(&[("ns#a", "Ev", 1), ("ns#b", "Ev", 2), ("other#c", "Ev", 3)])
        .await
        .unwrap();
    assert!(matches!(&rs[0], BatchItemResult::Published(r) if r.offset == 1));
    assert!(matches!(&rs[1], BatchItemResult::Published(r) if r.offset == 2));
    assert!(matches!(&rs[2], BatchItemResult::Failed { error } if error.code == "forbidden"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].path, "/v1/publish/batch");
    let first = seen[0].body["publications"].as_array().unwrap();
    let again = seen[1].body["publications"].as_array().unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0], first[1], "the same item, with the same key");
}

#[tokio::test]
async fn an_unreachable_relay_is_a_transport_error_after_the_retries() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = Publisher::new(
        &format!("http://127.0.0.1:{port}"),
        signer(),
        PayloadKey::generate(),
    )
    .with_retry(fast());
    let err = p.publish("ns#t", "Ev", &1).await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(err.status(), 0);
    // A token that cannot be minted fails before any request, naming the rule.
    let long = Publisher::with_token_options(
        &format!("http://127.0.0.1:{port}"),
        signer(),
        PayloadKey::generate(),
        None,
        3600,
    );
    let err = long.publish("ns#t", "Ev", &1).await.unwrap_err();
    assert!(
        err.to_string().contains("tokens.max_publish_lifetime"),
        "{err}"
    );
}
