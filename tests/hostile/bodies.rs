//! `POST /v1/publish` (and the batch endpoint) with what the API must refuse: malformed
//! and mistyped bodies, bad `Authorization` and `Content-Type` headers, and bodies over
//! `max_body_bytes` (with a true and with a lying `Content-Length`).

use std::time::Duration;

use futures_util::future::join_all;
use sealcast::auth::{MintClaims, unix_now};
use serde_json::json;

use crate::common::*;
use crate::harness::{Ctx, OTHER_SECRET, post_raw, quiet_channel, raw_http, statuses};

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

/// Each of `bad_bodies` alone and as the single item of a batch: refused, nothing published.
pub(crate) async fn bad_publish_bodies(ctx: &mut Ctx, token: &str) {
    let addr = ctx.addr;
    let bodies = bad_bodies();
    let answers = join_all(bodies.iter().map(|b| {
        let token = token.to_owned();
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
}

/// A good body under bad `Authorization` and `Content-Type` headers.
pub(crate) async fn bad_publish_headers(ctx: &mut Ctx, token: &str) {
    let addr = ctx.addr;
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
}

/// A body over `max_body_bytes`: 413 whether its length is announced or chunked.
pub(crate) async fn oversize_publish_bodies(ctx: &mut Ctx, token: &str) {
    let addr = ctx.addr;
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
}
