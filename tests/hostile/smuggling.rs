//! HTTP request smuggling and parser abuse: ambiguous or invalid framing that hides a
//! second request, malformed request lines and headers, oversized heads; and proof that
//! legitimate pipelining still works.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use crate::common::*;
use crate::harness::{Ctx, main_channel, quiet_channel, raw_http, statuses};

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

/// Request smuggling and parser abuse: no hidden request is ever run, no answer is a 5xx.
pub(crate) async fn smuggling_attempts(ctx: &mut Ctx) {
    let addr = ctx.addr;
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
}

/// Legitimate pipelining still works: two good publishes on one connection, in order.
pub(crate) async fn good_pipelining(ctx: &mut Ctx, token: &str) {
    let addr = ctx.addr;
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
}
