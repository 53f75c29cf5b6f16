//! The checks the fuzz targets run on each input, shared with the root crate's
//! `tests/fuzz_corpus.rs` (which includes this file with `#[path]`), so CI replays the
//! corpus through exactly the code the fuzzer ran.
//!
//! Beyond "does not panic", each check has an oracle written from PROTOCOL.md:
//! - `frame`: whatever `ClientFrame::parse` accepts agrees with an independent JSON reading
//!   of the same text and every accepted channel matches the grammar of PROTOCOL.md 1; the
//!   name parsers accept exactly the grammar.
//! - `token`: a token that verifies is byte-for-byte the canonical HS512 JWT of its own
//!   signing input under a configured key (so no mutation of a valid token, and no other
//!   encoding of the same MAC, is ever accepted), and its claims obey PROTOCOL.md 2.
//! - `wsframe`: the WebSocket decoder gives the same messages and error however a stream
//!   is split, and what it accepts obeys RFC 6455's bounds and re-frames to itself.
#![forbid(unsafe_code)]
#![allow(dead_code, missing_docs, unreachable_pub)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use sealcast::auth::{Authenticator, HmacSha512, Secret, TokenPolicy};
use sealcast::protocol::{AppId, Channel, ClientFrame, EventName, FrameError, Namespace};
use sealcast::ws::codec::{CodecError, Decoded, Decoder, Inbound, OP_BINARY, OP_TEXT};
use serde_json::Value;

/// The unix time every token check runs at; the seed tokens are minted around it.
pub const NOW: i64 = 1_800_000_000;

/// `(app, kid, secret)` of the authenticator the token target verifies with.
pub const KEYS: [(&str, &str, &[u8]); 3] = [
    ("acme", "k1", b"fuzz-acme-key-one-0123456789abcdefghijkl"),
    ("acme", "k2", b"fuzz-acme-key-two-0123456789abcdefghijkl"),
    ("other", "k1", b"fuzz-other-key-one-0123456789abcdefghijk"),
];

pub fn authenticator() -> Authenticator {
    let secrets: Vec<(&str, &str, Secret)> = KEYS
        .iter()
        .map(|(app, kid, s)| (*app, *kid, Secret::new(s.to_vec())))
        .collect();
    let apps = ["acme", "other"].map(|app| {
        let keys = secrets
            .iter()
            .filter(|(a, _, _)| *a == app)
            .map(|(_, kid, s)| (Some((*kid).to_string()), s))
            .collect::<Vec<_>>();
        (AppId::parse(app).expect("valid app id"), keys)
    });
    Authenticator::new(apps, TokenPolicy::default())
}

// ---- grammar oracles (PROTOCOL.md 1) ----

pub fn is_namespace(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'#')
}

pub fn is_topic(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@/-".contains(&b))
}

pub fn is_channel(s: &str) -> bool {
    s.split_once('#')
        .is_some_and(|(ns, t)| is_namespace(ns) && is_topic(t))
}

