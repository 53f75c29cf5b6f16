//! WebSocket frames no WebSocket library would send, written byte by byte: invalid UTF-8
//! in text frames, reserved opcodes and bits, bad close frames, frame headers announcing
//! far more than the frame limit, and oversized frames.

use futures_util::future::join_all;

use crate::common::WAIT;
use crate::common::raw::{RawWs, ws_frame};
use crate::harness::Ctx;

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
    for i in 0..40 {
        let opcode = if i == 0 { 0x1 } else { 0x0 };
        many.extend(ws_frame(false, opcode, &[b'a'; 500], true));
    }
    many.extend(ws_frame(true, 0x0, &[b'a'; 500], true));
    v.push(("oversize_fragmented", many, true));
    v
}

/// The close code RFC 6455 7.4.1 (and PROTOCOL.md 3.4) gives each input of
/// [`raw_ws_inputs`]: 1007 for invalid UTF-8 (in a text message or a close reason), 1009
/// for a message over the limit, 1002 for every other framing violation (a 64-bit length
/// with its top bit set is malformed, not merely large).
fn expected_close(name: &str) -> u16 {
    match name {
        "invalid_utf8" | "invalid_utf8_authed" | "invalid_utf8_fragmented" => 1007,
        "close_bad_reason" => 1007,
        "header_2^62" | "header_2^62_authed" => 1009,
        "oversize_16k" | "oversize_16k_authed" | "oversize_fragmented" => 1009,
        _ => 1002,
    }
}

/// Raw WebSocket: invalid UTF-8, framing abuse, oversized frames.
pub(crate) async fn framing_abuse(ctx: &mut Ctx) {
    let addr = ctx.addr;
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
        // The relay ends each one with a close frame with RFC 6455's code for it.
        assert_eq!(end, Some(expected_close(name)), "{name}");
        ctx.tally.note(
            &format!("raw_ws_{name}"),
            end.map_or("eof".to_string(), |c| c.to_string()),
        );
    }
}
