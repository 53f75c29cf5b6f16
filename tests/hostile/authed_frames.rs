//! Frames sent on an authenticated session: requests the relay must refuse with an
//! `error` frame while keeping the session open, and protocol violations it must answer by
//! closing the session.

use futures_util::future::join_all;
use sealcast_client::wire::Client;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;
use crate::harness::{Ctx, main_channel};

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

/// Frames on an authenticated session that are protocol violations: of the relay's
/// protocol (close 1008), or binary, which it does not have (close 1003).
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

/// Refused requests on authenticated sessions: answered, session stays open.
pub(crate) async fn refused_requests(ctx: &mut Ctx) {
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
}

/// Protocol violations after authentication, each on a session of its own.
pub(crate) async fn violations(ctx: &mut Ctx) {
    let url = ctx.ws_url();
    let answers = join_all(post_auth_violations().into_iter().map(|m| {
        let url = url.clone();
        async move {
            let (mut c, _) = Client::connect(&url, &connect_token(NS, "violator", 600))
                .await
                .expect("connect");
            c.send_raw(m.clone()).await.expect("send");
            (m, c.closed(WAIT).await.expect("closed in time"))
        }
    }))
    .await;
    for (m, code) in answers {
        let want = if m.is_binary() { 1003 } else { 1008 };
        assert_eq!(code, Some(want), "{m:?}");
        ctx.tally.note("ws_violation", code.unwrap_or(0));
    }
}
