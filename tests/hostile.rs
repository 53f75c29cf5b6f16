//! Black-box hostility test against the real binary: hundreds of malformed inputs (broken
//! JSON, deep nesting, huge numbers, wrong types, invalid UTF-8 in raw WebSocket text
//! frames, control characters in names, oversized frames and headers, WebSocket framing
//! abuse, half-open connections, a connect flood, HTTP request smuggling attempts), then
//! proof that the relay is unharmed:
//!
//! - a fresh normal client still connects, subscribes and receives;
//! - every connection drained (the session gauge and the process's open descriptors are
//!   back to what they were, waited for with a bound);
//! - memory came back: VmRSS after a second full round is within a tolerance of VmRSS
//!   after the first (see `RSS_TOLERANCE_KIB` for why two rounds and how much);
//! - no publication was lost or misrouted: a subscriber connected throughout receives
//!   exactly the publications the API acknowledged on its channel, in order and intact,
//!   and subscribers of another channel and of another app receive none.
//!
//! All traffic goes to 127.0.0.1; every wait and loop is bounded.
#![allow(dead_code, missing_docs, unreachable_pub)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::proc::{Proc, spawn};
use common::raw::{RawWs, upgrade_request, ws_frame};
use common::*;
use futures_util::future::join_all;
use sealcast::auth::{MintClaims, unix_now};
use sealcast::client::{Client, Incoming};
use sealcast::payload;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

const OTHER_SECRET: &[u8] = OTHER_K1;
/// LIMITS FOLLOW-UP: `[limits]` (connection and rate limits) has landed, so the main test
/// lifts the per-IP limits out of its way and `connect_flood_is_cut_at_the_per_ip_burst`
/// (at the end of this file) checks them under a flood. Set to `false` to run this file
/// against a relay without `[limits]` (and `#[ignore]` that test).
const LIMITS_LANDED: bool = true;
/// Set to `true` once the HTTP listener closes connections that send no complete request
/// head within a timeout. Today `axum::serve` runs hyper without a timer, so hyper's
/// header-read timeout never fires: a TCP connection that sends nothing, or half a request
/// head, is held (one descriptor and one task each) until the peer goes away.
const HEADER_TIMEOUT_LANDED: bool = true;

/// Allowed VmRSS growth between the end of round 1 and the end of round 2, in KiB.
///
/// Why two rounds: freed memory is not necessarily returned to the kernel (glibc keeps
/// per-thread arenas and the top of each heap; tokio keeps worker buffers), so RSS after a
/// burst does not drop back to the pre-burst figure even without a leak. Round 1 grows the
/// allocator and the runtime to their working size; round 2 repeats exactly the same
/// inputs (about 1,300, over about 1,000 connections). A leak proportional to the inputs
/// adds again in round 2; a healthy relay reuses what it holds. Measured here (debug
/// binary): start 11.1 MiB, after round 1 14.6 MiB (+3.5), after round 2 15.0 MiB (+0.4).
/// 4 MiB is ten times that noise, yet a leak of 4 KiB per connection (one socket's read
/// and write buffers) or of 3 KiB per input would exceed it.
const RSS_TOLERANCE_KIB: u64 = 4 * 1024;

// ---------------------------------------------------------------------------------------
// The binary

fn spawn_relay(extra: &str) -> Proc {
    // One directory per relay: the tests of this file run in parallel.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sealcast-hostile-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sealcast.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\n{extra}\n\
             [websocket]\nauth_timeout = \"1s\"\nidle_timeout = \"4s\"\nping_interval = \"2s\"\n\
             [http]\nmax_body_bytes = 65536\nheader_read_timeout = \"1s\"\n\
             [shutdown]\ndrain = \"200ms\"\n\
             [[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n\
             [[apps]]\nid = \"other\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"OTHER_KEY_1\"\n"
        ),
    )
    .unwrap();
    spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[
            ("ACME_KEY_1", std::str::from_utf8(ACME_K1).unwrap()),
            ("OTHER_KEY_1", std::str::from_utf8(OTHER_SECRET).unwrap()),
            ("RUST_LOG", "warn"),
        ],
    )
}

async fn metrics(addr: SocketAddr) -> String {
    let r = raw_http(
        addr,
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    String::from_utf8_lossy(&r).into_owned()
}

async fn gauge(addr: SocketAddr, name: &str) -> f64 {
    metric_value(&metrics(addr).await, name)
}

// ---------------------------------------------------------------------------------------
// Raw sockets

/// Writes `bytes`, then reads until the peer closes or `wait` passes; returns what came.
async fn raw_http(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return out;
    };
    let _ = tcp.write_all(bytes).await;
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// The status codes of every response in `bytes`.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

impl RawWs {
    /// Opens and authenticates as acme in NS.
    async fn authed(addr: SocketAddr) -> RawWs {
        let mut w = RawWs::open(addr).await;
        let connect = json!({"type":"connect","token":connect_token(NS, "raw", 600)}).to_string();
        w.send(&ws_frame(true, 0x1, connect.as_bytes(), true)).await;
        let (op, payload) = w.read_frame().await.expect("connected");
        assert_eq!(op, 0x1);
        assert!(String::from_utf8_lossy(&payload).contains("\"connected\""));
        w
    }
}

// ---------------------------------------------------------------------------------------
// Long-lived subscribers

struct Watcher {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(Vec<Value>, Option<Incoming>)>,
}

/// Subscribes `token`'s session to `channel` and collects every frame until stopped,
/// sending a WebSocket ping whenever it has been quiet for 500 ms (as a browser answers
/// the relay's pings) so that the idle timeout never ends it.
async fn watcher(addr: SocketAddr, token: &str, channel: &str) -> Watcher {
    let (mut c, _) = Client::connect(&format!("ws://{addr}/v1/ws"), token)
        .await
        .expect("watcher connects");
    let s = c.subscribe(channel, None).await.unwrap();
    assert_eq!(s["type"], "subscribed", "{s}");
    assert_eq!(s["offset"], 0, "{s}");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let mut frames = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        while !flag.load(Ordering::Acquire) && Instant::now() < deadline {
            match c.next(Duration::from_millis(500)).await {
                Ok(Incoming::Frame(f)) => frames.push(f),
                Ok(closed @ Incoming::Closed(_)) => return (frames, Some(closed)),
                Err(_) => {
                    if c.send_raw(Message::Ping(Default::default())).await.is_err() {
                        return (frames, Some(Incoming::Closed(None)));
                    }
                }
            }
        }
        // Drain what is already in flight.
        while let Ok(Incoming::Frame(f)) = c.next(Duration::from_millis(300)).await {
            frames.push(f);
        }
        c.close().await;
        (frames, None)
    });
    Watcher { stop, task }
}

impl Watcher {
    async fn finish(self) -> Vec<Value> {
        self.stop.store(true, Ordering::Release);
        let (frames, closed) = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("watcher stops")
            .unwrap();
        assert!(closed.is_none(), "a watcher was disconnected: {closed:?}");
        frames
    }
}

// ---------------------------------------------------------------------------------------
// The inputs

