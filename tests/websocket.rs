//! The relay's own WebSocket layer (src/ws/codec.rs, src/ws/conn.rs) against RFC 6455,
//! over real sockets: the opening handshake, control frames, fragmentation, the close
//! handshake, frame sizes, and the close codes of RFC 6455 7.4.1 for what it forbids.

mod common;

use std::time::Duration;

use common::raw::{RawWs, upgrade_request, ws_frame};
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn connect_frame() -> Vec<u8> {
    let text = json!({"type":"connect","token":connect_token(NS, "ws-user", 600)}).to_string();
    ws_frame(true, 0x1, text.as_bytes(), true)
}

/// Reads text frames until one parses as JSON of `kind`.
async fn expect_text(w: &mut RawWs, kind: &str) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let (op, p) = w.read_frame().await.expect("a frame");
            if op == 0x1 {
                let v: Value = serde_json::from_slice(&p).unwrap();
                if v["type"] == kind {
                    return v;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} frame"))
}

async fn raw_http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn handshakes_that_are_not_rfc_6455_version_13_are_refused_with_a_json_400() {
    let relay = Relay::start().await;
    let a = relay.addr;
    let good = upgrade_request(a);
    let cases = [
        good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
        good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
        good.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
        good.replace("Connection: Upgrade", "Connection: keep-alive"),
        good.replace("Upgrade: websocket", "Upgrade: h2c"),
    ];
    for req in cases {
        let req = req.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        let (status, text) = raw_http(a, &req).await;
        assert_eq!(status, 400, "{req}\n{text}");
        assert!(text.contains(r#"{"error":{"code":"bad_request""#), "{text}");
        if req.contains("Version: 8") {
            assert!(
                text.to_ascii_lowercase()
                    .contains("sec-websocket-version: 13"),
                "{text}"
            );
        }
    }
    let post = good.replacen("GET", "POST", 1);
    assert_eq!(raw_http(a, &post).await.0, 405);
    // The answer to a good one is the RFC's accept key for the sample nonce.
    let (status, text) = raw_http(a, &good).await;
    assert_eq!(status, 101);
    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
    relay.stop().await;
}

#[tokio::test]
async fn a_connect_frame_sent_with_the_upgrade_request_is_read() {
    let relay = Relay::start().await;
    let mut tcp = TcpStream::connect(relay.addr).await.unwrap();
    // One write: hyper reads the frame's bytes along with the request head.
    let mut bytes = upgrade_request(relay.addr).into_bytes();
    bytes.extend(connect_frame());
    tcp.write_all(&bytes).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let mut w = RawWs { tcp };
    let c = expect_text(&mut w, "connected").await;
    assert_eq!(c["ns"], NS);
    relay.stop().await;
}

#[tokio::test]
async fn pings_are_answered_with_their_payload_before_and_after_connect() {
    let relay = Relay::start().await;
    let mut w = RawWs::open(relay.addr).await;
    w.send(&ws_frame(true, 0x9, b"before", true)).await;
    assert_eq!(w.read_frame().await, Some((0xA, b"before".to_vec())));
    w.send(&connect_frame()).await;
    expect_text(&mut w, "connected").await;
    let long = [7u8; 125];
    w.send(&ws_frame(true, 0x9, &long, true)).await;
    assert_eq!(w.read_frame().await, Some((0xA, long.to_vec())));
    relay.stop().await;
}

#[tokio::test]
async fn fragmented_messages_with_pings_between_fragments_are_joined() {
    let relay = Relay::start().await;
    let mut w = RawWs::open(relay.addr).await;
    w.send(&connect_frame()).await;
    expect_text(&mut w, "connected").await;
    let text = json!({"type":"subscribe","id":3,"channel":channel("frag")}).to_string();
    let b = text.as_bytes();
    let mut bytes = ws_frame(false, 0x1, &b[..5], true);
    bytes.extend(ws_frame(true, 0x9, b"mid", true));
    bytes.extend(ws_frame(false, 0x0, &b[5..20], true));
    bytes.extend(ws_frame(true, 0x0, &b[20..], true));
    // Byte by byte, as a slow network might deliver it.
    for byte in bytes {
        w.send(&[byte]).await;
    }
    assert_eq!(w.read_frame().await, Some((0xA, b"mid".to_vec())));
    let s = expect_text(&mut w, "subscribed").await;
    assert_eq!((s["id"].as_u64(), s["offset"].as_u64()), (Some(3), Some(0)));
    relay.stop().await;
}

#[tokio::test]
async fn a_client_close_is_answered_with_its_code_then_the_stream_ends() {
    let relay = Relay::start().await;
    for authed in [false, true] {
        let mut w = if authed {
            let mut w = RawWs::open(relay.addr).await;
            w.send(&connect_frame()).await;
            expect_text(&mut w, "connected").await;
            w
        } else {
            RawWs::open(relay.addr).await
        };
        w.send(&ws_frame(true, 0x8, &[0x0f, 0xa0, b'b', b'y', b'e'], true))
            .await;
        // 4000, echoed.
        assert_eq!(w.ending(WAIT).await, Some(4000), "authed: {authed}");
        let mut rest = Vec::new();
        let end = tokio::time::timeout(WAIT, w.tcp.read_to_end(&mut rest)).await;
        assert!(matches!(end, Ok(Ok(0))), "then end of stream: {end:?}");
    }
    relay.stop().await;
}

#[tokio::test]
async fn violations_close_with_their_rfc_6455_codes() {
    let relay = Relay::start_with(|c| c.websocket.max_frame_bytes = 1024).await;
    let mut rsv = ws_frame(true, 0x1, b"{}", true);
    rsv[0] |= 0x40;
    let mut huge = vec![0x81u8, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    let close = |code: u16, reason: &[u8]| {
        let payload = [&code.to_be_bytes()[..], reason].concat();
        ws_frame(true, 0x8, &payload, true)
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // 1002: framing RFC 6455 forbids.
        ("unmasked", ws_frame(true, 0x1, b"{}", false), 1002),
        ("reserved bits", rsv, 1002),
        ("reserved opcode", ws_frame(true, 0x3, b"x", true), 1002),
        (
            "reserved control opcode",
            ws_frame(true, 0xb, b"", true),
            1002,
        ),
        ("continuation first", ws_frame(true, 0x0, b"x", true), 1002),
        (
            "text inside a fragmented message",
            [
                ws_frame(false, 0x1, b"{", true),
                ws_frame(true, 0x1, b"}", true),
            ]
            .concat(),
            1002,
        ),
        ("fragmented ping", ws_frame(false, 0x9, b"x", true), 1002),
        ("long ping", ws_frame(true, 0x9, &[0; 126], true), 1002),
        (
            "close of one byte",
            ws_frame(true, 0x8, &[0x03], true),
            1002,
        ),
        ("close code 999", close(999, b""), 1002),
        ("close code 1005", close(1005, b""), 1002),
        ("close code 1006", close(1006, b""), 1002),
        ("close code 1015", close(1015, b""), 1002),
        ("close code 2999", close(2999, b""), 1002),
        ("close code 5000", close(5000, b""), 1002),
        // 1007: not UTF-8, in a text message or a close reason.
        (
            "invalid UTF-8",
            ws_frame(true, 0x1, b"\xc3\x28", true),
            1007,
        ),
        ("close reason not UTF-8", close(1000, b"\xff"), 1007),
        // 1003: binary, which this protocol does not have.
        ("binary", ws_frame(true, 0x2, b"{}", true), 1003),
        (
            "fragmented binary",
            [
                ws_frame(false, 0x2, b"{", true),
                ws_frame(true, 0x0, b"}", true),
            ]
            .concat(),
            1003,
        ),
        // 1009: over the size limit.
        ("1025 bytes", ws_frame(true, 0x1, &[b' '; 1025], true), 1009),
        ("2^40 announced", huge, 1009),
        (
            "fragments over 1024",
            [
                ws_frame(false, 0x1, &[b' '; 600], true),
                ws_frame(true, 0x0, &[b' '; 600], true),
            ]
            .concat(),
            1009,
        ),
    ];
    for authed in [false, true] {
        for (name, bytes, want) in &cases {
            let mut w = RawWs::open(relay.addr).await;
            if authed {
                w.send(&connect_frame()).await;
                expect_text(&mut w, "connected").await;
            }
            w.send(bytes).await;
            assert_eq!(
                w.ending(WAIT).await,
                Some(*want),
                "{name} (authed: {authed})"
            );
        }
    }
    // Exactly at the limit is fine: a 1024-byte frame that is a bad request is answered.
    let mut w = RawWs::open(relay.addr).await;
    w.send(&connect_frame()).await;
    expect_text(&mut w, "connected").await;
    let pad = " ".repeat(1024 - r#"{"type":"subscribe","channel":"x"}"#.len());
    let text = format!(r#"{{"type":"subscribe","channel":"x"}}{pad}"#);
    assert_eq!(text.len(), 1024);
    w.send_text(&text).await;
    assert_eq!(expect_text(&mut w, "error").await["code"], "bad_request");
    relay.stop().await;
}

#[tokio::test]
async fn large_publications_arrive_whole_with_a_64_bit_length() {
    let relay = Relay::start().await;
    let ch = channel("big");
    let mut c = relay.client().await;
    c.subscribe(&ch, None).await.unwrap();
    // 60 KiB of plaintext: the frame is over 65,535 bytes, so its length takes 8 bytes.
    let plain = "z".repeat(60 * 1024);
    let data = sealed(&ch, "Ev", &plain);
    assert!(data.len() > 65_535);
    let a = relay
        .publisher()
        .publish(&publish_token(None), &ch, "Ev", &data, None)
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{:?}", a.body);
    let f = c.frame(WAIT).await.unwrap();
    assert_eq!(f["data"].as_str(), Some(data.as_str()));
    let opened = sealcast::payload::decrypt(&PAYLOAD_KEY, &ch, "Ev", &data).unwrap();
    assert_eq!(opened, plain.as_bytes());
    relay.stop().await;
}

/// Invalid UTF-8 is refused as its bytes arrive: the relay closes with 1007 while the
/// message, and even the frame, that holds it is unfinished (the client never sends the
/// rest, so an answer proves the check did not wait for it).
#[tokio::test]
async fn invalid_utf8_is_refused_before_the_message_is_complete() {
    let relay = Relay::start().await;
    let first = ws_frame(false, 0x1, "{\"type\":\"κόσμε".as_bytes(), true);
    let bad_fragment = ws_frame(false, 0x0, b"\xf4\x90\x80\x80", true);
    // One text frame announcing 100 bytes, of which only the first 12 are sent: a
    // surrogate (never valid UTF-8) comes after the first 8.
    let mut text = b"{\"type\":".to_vec();
    text.extend_from_slice(b"\xed\xa0\x80");
    text.resize(100, b' ');
    let cut_frame = ws_frame(true, 0x1, &text, true)[..2 + 4 + 12].to_vec();
    for authed in [false, true] {
        for (name, bytes) in [
            (
                "bad second fragment",
                [&first[..], &bad_fragment[..]].concat(),
            ),
            ("bad bytes in an unfinished frame", cut_frame.clone()),
        ] {
            let mut w = RawWs::open(relay.addr).await;
            if authed {
                w.send(&connect_frame()).await;
                expect_text(&mut w, "connected").await;
            }
            w.send(&bytes).await;
            assert_eq!(
                w.ending(WAIT).await,
                Some(1007),
                "{name} (authed: {authed})"
            );
        }
    }
    relay.stop().await;
}
