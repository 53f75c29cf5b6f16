//! First frames that are not a well-formed `connect`: broken JSON, wrong types, deep
//! nesting, huge numbers, tokens that fail verification and control characters. Each goes
//! on a connection of its own, which the relay must close.

use futures_util::future::join_all;
use sealcast::auth::{MintClaims, unix_now};
use sealcast_client::wire::Client;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;
use crate::harness::{Ctx, OTHER_SECRET};

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

/// Sends each of `preauth_texts` as the first frame of its own connection (25 at a time);
/// every one must be closed with 1008, 1009, 4001 or 4002.
pub(crate) async fn first_frames(ctx: &mut Ctx) {
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
}