/// Counts of inputs sent and of the answers seen, per kind.
#[derive(Default, Debug)]
struct Tally {
    inputs: usize,
    answers: BTreeMap<String, usize>,
}

impl Tally {
    fn note(&mut self, kind: &str, answer: impl std::fmt::Display) {
        self.inputs += 1;
        *self.answers.entry(format!("{kind}:{answer}")).or_default() += 1;
    }
}

struct Ctx {
    addr: SocketAddr,
    /// Acknowledged publications on the main channel: (offset, plaintext).
    acked: Vec<(u64, String)>,
    next_msg: usize,
    tally: Tally,
}

fn main_channel() -> String {
    channel("main")
}

fn quiet_channel() -> String {
    channel("quiet")
}

impl Ctx {
    fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Publishes one good publication to the main channel and records it.
    async fn publish_main(&mut self) {
        self.next_msg += 1;
        let text = format!("m-{}", self.next_msg);
        let ch = main_channel();
        let body = json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", &text)}).to_string();
        let r = post(self.addr, "/v1/publish", &publish_token(None), &body).await;
        assert_eq!(r.0, 200, "{}", r.1);
        let v: Value = serde_json::from_str(&r.1).unwrap();
        self.acked.push((v["offset"].as_u64().unwrap(), text));
    }
}

/// A POST over a fresh connection; `(status, body)`.
async fn post(addr: SocketAddr, path: &str, token: &str, body: &str) -> (u16, String) {
    post_raw(
        addr,
        path,
        &format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
        body.as_bytes(),
    )
    .await
}

