//! Request bodies and audit records of the HTTP API: a stalled body is cut off, a huge
//! batch is refused without being parsed whole, batch items are parsed as strictly as a
//! single publication, and refusals are audited with the peer's address.

use std::time::{Duration, Instant};

use sealcast_client::wire::Publisher;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::proc::{Proc, serve};
use crate::common::*;

fn peak_rss_kib(p: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_off_at_the_read_timeout() {
    let (p, _) = serve("http-stall", "[http]\nbody_read_timeout = \"1s\"\n");
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"channel\":",
        publish_token(None)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut out))
        .await
        .expect("the relay answered and closed the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("body_read_timeout"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_batch_is_refused_without_being_parsed_whole() {
    let (p, _) = serve("http-batch", "");
    let publisher = Publisher::new(&format!("http://{}", p.addr));
    // Warm up the allocator with one ordinary batch.
    let ch = channel("b");
    let item = json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", "x")});
    let a = publisher
        .publish_batch(&publish_token(None), &[item])
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    let before = peak_rss_kib(&p);
    // Just under the 4 MiB body limit: two million tiny items.
    let body = format!("{{\"publications\":[{}0]}}", "0,".repeat(2_000_000));
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/publish/batch", p.addr))
        .bearer_auth(publish_token(None))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.json::<serde_json::Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("http.max_batch"), "{msg}");
    let grew = peak_rss_kib(&p).saturating_sub(before);
    // The body itself is 4 MB; parsing it into values used to add about 66 MB.
    assert!(grew < 24 * 1024, "peak RSS grew by {grew} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_items_with_duplicate_keys_are_refused_like_a_single_publish() {
    let (p, _) = serve("http-dup", "");
    let ch = channel("dup");
    let data = sealed(&ch, "Ev", "x");
    let dup = format!(r#"{{"channel":"{ch}","event":"Ev","event":"Other","data":"{data}"}}"#);
    let http = reqwest::Client::new();
    let single = http
        .post(format!("http://{}/v1/publish", p.addr))
        .bearer_auth(publish_token(None))
        .header("content-type", "application/json")
        .body(dup.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 400);
    let good = json!({"channel":ch,"event":"Ev","data":data}).to_string();
    let batch = http
        .post(format!("http://{}/v1/publish/batch", p.addr))
        .bearer_auth(publish_token(None))
        .header("content-type", "application/json")
        .body(format!(r#"{{"publications":[{dup},{good}]}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 200);
    let results = batch.json::<serde_json::Value>().await.unwrap()["results"].clone();
    assert_eq!(results[0]["error"]["code"], "bad_request", "{results}");
    assert!(
        results[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate field")
    );
    assert_eq!(
        results[1]["offset"], 1,
        "only the well-formed item is published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refusals_are_audited_with_the_peer_address() {
    let (p, _) = serve("http-audit", "");
    let publisher = Publisher::new(&format!("http://{}", p.addr));
    let ch = channel("a");
    let a = publisher
        .publish("not-a-token", &ch, "Ev", &sealed(&ch, "Ev", "x"), None)
        .await
        .unwrap();
    assert_eq!(a.status, 401);
    let outside = "elsewhere#t";
    let a = publisher
        .publish(
            &publish_token(Some(NS)),
            outside,
            "Ev",
            &sealed(outside, "Ev", "x"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(a.status, 403);
    let stderr = p.stderr.clone();
    eventually("both audit records written", || {
        let log = stderr.lock().unwrap().clone();
        async move {
            ["token_refused", "namespace_violation"]
                .iter()
                .all(|event| {
                    log.lines()
                        .any(|l| l.contains(event) && l.contains("peer=127.0.0.1:"))
                })
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_forwarded_element_does_not_hide_the_client_behind_the_proxy() {
    let (p, _) = serve("http-xff", "[http]\ntrusted_proxies = [\"127.0.0.1\"]\n");
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let mut req = b"POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\
        Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\
        X-Forwarded-For: caf"
        .to_vec();
    req.extend_from_slice(b"\xc3\xa9, 203.0.113.9\r\n\r\n{}");
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 401"));
    let stderr = p.stderr.clone();
    eventually("the refusal is audited under the forwarded client", || {
        let log = stderr.lock().unwrap().clone();
        async move {
            log.lines().any(|l| {
                l.contains("token_refused") && l.contains("peer=203.0.113.9 via 127.0.0.1:")
            })
        }
    })
    .await;
}