pub fn is_event(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

pub fn is_app(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

// ---- frame ----

/// Parses `data` as a client frame (the relay only ever sees valid UTF-8 text frames;
/// other bytes are read lossily so that the fuzzer's mutations still reach the parser).
pub fn frame(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    names(text);
    let result = ClientFrame::parse(text);
    let value: Option<Value> = serde_json::from_str(text).ok();
    match result {
        Ok(frame) => {
            let v = value.expect("accepted frame is JSON");
            let id = v.get("id").and_then(Value::as_u64);
            match frame {
                ClientFrame::Connect { token } => {
                    assert_eq!(v["type"], "connect");
                    assert_eq!(v["token"].as_str(), Some(token.as_str()));
                }
                ClientFrame::Subscribe {
                    id: got,
                    channel,
                    since,
                } => {
                    assert_eq!(v["type"], "subscribe");
                    assert_eq!(got, id);
                    assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
                    assert!(is_channel(channel.as_str()), "{channel:?}");
                    if let Some(s) = since {
                        assert_eq!(v["since"]["offset"].as_u64(), Some(s.offset));
                        assert_eq!(v["since"]["epoch"].as_str(), Some(s.epoch.as_str()));
                    }
                }
                ClientFrame::Unsubscribe { id: got, channel } => {
                    assert_eq!(v["type"], "unsubscribe");
                    assert_eq!(got, id);
                    assert!(is_channel(channel.as_str()), "{channel:?}");
                }
                ClientFrame::Refresh { id: got, token } => {
                    assert_eq!(v["type"], "refresh");
                    assert_eq!(got, id);
                    assert_eq!(v["token"].as_str(), Some(token.as_str()));
                }
            }
        }
        Err(FrameError::BadRequest { id, message }) => {
            let v = value.expect("bad_request frame is JSON");
            assert!(matches!(
                v["type"].as_str(),
                Some("connect" | "subscribe" | "unsubscribe" | "refresh")
            ));
            if let Some(id) = id {
                assert_eq!(v["id"].as_u64(), Some(id));
            }
            assert!(message.len() <= 160);
        }
        Err(FrameError::Violation) => {
            if let Some(v) = value {
                assert!(!matches!(
                    v.as_object()
                        .and_then(|o| o.get("type"))
                        .and_then(Value::as_str),
                    Some("connect" | "subscribe" | "unsubscribe" | "refresh")
                ));
            }
        }
    }
}

/// The name parsers accept exactly the grammar, and an accepted name is the input.
pub fn names(text: &str) {
    assert_eq!(Channel::parse(text).is_ok(), is_channel(text));
    assert_eq!(Namespace::parse(text).is_ok(), is_namespace(text));
    assert_eq!(EventName::parse(text).is_ok(), is_event(text));
    assert_eq!(AppId::parse(text).is_ok(), is_app(text));
    if let Ok(c) = Channel::parse(text) {
        assert_eq!(c.as_str(), text);
        assert_eq!(format!("{}#{}", c.namespace(), c.topic()), text);
    }
}

// ---- token ----

/// Verifies `data` as a connect and as a publish token at [`NOW`].
///
/// Two modes. Raw: `data` is the token text. Signed (`data[0] == 0x01`): `data[1]` picks a
/// configured key, the rest is `<header JSON>\n<claims JSON>`, and the check signs them
/// itself, so that the fuzzer reaches the claim rules behind the MAC with any JSON.
pub fn token(data: &[u8], auth: &Authenticator) {
    let text = match data {
        [1, key, rest @ ..] => {
            let (header, claims) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            let secret = KEYS[usize::from(*key) % KEYS.len()].2;
            sign_raw(header, claims, secret)
        }
        _ => String::from_utf8_lossy(data).into_owned(),
    };
    let text = text.as_str();
    let connect = auth.verify_connect(text, NOW);
    let publish = auth.verify_publish(text, NOW);
    assert!(
        connect.is_err() || publish.is_err(),
        "one token verified for both audiences"
    );
    if let Ok(c) = &connect {
        let claims = accepted(text, "connect");
        assert_eq!(claims["iss"].as_str(), Some(c.app.as_str()));
        assert_eq!(claims["sub"].as_str(), Some(c.sub.as_str()));
        assert_eq!(claims["ns"].as_str(), Some(c.ns.as_str()));
        assert!((1..=128).contains(&c.sub.len()));
        assert!(is_namespace(c.ns.as_str()));
        assert!(i128::from(c.exp) - i128::from(c.iat) <= 24 * 3600);
        assert!(c.jti.as_ref().is_none_or(|j| (1..=128).contains(&j.len())));
    }
    if let Ok(p) = &publish {
        let claims = accepted(text, "publish");
        assert_eq!(claims["iss"].as_str(), Some(p.app.as_str()));
        assert!(p.ns.as_ref().is_none_or(|n| is_namespace(n.as_str())));
        assert!(p.jti.as_ref().is_none_or(|j| (1..=128).contains(&j.len())));
    }
}

#[derive(serde::Deserialize, serde::Serialize)]
struct HeaderView {
    alg: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<Value>,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct ClaimsView {
    #[serde(default)]
    iss: Value,
    #[serde(default)]
    sub: Value,
    #[serde(default)]
    ns: Value,
    #[serde(default)]
    aud: Value,
    #[serde(default)]
    iat: Value,
    #[serde(default)]
    exp: Value,
    #[serde(default)]
    jti: Value,
}

/// `b64(header).b64(claims).b64(HS512(secret, that))`, whatever the bytes.
pub fn sign_raw(header: &[u8], claims: &[u8], secret: &[u8]) -> String {
    let mut out = URL_SAFE_NO_PAD.encode(header);
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let mut mac = HmacSha512::new_from_slice(secret).expect("any key length");
    mac.update(out.as_bytes());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    out
}

/// The claims of a token that verified, after checking that it is the canonical HS512
/// JWT of its signing input under a configured key and obeys PROTOCOL.md 2.1.
fn accepted(token: &str, aud: &str) -> Value {
    assert!(token.len() <= 4096);
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).expect("accepted part decodes");
    // Read into structs of the members the rules name, as the verifier does: serde_json
    // skips an unknown member without checking it (invalid UTF-8 in its string, a number
    // out of range), so a signed header or claims set that is not strictly valid JSON is
    // accepted (found by this target: a strictness gap, not a forgery, the MAC is good).
    let header: HeaderView =
        serde_json::from_slice(&decode(parts[0])).expect("accepted header has its members");
    let claims: ClaimsView =
        serde_json::from_slice(&decode(parts[1])).expect("accepted claims have their members");
    let header = serde_json::to_value(header).expect("serializable");
    let claims = serde_json::to_value(claims).expect("serializable");
    assert_eq!(header["alg"], "HS512");
    // `null` counts as absent, as serde's `Option` reads it (for `typ`, `kid`, `jti`, `ns`).
    assert!(header.get("typ").is_none_or(|t| t.is_null() || t == "JWT"));
    let iss = claims["iss"].as_str().expect("iss");
    let kid = header.get("kid").and_then(Value::as_str);
    let signing_input = &token[..parts[0].len() + 1 + parts[1].len()];
    let canonical = KEYS
        .iter()
        .filter(|(app, k, _)| *app == iss && kid.is_none_or(|kid| kid == *k))
        .any(|(_, _, secret)| {
            let mut mac = HmacSha512::new_from_slice(secret).expect("any key length");
            mac.update(signing_input.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()) == parts[2]
        });
    assert!(
        canonical,
        "accepted a token that is not canonically signed: {token}"
    );
    assert_eq!(claims["aud"], aud);
    // In i128: the claims may be anywhere in i64.
    let iat = i128::from(claims["iat"].as_i64().expect("iat"));
    let exp = i128::from(claims["exp"].as_i64().expect("exp"));
    let now = i128::from(NOW);
    let max = if aud == "connect" { 24 * 3600 } else { 300 };
    assert!(exp > iat && exp - iat <= max);
    assert!(now < exp + 30 && iat <= now + 30);
    claims
}

// ---- wsframe ----

/// The largest message the `wsframe` target's decoder accepts (small, so that the fuzzer
/// reaches the size checks).
pub const WS_MAX: usize = 1024;

/// Runs the relay's WebSocket decoder over `data` as a client's byte stream, stopping at
/// the first error, fed in pieces of `chunk` bytes. Returns the messages and the error.
pub fn ws_decode(data: &[u8], chunk: usize) -> (Vec<Inbound>, Option<CodecError>) {
    let mut d = Decoder::new(WS_MAX);
    let (mut buf, mut pos, mut out) = (Vec::new(), 0usize, Vec::new());
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&buf[pos..]) {
                Err(e) => return (out, Some(e)),
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Progress { consumed, message }) => {
                    // A data payload is taken as it arrives, so a step may be one byte.
                    assert!(consumed > 0, "a step takes at least one byte");
                    assert!(pos + consumed <= buf.len(), "consumed more than given");
                    pos += consumed;
                    out.extend(message);
                }
            }
        }
    }
    (out, None)
}