async fn post_raw(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let out = raw_http(addr, &req, Duration::from_secs(10)).await;
    let status = statuses(&out).first().copied().unwrap_or(0);
    let text = String::from_utf8_lossy(&out);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Text frames that are not a well-formed `connect`, sent as the first frame.
fn preauth_texts() -> Vec<String> {
    let good = connect_token(NS, "u", 600);
    let mut v: Vec<String> = [
        "",
        " ",
        "{",
        "}",
        "{]",
        "[",
        "[]",
        "{}",
        "null",
        "true",
        "0",
        "-1",
        "1e999",
        "\"connect\"",
        "{\"type\"}",
        "{\"type\":}",
        "{\"type\":\"connect\"",
        "{\"type\":\"connect\",}",
        "{'type':'connect'}",
        "{type:connect}",
        "{\"type\":\"connect\",\"token\":\"a\"}}",
        "{\"type\":\"connect\"}{\"type\":\"connect\"}",
        "\u{feff}{\"type\":\"connect\"}",
        "{\"type\":\"CONNECT\",\"token\":\"x\"}",
        "{\"type\":\"connect \",\"token\":\"x\"}",
        "{\"type\":\"subscribe\",\"channel\":\"a#b\"}",
        "{\"type\":\"pub\"}",
        "{\"type\":\"hello\"}",
        "{\"type\":null}",
        "{\"type\":1}",
        "{\"type\":[\"connect\"]}",
        "{\"type\":{\"a\":1}}",
        "{\"type\":\"connect\",\"token\":1}",
        "{\"type\":\"connect\",\"token\":null}",
        "{\"type\":\"connect\",\"token\":[\"a\"]}",
        "{\"type\":\"connect\",\"token\":{}}",
        "{\"type\":\"connect\",\"token\":true}",
        "{\"type\":\"connect\",\"token\":1e400}",
        "{\"type\":\"connect\",\"token\":\"\"}",
        "{\"type\":\"connect\",\"token\":\"...\"}",
        "{\"type\":\"connect\",\"token\":\"\\u0000\"}",
        "{\"type\":\"connect\",\"token\":\"a.b.c\"}",
        "{\"type\":\"refresh\",\"token\":\"x\"}",
        "{\"type\":\"unsubscribe\",\"channel\":\"a#b\"}",
        "{\"type\":\"connect\",\"token\":\"\\ud800\"}",
        "NaN",
        "Infinity",
        "[1,2,",
        "\"\\",
        "{\"a\":1,\"a\":2}",
        "{\"type\":\"connect\",\"token\":\"x\",\"type\":\"nope\"}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Deep nesting and huge numbers.
    for depth in [64, 127, 128, 129, 1000, 5000] {
        v.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
        v.push(format!(
            "{{\"type\":\"connect\",\"x\":{}1{}}}",
            "{\"a\":".repeat(depth.min(2000)),
            "}".repeat(depth.min(2000))
        ));
    }
    for digits in [20, 40, 310, 400, 4000] {
        v.push(format!(
            "{{\"type\":\"connect\",\"token\":{}}}",
            "9".repeat(digits)
        ));
        v.push(format!("{{\"type\":{}}}", "9".repeat(digits)));
    }
    // Tokens that fail verification: each character of a good token changed in turn
    // (header, payload and signature), truncations, and wrong claims.
    let step = good.len() / 24;
    for i in (0..good.len()).step_by(step.max(1)) {
        let mut t = good.clone().into_bytes();
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        v.push(json!({"type":"connect","token":String::from_utf8(t).unwrap()}).to_string());
    }
    for cut in [1, 10, good.len() / 2, good.len() - 1] {
        v.push(json!({"type":"connect","token":&good[..cut]}).to_string());
    }
    let now = unix_now();
    let bad = [
        MintClaims::connect("acme", NS, "u", now - 7200, 3600).sign(Some("k1"), ACME_K1),
        MintClaims::connect("acme", NS, "u", now + 600, 60).sign(Some("k1"), ACME_K1),
        MintClaims::connect("acme", NS, "u", now, 25 * 3600).sign(Some("k1"), ACME_K1),
        MintClaims::connect("acme", NS, "u", now, 60).sign(Some("k9"), ACME_K1),
        MintClaims::connect("acme", NS, "u", now, 60).sign(Some("k1"), OTHER_SECRET),
        MintClaims::connect("nope", NS, "u", now, 60).sign(Some("k1"), ACME_K1),
        MintClaims::connect("acme", "bad ns", "u", now, 60).sign(Some("k1"), ACME_K1),
        MintClaims::connect("acme", NS, "", now, 60).sign(Some("k1"), ACME_K1),
        MintClaims::publish("acme", None, now, 60).sign(Some("k1"), ACME_K1),
        sealcast::auth::sign_with_header(
            &json!({"alg":"none"}),
            &json!({"iss":"acme","sub":"u","ns":NS,"aud":"connect","iat":now,"exp":now+60}),
            b"",
        ),
        format!("{good}{}", "A".repeat(4200)),
    ];
    for t in bad {
        v.push(json!({"type":"connect","token":t}).to_string());
    }
    // Control characters where a token or type belongs.
    for b in (0u8..0x20).chain([0x7f]) {
        v.push(format!(
            "{{\"type\":\"connect\",\"token\":{}}}",
            json!(format!("a{}b", b as char))
        ));
    }
    v
}

/// Frames on an authenticated session that must be refused with `error` and leave it open.
fn bad_requests() -> Vec<String> {
    let mut v = Vec::new();
    let ns_bad = |c: char| format!("{}{c}x#t", &NS[..10]);
    let topic_bad = |c: char| format!("{NS}#t{c}x");
    let mut odd: Vec<char> = (0u8..0x20).map(char::from).collect();
    odd.extend([
        '\u{7f}',
        ' ',
        '\u{85}',
        '\u{a0}',
        '\u{202e}',
        '\u{feff}',
        'é',
        '\u{10ffff}',
    ]);
    for c in &odd {
        v.push(json!({"type":"subscribe","channel":ns_bad(*c)}).to_string());
        v.push(json!({"type":"subscribe","channel":topic_bad(*c)}).to_string());
        v.push(json!({"type":"unsubscribe","channel":topic_bad(*c)}).to_string());
    }
    for topic_char in ['#', '"', '\\', '<', '%', '?', '*', '!', '~', '+'] {
        v.push(json!({"type":"subscribe","channel":format!("{NS}#a{topic_char}b")}).to_string());
    }
    let wrong = [
        json!(null),
        json!(1),
        json!(-1),
        json!(1.5),
        json!(true),
        json!([]),
        json!(["a#b"]),
        json!({}),
        json!({"channel":"a#b"}),
        json!(""),
        json!("#"),
        json!("ns#"),
        json!("#t"),
        json!("no-hash"),
        json!("x".repeat(300) + "#t"),
        json!(format!("{NS}#{}", "t".repeat(129))),
    ];
    for w in &wrong {
        v.push(json!({"type":"subscribe","channel":w}).to_string());
        v.push(json!({"type":"refresh","token":w}).to_string());
        // null and 1 are a valid id and null a valid (absent) since: not hostile.
        if !w.is_null() && *w != json!(1) {
            v.push(json!({"type":"subscribe","id":w,"channel":main_channel()}).to_string());
        }
        if !w.is_null() {
            v.push(json!({"type":"subscribe","channel":channel("s"),"since":w}).to_string());
        }
    }
    for since in [
        json!({"epoch":1,"offset":1}),
        json!({"epoch":"e","offset":-1}),
        json!({"epoch":"e","offset":1.5}),
        json!({"epoch":"e"}),
        json!({"offset":1}),
    ] {
        v.push(json!({"type":"subscribe","channel":channel("s"),"since":since}).to_string());
    }
    // 300 digits still fit an f64; 310 would be a JSON error (a violation, tested above).
    for digits in [20, 30, 300] {
        let n = "9".repeat(digits);
        v.push(format!(
            "{{\"type\":\"subscribe\",\"id\":{n},\"channel\":\"{NS}#t\"}}"
        ));
        v.push(format!(
            "{{\"type\":\"subscribe\",\"channel\":\"{NS}#t\",\"since\":{{\"epoch\":\"e\",\"offset\":{n}}}}}"
        ));
    }
    // An id string whose multi-byte characters straddle byte 160 of serde's error message,
    // which quotes it (regression: `field_error` truncated inside a character and the
    // session task panicked, leaking its gauge and its subscriptions).
    let straddle = format!("{}{}", "a".repeat(137), "\u{e9}".repeat(20));
    for t in ["subscribe", "unsubscribe"] {
        v.push(json!({"type":t,"id":straddle,"channel":main_channel()}).to_string());
    }
    v.push(json!({"type":"refresh","id":straddle,"token":"x"}).to_string());
    v.push(
        json!({"type":"subscribe","channel":channel("s"),"since":{"epoch":straddle,"offset":"x"}})
            .to_string(),
    );
    // Deep nesting inside a known frame's field (within serde_json's depth limit).
    for depth in [10, 100, 120] {
        v.push(format!(
            "{{\"type\":\"subscribe\",\"channel\":{}\"a#b\"{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        ));
    }
    v
}

/// Frames on an authenticated session that are protocol violations (close 1008).
fn post_auth_violations() -> Vec<Message> {
    vec![
        Message::text("not json"),
        Message::text("[]"),
        Message::text("{\"type\":\"publish\"}"),
        Message::text("{\"type\":null}"),
        Message::text(format!("{}{}", "[".repeat(3000), "]".repeat(3000))),
        Message::text("{\"type\":\"subscribe\",\"id\":1e999,\"channel\":\"a#b\"}"),
        Message::text(json!({"type":"connect","token":connect_token(NS, "u", 60)}).to_string()),
        Message::binary(vec![0u8, 1, 2]),
        Message::binary(b"{\"type\":\"subscribe\",\"channel\":\"a#b\"}".to_vec()),
    ]
}

/// Invalid UTF-8 and WebSocket framing abuse, as `(name, bytes, authenticate first)`.
fn raw_ws_inputs() -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut v: Vec<(&'static str, Vec<u8>, bool)> = Vec::new();
    let invalid_utf8: [&[u8]; 10] = [
        b"\xff",
        b"\xc3\x28",
        b"\xa0\xa1",
        b"\xe2\x28\xa1",
        b"\xf0\x28\x8c\xbc",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\xf8\x88\x80\x80\x80",
        b"{\"type\":\"connect\",\"token\":\"\xfe\"}",
        b"{\"type\":\"subscribe\",\"channel\":\"a\xc0\x80#b\"}",
    ];
    for bad in invalid_utf8 {
        v.push(("invalid_utf8", ws_frame(true, 0x1, bad, true), false));
        v.push(("invalid_utf8_authed", ws_frame(true, 0x1, bad, true), true));
    }
    // Invalid UTF-8 split across a fragmented text message.
    let mut split = ws_frame(
        false,
        0x1,
        b"{\"type\":\"connect\",\"token\":\"\xe2\x82",
        true,
    );
    split.extend(ws_frame(true, 0x0, b"\"}", true));
    v.push(("invalid_utf8_fragmented", split, false));
    v.push((
        "unmasked",
        ws_frame(true, 0x1, b"{\"type\":\"connect\"}", false),
        false,
    ));
    v.push(("reserved_opcode_3", ws_frame(true, 0x3, b"x", true), false));
    v.push(("reserved_opcode_b", ws_frame(true, 0xb, b"x", true), true));
    let mut rsv = ws_frame(true, 0x1, b"{}", true);
    rsv[0] |= 0x70;
    v.push(("rsv_bits", rsv, false));
    v.push(("continuation_first", ws_frame(true, 0x0, b"x", true), true));
    v.push(("fragmented_ping", ws_frame(false, 0x9, b"x", true), true));
    v.push(("long_ping", ws_frame(true, 0x9, &[0u8; 200], true), true));
    v.push((
        "close_bad_code",
        ws_frame(true, 0x8, &[0x03, 0xe7], true),
        true,
    ));
    v.push(("close_one_byte", ws_frame(true, 0x8, &[0x03], true), true));
    v.push((
        "close_bad_reason",
        ws_frame(true, 0x8, &[0x03, 0xe8, 0xff, 0xfe], true),
        true,
    ));
    // A frame header that announces far more than the frame limit, then a trickle.
    let mut huge = vec![0x81u8, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4, b'{']);
    v.push(("header_2^62", huge.clone(), false));
    v.push(("header_2^62_authed", huge, true));
    let mut neg = vec![0x81u8, 0x80 | 127];
    neg.extend_from_slice(&u64::MAX.to_be_bytes());
    neg.extend_from_slice(&[1, 2, 3, 4]);
    v.push(("header_u64_max", neg, true));
    // Oversized frames, complete.
    let big = format!(
        "{{\"type\":\"connect\",\"token\":\"{}\"}}",
        "a".repeat(16_400)
    );
    v.push((
        "oversize_16k",
        ws_frame(true, 0x1, big.as_bytes(), true),
        false,
    ));
    v.push((
        "oversize_16k_authed",
        ws_frame(true, 0x1, big.as_bytes(), true),
        true,
    ));
    let mut many = Vec::new();
    for _ in 0..40 {
        many.extend(ws_frame(false, 0x1, &[b'a'; 500], true));
    }
    many.extend(ws_frame(true, 0x0, &[b'a'; 500], true));
    v.push(("oversize_fragmented", many, true));
    v
}

/// Bodies for `POST /v1/publish` that must be refused (4xx) and publish nothing.
fn bad_bodies() -> Vec<Vec<u8>> {
    let q = quiet_channel();
    let data = sealed(&q, "Ev", "x");
    let mut v: Vec<Vec<u8>> = [
        "",
        " ",
        "{",
        "}",
        "[]",
        "null",
        "1",
        "\"x\"",
        "{\"channel\":",
        "{\"channel\":\"a#b\"",
        "{\"channel\":\"a#b\",}",
        "{'channel':'a#b'}",
        "{}",
        "NaN",
        "[1,2,",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let good = json!({"channel":q,"event":"Ev","data":data});
    for (field, values) in [
        (
            "channel",
            vec![
                json!(null),
                json!(1),
                json!([q.clone()]),
                json!({}),
                json!(""),
                json!("no-hash"),
                json!(format!("{q}#x")),
            ],
        ),
        (
            "event",
            vec![
                json!(null),
                json!(1),
                json!(""),
                json!("a b"),
                json!("a/b"),
                json!("e".repeat(65)),
                json!(["Ev"]),
            ],
        ),
        (
            "data",
            vec![
                json!(null),
                json!(1),
                json!(""),
                json!("AAAA"),
                json!("not base64!"),
                json!(data.trim_end_matches('=')),
                json!(format!("{data}=")),
                json!(format!("-{}", &data[1..])),
                json!([data.clone()]),
            ],
        ),
        (
            "idempotency_key",
            vec![json!(""), json!(1), json!("k".repeat(65)), json!([])],
        ),
    ] {
        for w in values {
            let mut b = good.clone();
            b[field] = w;
            v.push(b.to_string().into_bytes());
        }
        let mut missing = good.clone();
        if field != "idempotency_key" {
            missing.as_object_mut().unwrap().remove(field);
            v.push(missing.to_string().into_bytes());
        }
    }
    // Control characters in names.
    for b in (0u8..0x20).chain([0x7f, b' ']) {
        let c = b as char;
        let mut b1 = good.clone();
        b1["channel"] = json!(format!("{NS}#q{c}x"));
        v.push(b1.to_string().into_bytes());
        let mut b2 = good.clone();
        b2["event"] = json!(format!("E{c}v"));
        v.push(b2.to_string().into_bytes());
    }
    // Invalid UTF-8 inside the JSON strings.
    for bad in [&b"\xff"[..], b"\xc0\xaf", b"\xed\xa0\x80"] {
        let mut b = br#"{"channel":""#.to_vec();
        b.extend_from_slice(q.as_bytes());
        b.extend_from_slice(bad);
        b.extend_from_slice(format!(r#"","event":"Ev","data":"{data}"}}"#).as_bytes());
        v.push(b);
    }
    // Deep nesting, huge numbers.
    // (Without `data`, so that a depth the parser accepts is still refused.)
    for depth in [127, 129, 5000] {
        v.push(
            format!(
                "{{\"channel\":\"{q}\",\"event\":\"Ev\",\"x\":{}1{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            )
            .into_bytes(),
        );
    }
    for n in ["1e400", "-1e400", &"9".repeat(500)] {
        v.push(format!("{{\"channel\":\"{q}\",\"event\":\"Ev\",\"data\":{n}}}").into_bytes());
    }
    // A payload over the limit (64 KiB decoded) within the body limit is 413.
    v.push(
        json!({"channel":q,"event":"Ev","data":"A".repeat(65_536 / 3 * 4 + 8)})
            .to_string()
            .into_bytes(),
    );
    v
}

/// HTTP requests that try to smuggle a second request, split framing, or overflow the
/// parser, as `(name, bytes, how many 200 answers are legitimate)`.
///
/// A request whose framing is ambiguous or invalid (both Content-Length and
/// Transfer-Encoding, two lengths, a malformed length or chunk size, whitespace before the
/// colon, Transfer-Encoding in HTTP/1.0) must be refused or answered and the connection
/// closed (RFC 9112 6.1, 6.3, 5.1), so whatever follows it is never run as a request: those
/// cases hide a *valid* publish to the quiet channel after the outer request; if the relay
/// ever ran it, a 200 would come back and the quiet watcher would receive it. Cases whose
/// framing is merely lenient (a bare LF, which RFC 9112 2.2 lets a server accept, or an odd
/// chunk extension, which 7.1.1 says to ignore) may
/// legitimately pipeline what follows, so they hide a publish with a bad token instead.
fn smuggling(addr: SocketAddr) -> Vec<(&'static str, Vec<u8>, usize)> {
    let q = quiet_channel();
    let token = publish_token(None);
    let body = json!({"channel":q,"event":"Ev","data":sealed(&q, "Ev", "smuggled")}).to_string();
    let hidden = format!(
        "POST /v1/publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let head = |extra: &str| {
        format!(
            "POST /v1/publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\n{extra}"
        )
    };
    let chunk0 = "0\r\n\r\n";
    let bad_token_hidden = hidden.replace(&token, "x.y.z");
    let mut v: Vec<(&'static str, String)> = vec![
        // CL.TE: Content-Length covers the hidden request, chunked ends before it.
        (
            "cl_te",
            format!(
                "{}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunk0}{hidden}",
                head(""),
                chunk0.len() + hidden.len()
            ),
        ),
        // TE.CL: chunked covers the hidden request, Content-Length ends before it.
        (
            "te_cl",
            format!(
                "{}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{hidden}\r\n{chunk0}",
                head(""),
                hidden.len()
            ),
        ),
        (
            "te_te_obfuscated",
            format!(
                "{}Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\nContent-Length: {}\r\n\r\n{chunk0}{hidden}",
                head(""),
                chunk0.len() + hidden.len()
            ),
        ),
        (
            "te_space_colon",
            format!(
                "{}Transfer-Encoding : chunked\r\nContent-Length: {}\r\n\r\n{chunk0}{hidden}",
                head(""),
                chunk0.len() + hidden.len()
            ),
        ),
        (
            "te_tab",
            format!(
                "{}Transfer-Encoding:\tchunked\r\nContent-Length: {}\r\n\r\n{chunk0}{hidden}",
                head(""),
                chunk0.len() + hidden.len()
            ),
        ),
        (
            "te_xchunked",
            format!(
                "{}Transfer-Encoding: xchunked\r\nContent-Length: {}\r\n\r\n{chunk0}{hidden}",
                head(""),
                chunk0.len() + hidden.len()
            ),
        ),
        (
            "te_chunked_identity",
            format!(
                "{}Transfer-Encoding: chunked, identity\r\n\r\n{chunk0}{hidden}",
                head("")
            ),
        ),
        (
            "te_obs_fold",
            format!(
                "{}Transfer-Encoding:\r\n chunked\r\nContent-Length: {}\r\n\r\n{chunk0}{hidden}",
                head(""),
                chunk0.len() + hidden.len()
            ),
        ),
        (
            "cl_cl_differ",
            format!(
                "{}Content-Length: 2\r\nContent-Length: {}\r\n\r\n{{}}{hidden}",
                head(""),
                2 + hidden.len()
            ),
        ),
        (
            "cl_list",
            format!(
                "{}Content-Length: 2, {}\r\n\r\n{{}}{hidden}",
                head(""),
                2 + hidden.len()
            ),
        ),
        (
            "cl_plus",
            format!("{}Content-Length: +2\r\n\r\n{{}}{hidden}", head("")),
        ),
        (
            "cl_negative",
            format!("{}Content-Length: -1\r\n\r\n{{}}{hidden}", head("")),
        ),
        (
            "cl_hex",
            format!("{}Content-Length: 0x2\r\n\r\n{{}}{hidden}", head("")),
        ),
        (
            "cl_huge",
            format!(
                "{}Content-Length: 99999999999999999999999\r\n\r\n{{}}{hidden}",
                head("")
            ),
        ),
        (
            "cl_space_colon",
            format!("{}Content-Length : 2\r\n\r\n{{}}{hidden}", head("")),
        ),
        (
            "chunk_size_garbage",
            format!(
                "{}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n{chunk0}{hidden}",
                head("")
            ),
        ),
        (
            "chunk_size_negative",
            format!(
                "{}Transfer-Encoding: chunked\r\n\r\n-2\r\n{{}}\r\n{chunk0}{hidden}",
                head("")
            ),
        ),
        (
            "chunk_size_overflow",
            format!(
                "{}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{{}}\r\n{chunk0}{hidden}",
                head("")
            ),
        ),
        (
            "chunk_size_too_small",
            format!(
                "{}Transfer-Encoding: chunked\r\n\r\n1\r\n{{}}\r\n{chunk0}{hidden}",
                head("")
            ),
        ),
        (
            // Extensions are ignored (RFC 9112 7.1.1), so this framing is unambiguous.
            "chunk_bad_extension",
            format!(
                "{}Transfer-Encoding: chunked\r\n\r\n2;\0\r\n{{}}\r\n{chunk0}{bad_token_hidden}",
                head("")
            ),
        ),
        (
            "chunk_missing_crlf",
            format!(
                "{}Transfer-Encoding: chunked\r\n\r\n2\r\n{{}}0\r\n\r\n{hidden}",
                head("")
            ),
        ),
        (
            "chunk_lf_only",
            format!(
                "{}Transfer-Encoding: chunked\r\n\r\n2\n{{}}\n0\n\n{bad_token_hidden}",
                head("")
            ),
        ),
        (
            "bare_lf_headers",
            format!(
                "POST /v1/publish HTTP/1.1\nHost: x\nAuthorization: Bearer {token}\nContent-Type: application/json\nContent-Length: 2\n\n{{}}{bad_token_hidden}"
            ),
        ),
        (
            "cr_in_header",
            format!("{}X-A: a\rContent-Length: 2\r\n\r\n{{}}{hidden}", head("")),
        ),
        (
            "get_with_body",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{hidden}",
                hidden.len()
            ),
        ),
        (
            "http10_te",
            format!(
                "POST /v1/publish HTTP/1.0\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunk0}{hidden}"
            ),
        ),
        (
            "absolute_uri",
            format!(
                "POST http://evil.invalid/v1/publish HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 2\r\n\r\n{{}}"
            ),
        ),
        (
            "bad_method",
            "P\0ST /v1/publish HTTP/1.1\r\n\r\n".to_string(),
        ),
        (
            "bad_version",
            "POST /v1/publish HTTP/9.9\r\n\r\n".to_string(),
        ),
        ("no_version", "POST /v1/publish\r\n\r\n".to_string()),
        (
            "space_in_target",
            "POST /v1/pub lish HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        ),
        (
            "nul_in_header",
            format!("{}X-A: a\0b\r\nContent-Length: 2\r\n\r\n{{}}", head("")),
        ),
        (
            "many_headers",
            format!(
                "{}{}Content-Length: 2\r\n\r\n{{}}",
                head(""),
                "X-A: b\r\n".repeat(200)
            ),
        ),
        (
            "huge_header",
            format!(
                "{}X-A: {}\r\nContent-Length: 2\r\n\r\n{{}}",
                head(""),
                "a".repeat(1 << 20)
            ),
        ),
        (
            "huge_request_line",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20)),
        ),
        (
            "huge_auth_header",
            format!(
                "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
                "a".repeat(60_000)
            ),
        ),
    ];
    // Pipelining: a refused request followed by another refused one; both are answered,
    // neither publishes (the second also targets the quiet channel, with a bad token).
    v.push((
        "pipelined_refused",
        format!(
            "{}Content-Length: 2\r\n\r\n{{}}{bad_token_hidden}",
            head("")
        ),
    ));
    v.into_iter()
        .map(|(n, s)| (n, s.into_bytes(), usize::from(n == "get_with_body")))
        .collect()
}

// ---------------------------------------------------------------------------------------
// One round

async fn round(ctx: &mut Ctx) {
    let addr = ctx.addr;
    ctx.publish_main().await;

    // 1. First frames that are not a good connect: each on its own connection.
    let texts = preauth_texts();
    for chunk in texts.chunks(25) {
        let url = ctx.ws_url();
        let answers = join_all(chunk.iter().map(|t| {
            let url = url.clone();
            async move {
                let mut c = Client::open(&url).await.expect("open");
                c.send_raw(Message::text(t.clone())).await.expect("send");
                let code = c.closed(WAIT).await.expect("closed in time");
                (t.clone(), code)
            }
        }))
        .await;
        for (t, code) in answers {
            let prefix: String = t.chars().take(60).collect();
            assert!(
                matches!(code, Some(1008 | 1009 | 4001 | 4002)),
                "{prefix:?}: {code:?}"
            );
            ctx.tally.note("ws_preauth", code.unwrap_or(0));
        }
    }
    ctx.publish_main().await;

    // 2. Refused requests on authenticated sessions: answered, session stays open.
    let reqs = bad_requests();
    let url = ctx.ws_url();
    let per = reqs.len().div_ceil(4);
    let answers = join_all(reqs.chunks(per).map(|chunk| {
        let url = url.clone();
        async move {
            let (mut c, _) = Client::connect(&url, &connect_token(NS, "bad-requests", 600))
                .await
                .expect("connect");
            let mut got = Vec::new();
            for t in chunk {
                c.send_raw(Message::text(t.clone())).await.expect("send");
                let f = c.frame(WAIT).await.unwrap_or_else(|e| panic!("{t}: {e}"));
                assert_eq!(f["type"], "error", "{t} -> {f}");
                got.push(f["code"].as_str().unwrap_or("").to_string());
            }
            // Still open and serving.
            let s = c.subscribe(&channel("after-bad"), None).await.unwrap();
            assert_eq!(s["type"], "subscribed");
            c.close().await;
            got
        }
    }))
    .await;
    for code in answers.into_iter().flatten() {
        // `unauthorized` answers a refresh whose token is a string but not a token.
        assert!(
            matches!(code.as_str(), "bad_request" | "forbidden" | "unauthorized"),
            "{code}"
        );
        ctx.tally.note("ws_bad_request", code);
    }
    ctx.publish_main().await;

    // 3. Protocol violations after authentication.
    let answers = join_all(post_auth_violations().into_iter().map(|m| {
        let url = url.clone();
        async move {
            let (mut c, _) = Client::connect(&url, &connect_token(NS, "violator", 600))
                .await
                .expect("connect");
            c.send_raw(m).await.expect("send");
            c.closed(WAIT).await.expect("closed in time")
        }
    }))
    .await;
    for code in answers {
        assert!(matches!(code, Some(1008 | 1009)), "{code:?}");
        ctx.tally.note("ws_violation", code.unwrap_or(0));
    }

    // 4. Raw WebSocket: invalid UTF-8, framing abuse, oversized frames.
    let answers = join_all(
        raw_ws_inputs()
            .into_iter()
            .map(|(name, bytes, authed)| async move {
                let mut w = if authed {
                    RawWs::authed(addr).await
                } else {
                    RawWs::open(addr).await
                };
                w.send(&bytes).await;
                (name, w.ending(WAIT).await)
            }),
    )
    .await;
    for (name, end) in answers {
        // The relay ends each one with a close frame: 1009 for size, 1008 for every
        // other violation (the contract's table, not RFC 6455's 1002 and 1007).
        assert!(matches!(end, Some(1008 | 1009)), "{name}: {end:?}");
        ctx.tally.note(
            &format!("raw_ws_{name}"),
            end.map_or("eof".to_string(), |c| c.to_string()),
        );
    }
    ctx.publish_main().await;

    // 5. Bad publish bodies and headers over HTTP.
    let token = publish_token(None);
    let bodies = bad_bodies();
    let answers = join_all(bodies.iter().map(|b| {
        let token = token.clone();
        async move {
            let headers =
                format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n");
            let one = post_raw(addr, "/v1/publish", &headers, b).await;
            // The same item inside a batch: refused on its own, the batch answered.
            let mut batch = b"{\"publications\":[".to_vec();
            batch.extend_from_slice(b);
            batch.extend_from_slice(b"]}");
            let many = post_raw(addr, "/v1/publish/batch", &headers, &batch).await;
            (
                String::from_utf8_lossy(b)
                    .chars()
                    .take(80)
                    .collect::<String>(),
                one,
                many,
            )
        }
    }))
    .await;
    for (b, one, many) in answers {
        assert!((400..500).contains(&one.0), "{b:?}: {one:?}");
        // A batch whose JSON is fine is 200 with a per-item error; otherwise 4xx.
        assert!(
            (400..500).contains(&many.0) || (many.0 == 200 && !many.1.contains("\"offset\"")),
            "{b:?}: {many:?}"
        );
        ctx.tally.note("http_bad_body", one.0);
        ctx.tally.note("http_bad_batch", many.0);
    }
    let q = quiet_channel();
    let good_body = json!({"channel":q,"event":"Ev","data":sealed(&q, "Ev", "x")}).to_string();
    let now = unix_now();
    let bad_auth = [
        String::new(),
        "Authorization: Bearer\r\n".into(),
        "Authorization: Bearer \r\n".into(),
        "Authorization: Basic YTpi\r\n".into(),
        "Authorization: bearer x.y.z\r\n".into(),
        format!("Authorization: Bearer {}\r\n", connect_token(NS, "u", 60)),
        format!(
            "Authorization: Bearer {}\r\n",
            MintClaims::publish("acme", None, now - 1000, 300).sign(Some("k1"), ACME_K1)
        ),
        format!(
            "Authorization: Bearer {}\r\n",
            MintClaims::publish("acme", None, now, 301).sign(Some("k1"), ACME_K1)
        ),
        format!(
            "Authorization: Bearer {}\r\n",
            MintClaims::publish("acme", None, now, 60).sign(Some("k1"), OTHER_SECRET)
        ),
        format!(
            "Authorization: Bearer {}\r\n",
            MintClaims::publish("acme", Some("elsewhere"), now, 60).sign(Some("k1"), ACME_K1)
        ),
        format!("Authorization: Bearer {} {}\r\n", token, token),
        "Authorization: Bearer \u{1}\r\n".into(),
        format!("Authorization: Bearer {}\r\n", "a".repeat(5000)),
    ];
    for h in &bad_auth {
        let r = post_raw(
            addr,
            "/v1/publish",
            &format!("{h}Content-Type: application/json\r\n"),
            good_body.as_bytes(),
        )
        .await;
        assert!(matches!(r.0, 400 | 401 | 403 | 431), "{h:?}: {r:?}");
        ctx.tally.note("http_bad_auth", r.0);
    }
    for ct in [
        "",
        "Content-Type: text/plain\r\n",
        "Content-Type: application/jsonx\r\n",
        "Content-Type: \r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
    ] {
        let r = post_raw(
            addr,
            "/v1/publish",
            &format!("Authorization: Bearer {token}\r\n{ct}"),
            good_body.as_bytes(),
        )
        .await;
        assert_eq!(r.0, 415, "{ct:?}: {r:?}");
        ctx.tally.note("http_bad_content_type", r.0);
    }
    // A body over max_body_bytes, with a true and with a lying Content-Length.
    let big = vec![b' '; 70_000];
    let r = post_raw(
        addr,
        "/v1/publish",
        &format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
        &big,
    )
    .await;
    assert_eq!(r.0, 413, "{r:?}");
    ctx.tally.note("http_oversize_body", r.0);
    let mut chunked = format!(
        "POST /v1/publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..20 {
        chunked.extend_from_slice(b"1000\r\n");
        chunked.extend_from_slice(&[b' '; 0x1000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let out = raw_http(addr, &chunked, Duration::from_secs(10)).await;
    assert_eq!(
        statuses(&out).first(),
        Some(&413),
        "{}",
        String::from_utf8_lossy(&out)
    );
    ctx.tally.note("http_oversize_chunked", 413);
    ctx.publish_main().await;

    // 6. Request smuggling and parser abuse.
    let answers = join_all(
        smuggling(addr)
            .into_iter()
            .map(|(name, bytes, ok)| async move {
                let out = raw_http(addr, &bytes, Duration::from_secs(3)).await;
                (name, statuses(&out), ok)
            }),
    )
    .await;
    for (name, st, ok) in answers {
        assert!(
            st.iter().filter(|s| **s == 200).count() <= ok && st.iter().all(|s| *s < 500),
            "{name}: {st:?} (a hidden request was run, or the relay failed)"
        );
        ctx.tally
            .note(&format!("smuggle_{name}"), format!("{st:?}"));
    }
    // Legitimate pipelining still works: two good publishes on one connection, in order.
    let ch = main_channel();
    let mut pipelined = Vec::new();
    let mut texts = Vec::new();
    for i in 0..2 {
        ctx.next_msg += 1;
        let text = format!("m-{}", ctx.next_msg);
        let body = json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", &text)}).to_string();
        let close = if i == 1 { "Connection: close\r\n" } else { "" };
        pipelined.extend(
            format!(
                "POST /v1/publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\n{close}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        );
        texts.push(text);
    }
    let out = raw_http(addr, &pipelined, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(statuses(&out), vec![200, 200], "{text}");
    let offsets: Vec<u64> = text
        .match_indices("\"offset\":")
        .filter_map(|(i, m)| {
            text[i + m.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(offsets.len(), 2, "{text}");
    ctx.acked.extend(offsets.into_iter().zip(texts));
    ctx.tally.note("http_pipelined_good", 200);

    // 7. Half-open connections: TCP only, half a handshake, half a frame. Held while a
    // normal client works, then the relay must have closed those it can judge.
    let mut tcp_only = Vec::new();
    for _ in 0..40 {
        tcp_only.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut half_handshake = Vec::new();
    let req = upgrade_request(addr);
    for cut in [
        1,
        5,
        16,
        30,
        60,
        req.len() - 4,
        req.len() - 2,
        req.len() - 1,
    ] {
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&req.as_bytes()[..cut]).await.unwrap();
            half_handshake.push(s);
        }
    }
    let mut half_frame = Vec::new();
    let connect = json!({"type":"connect","token":connect_token(NS, "half", 600)}).to_string();
    let full = ws_frame(true, 0x1, connect.as_bytes(), true);
    for cut in [1, 2, 4, 6, full.len() / 2, full.len() - 1] {
        for authed in [false, true] {
            let mut w = if authed {
                RawWs::authed(addr).await
            } else {
                RawWs::open(addr).await
            };
            w.send(&full[..cut]).await;
            half_frame.push((authed, w));
        }
    }
    ctx.tally.inputs += tcp_only.len() + half_handshake.len() + half_frame.len();
    // Meanwhile a normal client is served.
    normal_client(ctx, "during-half-open").await;
    ctx.publish_main().await;
    // Sessions with half a frame end by the auth timeout (1 s) or the idle timeout (4 s).
    let ends = join_all(
        half_frame
            .iter_mut()
            .map(|(authed, w)| async move { (*authed, w.ending(Duration::from_secs(10)).await) }),
    )
    .await;
    for (authed, end) in ends {
        let want = if authed { Some(1001) } else { Some(4001) };
        assert_eq!(end, want, "half frame, authenticated: {authed}");
    }
    // TCP connections that never complete a request head: see HEADER_TIMEOUT_LANDED.
    let closed_by_relay = join_all(tcp_only.iter_mut().chain(half_handshake.iter_mut()).map(
        |s| async move {
            let mut b = [0u8; 512];
            matches!(
                tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await,
                Ok(Ok(_) | Err(_))
            )
        },
    ))
    .await
    .into_iter()
    .filter(|c| *c)
    .count();
    eprintln!(
        "half-open: {closed_by_relay} of {} request-less TCP connections closed by the relay",
        tcp_only.len() + half_handshake.len()
    );
    if HEADER_TIMEOUT_LANDED {
        assert_eq!(closed_by_relay, tcp_only.len() + half_handshake.len());
    }
    drop(tcp_only);
    drop(half_handshake);
    drop(half_frame);

    // 8. Connect flood: 300 concurrent upgrades with a connect, 150 TCP connects that
    // close at once, 100 upgrades dropped before authenticating.
    let url = ctx.ws_url();
    let started = Instant::now();
    let flood = join_all((0..300).map(|i| {
        let url = url.clone();
        async move {
            match tokio::time::timeout(
                WAIT,
                Client::connect(&url, &connect_token(NS, &format!("flood-{i}"), 600)),
            )
            .await
            {
                Ok(Ok((c, _))) => {
                    c.close().await;
                    "connected".to_string()
                }
                Ok(Err(e)) => format!("refused: {e}"),
                Err(_) => "timeout".to_string(),
            }
        }
    }))
    .await;
    let mut flood_outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for o in &flood {
        let key: String = o.chars().take(60).collect();
        *flood_outcomes.entry(key).or_default() += 1;
    }
    for _ in 0..150 {
        if let Ok(s) = TcpStream::connect(addr).await {
            drop(s);
        }
    }
    join_all((0..100).map(|_| {
        let url = url.clone();
        async move {
            if let Ok(c) = Client::open(&url).await {
                drop(c);
            }
        }
    }))
    .await;
    eprintln!("flood: {flood_outcomes:?} in {:?}", started.elapsed());
    ctx.tally.inputs += 550;
    assert!(
        flood.iter().all(|o| o == "connected"
            || o.contains("429")
            || o.contains("503")
            || o.contains("4029")),
        "{flood_outcomes:?}"
    );
    ctx.publish_main().await;
}

/// A normal client connects, subscribes to a fresh channel and receives one publication.
/// Retries the connect (bounded) in case a connection limit is refilling after the flood.
async fn normal_client(ctx: &Ctx, topic: &str) {
    let url = ctx.ws_url();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut c = loop {
        match Client::connect(&url, &connect_token(NS, "normal", 600)).await {
            Ok((c, _)) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("normal client retries: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the relay no longer serves a normal client: {e}"),
        }
    };
    let ch = format!("{}-{}", channel(topic), rand_suffix());
    let s = c.subscribe(&ch, None).await.unwrap();
    assert_eq!(s["type"], "subscribed", "{s}");
    let body = json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", "hello")}).to_string();
    let r = post(ctx.addr, "/v1/publish", &publish_token(None), &body).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let f = c.frame(WAIT).await.unwrap();
    assert_eq!(f["type"], "pub", "{f}");
    let plain = payload::decrypt(&PAYLOAD_KEY, &ch, "Ev", f["data"].as_str().unwrap()).unwrap();
    assert_eq!(plain, b"hello");
    c.close().await;
}

fn rand_suffix() -> String {
    format!("{:x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// Waits (bounded) until only the watchers' sessions remain and the process's descriptors
/// are back near `fds`; returns the final `(sessions, fds)`.
async fn drained(p: &Proc, sessions: f64, fds: usize) -> (f64, usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = gauge(p.addr, "sealcast_connections ").await;
        // The metrics request itself holds one descriptor while it is served.
        let f = p.open_fds();
        if (s == sessions && f <= fds + 1) || Instant::now() > deadline {
            return (s, f);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_leave_the_relay_serving_clean_and_exact() {
    // Once [limits] exists its per-IP defaults would throttle this test's own traffic
    // (about 1,500 connections a round from 127.0.0.1); lift them out of the way.
    let mut p = spawn_relay(if LIMITS_LANDED { GENEROUS_LIMITS } else { "" });
    let addr = p.addr;
    let rss_start = p.rss_kib();

    // Watchers connected throughout: the main channel, another channel of the same app,
    // and the same channel name in another app.
    let main = watcher(
        addr,
        &connect_token(NS, "watch-main", 3600),
        &main_channel(),
    )
    .await;
    let quiet = watcher(
        addr,
        &connect_token(NS, "watch-quiet", 3600),
        &quiet_channel(),
    )
    .await;
    let other_token = MintClaims::connect("other", NS, "watch-other", unix_now(), 3600)
        .sign(Some("k1"), OTHER_SECRET);
    let other = watcher(addr, &other_token, &main_channel()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_base = p.open_fds();
    let sessions_base = gauge(addr, "sealcast_connections ").await;
    assert_eq!(sessions_base, 3.0);

    let mut ctx = Ctx {
        addr,
        acked: Vec::new(),
        next_msg: 0,
        tally: Tally::default(),
    };

    // Round 1 grows the allocator and runtime to their working size.
    round(&mut ctx).await;
    let (s1, f1) = drained(&p, sessions_base, fds_base).await;
    assert_eq!(s1, sessions_base, "sessions left after round 1");
    assert!(
        f1 <= fds_base + 1,
        "descriptors left after round 1: {f1} vs {fds_base}"
    );
    let rss_round1 = p.rss_kib();
    let inputs_round1 = ctx.tally.inputs;

    // Round 2: the same again; memory must not grow beyond the tolerance.
    round(&mut ctx).await;
    let (s2, f2) = drained(&p, sessions_base, fds_base).await;
    assert_eq!(s2, sessions_base, "sessions left after round 2");
    assert!(
        f2 <= fds_base + 1,
        "descriptors left after round 2: {f2} vs {fds_base}"
    );
    let rss_round2 = p.rss_kib();
    assert!(
        p.alive(),
        "the relay died; stderr: {}",
        p.stderr.lock().unwrap()
    );

    // A normal client after everything.
    normal_client(&ctx, "after").await;
    ctx.publish_main().await;

    // No publication lost, duplicated, reordered, altered or misrouted.
    let got_main = main.finish().await;
    let got_quiet = quiet.finish().await;
    let got_other = other.finish().await;
    let want: Vec<u64> = (1..=ctx.acked.len() as u64).collect();
    let acked_offsets: Vec<u64> = ctx.acked.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        acked_offsets, want,
        "the API's offsets have a gap or repeat"
    );
    let pubs: Vec<&Value> = got_main.iter().filter(|f| f["type"] == "pub").collect();
    assert_eq!(
        pubs.len(),
        got_main.len(),
        "unexpected frames: {got_main:?}"
    );
    let offsets: Vec<u64> = pubs.iter().map(|f| f["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, want, "main watcher's offsets");
    for (f, (_, text)) in pubs.iter().zip(&ctx.acked) {
        assert_eq!(f["channel"], main_channel());
        let plain = payload::decrypt(
            &PAYLOAD_KEY,
            &main_channel(),
            "Ev",
            f["data"].as_str().unwrap(),
        )
        .expect("payload intact");
        assert_eq!(plain, text.as_bytes());
    }
    assert!(
        got_quiet.is_empty(),
        "quiet channel received: {got_quiet:?}"
    );
    assert!(got_other.is_empty(), "other app received: {got_other:?}");

    eprintln!(
        "inputs: {} ({} per round); publications delivered: {}; VmRSS KiB: start {rss_start}, after round 1 {rss_round1}, after round 2 {rss_round2}; fds base {fds_base}",
        ctx.tally.inputs,
        inputs_round1,
        offsets.len()
    );
    for (k, n) in &ctx.tally.answers {
        eprintln!("  {k}: {n}");
    }
    assert!(ctx.tally.inputs >= 1000, "{} inputs", ctx.tally.inputs);
    // Coarse: the working size itself stays small (measured +3.5 MiB after round 1).
    assert!(
        rss_round1 <= rss_start + 64 * 1024,
        "VmRSS grew from {rss_start} KiB to {rss_round1} KiB in round 1"
    );
    assert!(
        rss_round2 <= rss_round1 + RSS_TOLERANCE_KIB,
        "VmRSS grew from {rss_round1} KiB to {rss_round2} KiB over an identical round"
    );
    assert!(p.alive());
}

const GENEROUS_LIMITS: &str = "[limits]\nmax_connections = 100000\nmax_connections_per_app = 100000\n\
     max_connections_per_namespace = 100000\nconnect_rate_per_ip = 100000\nconnect_burst_per_ip = 100000\n\
     publish_rate_per_app = 100000\npublish_burst_per_app = 100000\n";

// ---------------------------------------------------------------------------------------
// LIMITS FOLLOW-UP (enabled: `[limits]` has landed).

/// A connect flood from one IP is cut at `connect_burst_per_ip`: the excess upgrades are
/// refused with 429 (and counted), the connection cap holds, the relay keeps serving, and a
/// client that waits for the bucket to refill gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_flood_is_cut_at_the_per_ip_burst() {
    let p = spawn_relay(
        "[limits]\nmax_connections = 150\nconnect_rate_per_ip = 20\nconnect_burst_per_ip = 100\n",
    );
    let url = format!("ws://{}/v1/ws", p.addr);
    let started = Instant::now();
    let outcomes = join_all((0..300).map(|i| {
        let url = url.clone();
        async move {
            match tokio::time::timeout(
                WAIT,
                Client::connect(&url, &connect_token(NS, &format!("flood-{i}"), 600)),
            )
            .await
            {
                // Held open, so that the connection cap is reached too.
                Ok(Ok((c, _))) => Ok(c),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timeout".to_string()),
            }
        }
    }))
    .await;
    let connected = outcomes.iter().filter(|o| o.is_ok()).count();
    let refused: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    // The bucket refills at 20/s while the flood runs.
    let allowed = 100 + 20 * (started.elapsed().as_secs() as usize + 1);
    assert!(
        connected <= allowed,
        "burst not enforced: {connected} connected, at most {allowed} allowed"
    );
    assert!(connected >= 50, "too few connected: {connected}");
    assert!(
        refused
            .iter()
            .all(|e| e.contains("429") || e.contains("503")),
        "{refused:?}"
    );
    let m = metrics(p.addr).await;
    assert!(
        m.lines().any(|l| l.starts_with("sealcast_limit_hits_total")
            && l.contains("connect")
            && !l.ends_with(" 0")),
        "no connect-rate limit hit counted:\n{m}"
    );
    assert!(gauge(p.addr, "sealcast_connections ").await <= 150.0);
    drop(outcomes);
    // After the bucket refills (20/s), a normal client is served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ctx = Ctx {
        addr: p.addr,
        acked: Vec::new(),
        next_msg: 0,
        tally: Tally::default(),
    };
    normal_client(&ctx, "after-limited-flood").await;
}