/// A masked client frame, as a browser makes it.
pub fn ws_client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x01, 0xc3, 0x7e];
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The WebSocket decoder on any bytes. Oracles: the same messages and the same error
/// however the stream is split (whole, byte by byte, and in pieces sized by the input);
/// every message obeys RFC 6455's bounds (text and binary at most `WS_MAX` bytes, a ping's
/// payload at most 125, an allowed close code); and every decoded text or binary message,
/// framed again by a conforming client, decodes to itself. (Split-invariance also holds
/// the incremental UTF-8 check to the whole-message one: refusing a message early must
/// give the same verdict as refusing it once all of it is in.)
pub fn wsframe(data: &[u8]) {
    let whole = ws_decode(data, data.len().max(1));
    assert_eq!(ws_decode(data, 1), whole, "byte by byte differs");
    let chunk = 1 + data.first().map_or(0, |b| usize::from(*b) % 97);
    assert_eq!(
        ws_decode(data, chunk),
        whole,
        "in pieces of {chunk} differs"
    );
    for m in &whole.0 {
        match m {
            Inbound::Text(t) => {
                assert!(t.len() <= WS_MAX);
                let again = ws_decode(&ws_client_frame(true, OP_TEXT, t.as_bytes()), 7);
                assert_eq!(again, (vec![m.clone()], None));
            }
            Inbound::Binary(b) => {
                assert!(b.len() <= WS_MAX);
                let again = ws_decode(&ws_client_frame(true, OP_BINARY, b), 7);
                assert_eq!(again, (vec![m.clone()], None));
            }
            Inbound::Ping(p) => assert!(p.len() <= 125),
            Inbound::Close(Some(code)) => {
                assert!(
                    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                    "{code}"
                )
            }
            Inbound::Pong | Inbound::Close(None) => {}
        }
    }
}
