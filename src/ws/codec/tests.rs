use proptest::prelude::*;

use super::*;

/// A client frame as a browser would send it: masked.
fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= usize::from(u16::MAX) {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Decodes everything in `input`, feeding it `chunk` bytes at a time as a socket might,
/// the way `Conn` does: append, decode frames off the front, keep the rest.
fn decode_all(d: &mut Decoder, input: &[u8], chunk: usize) -> Result<Vec<Inbound>, CodecError> {
    let mut buf = Vec::new();
    let mut pos = 0;
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&buf[pos..])? {
                Decoded::Incomplete => break,
                Decoded::Frame { consumed, message } => {
                    assert!(consumed > 0 && pos + consumed <= buf.len());
                    pos += consumed;
                    out.extend(message);
                }
            }
        }
    }
    assert_eq!(pos, buf.len(), "every complete frame was consumed");
    Ok(out)
}

fn one(input: &[u8]) -> Result<Vec<Inbound>, CodecError> {
    decode_all(&mut Decoder::new(16 * 1024), input, input.len())
}

#[test]
fn decodes_a_masked_text_frame() {
    let f = client_frame(true, OP_TEXT, br#"{"type":"connect"}"#, MASK);
    assert_eq!(
        one(&f),
        Ok(vec![Inbound::Text(r#"{"type":"connect"}"#.into())])
    );
}

#[test]
fn the_rfc_example_frames_decode() {
    // RFC 6455 5.7: a masked "Hello" and an unmasked "Hello" (refused from a client).
    let masked = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(one(&masked), Ok(vec![Inbound::Text("Hello".into())]));
    let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(
        one(&unmasked),
        Err(CodecError::Protocol("client frame not masked"))
    );
}

#[test]
fn fragments_join_with_control_frames_between() {
    let mut input = client_frame(false, OP_TEXT, b"Hel", MASK);
    input.extend(client_frame(true, OP_PING, b"p", MASK));
    input.extend(client_frame(false, OP_CONTINUATION, b"l", MASK));
    input.extend(client_frame(true, OP_CONTINUATION, b"o", MASK));
    assert_eq!(
        one(&input),
        Ok(vec![
            Inbound::Ping(b"p".to_vec()),
            Inbound::Text("Hello".into())
        ])
    );
}

#[test]
fn lengths_of_all_three_sizes() {
    for n in [0, 125, 126, 1000, 65_535, 65_536, 70_000] {
        let text = "x".repeat(n);
        let f = client_frame(true, OP_TEXT, text.as_bytes(), MASK);
        let got = decode_all(&mut Decoder::new(100_000), &f, 7).unwrap();
        assert_eq!(got, vec![Inbound::Text(text)], "{n}");
    }
}

#[test]
fn refuses_each_kind_of_bad_framing() {
    let mut rsv = client_frame(true, OP_TEXT, b"{}", MASK);
    rsv[0] |= 0x40;
    let mut huge = vec![0x81, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
    let cases: Vec<(Vec<u8>, CodecError)> = vec![
        (rsv, CodecError::Protocol("reserved bits set")),
        (
            client_frame(true, 0x3, b"x", MASK),
            CodecError::Protocol("reserved opcode"),
        ),
        (
            client_frame(true, 0xb, b"x", MASK),
            CodecError::Protocol("reserved opcode"),
        ),
        (
            client_frame(true, OP_CONTINUATION, b"x", MASK),
            CodecError::Protocol("continuation with no message"),
        ),
        (
            [
                client_frame(false, OP_TEXT, b"a", MASK),
                client_frame(true, OP_TEXT, b"b", MASK),
            ]
            .concat(),
            CodecError::Protocol("new message inside a fragmented one"),
        ),
        (
            client_frame(false, OP_PING, b"x", MASK),
            CodecError::Protocol("fragmented control frame"),
        ),
        (
            client_frame(true, OP_PING, &[0; 126], MASK),
            CodecError::Protocol("control frame over 125 bytes"),
        ),
        (
            huge,
            CodecError::Protocol("64-bit length with the top bit set"),
        ),
        (
            client_frame(true, OP_CLOSE, &[3], MASK),
            CodecError::Protocol("close frame of one byte"),
        ),
        (
            client_frame(true, OP_CLOSE, &[0x03, 0xe7], MASK),
            CodecError::Protocol("close code not allowed"),
        ),
        (
            client_frame(true, OP_CLOSE, &[0x03, 0xed], MASK),
            CodecError::Protocol("close code not allowed"),
        ),
        (
            client_frame(true, OP_CLOSE, &[0x03, 0xe8, 0xff], MASK),
            CodecError::InvalidUtf8,
        ),
        (
            client_frame(true, OP_TEXT, b"\xc3\x28", MASK),
            CodecError::InvalidUtf8,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(one(&input), Err(want), "{input:02x?}");
    }
}

#[test]
fn invalid_utf8_split_across_fragments_is_refused_and_valid_utf8_split_is_kept() {
    let euro = "€".as_bytes();
    let mut ok = client_frame(false, OP_TEXT, &euro[..1], MASK);
    ok.extend(client_frame(true, OP_CONTINUATION, &euro[1..], MASK));
    assert_eq!(one(&ok), Ok(vec![Inbound::Text("€".into())]));
    let mut bad = client_frame(false, OP_TEXT, &euro[..2], MASK);
    bad.extend(client_frame(true, OP_CONTINUATION, b"x", MASK));
    assert_eq!(one(&bad), Err(CodecError::InvalidUtf8));
}

#[test]
fn a_message_over_the_limit_is_refused_from_its_header_alone() {
    let mut d = Decoder::new(1000);
    // The header announces 1001 bytes; neither the mask nor the payload has arrived.
    let f = client_frame(true, OP_TEXT, &[b'a'; 1001], MASK);
    assert_eq!(d.decode(&f[..4]), Err(CodecError::TooLarge));
    // Exactly at the limit passes.
    let f = client_frame(true, OP_TEXT, &[b'a'; 1000], MASK);
    assert!(one_with(1000, &f).is_ok());
    // Fragments count together.
    let mut d = Decoder::new(1000);
    let first = client_frame(false, OP_TEXT, &[b'a'; 600], MASK);
    assert!(matches!(
        d.decode(&first),
        Ok(Decoded::Frame { message: None, .. })
    ));
    assert!(d.in_message());
    let second = client_frame(true, OP_CONTINUATION, &[b'a'; 401], MASK);
    assert_eq!(d.decode(&second[..4]), Err(CodecError::TooLarge));
}

fn one_with(max: usize, input: &[u8]) -> Result<Vec<Inbound>, CodecError> {
    decode_all(&mut Decoder::new(max), input, input.len())
}

#[test]
fn binary_pong_and_close_frames() {
    let mut input = client_frame(true, OP_BINARY, &[0, 1, 2], MASK);
    input.extend(client_frame(true, OP_PONG, b"x", MASK));
    input.extend(client_frame(
        true,
        OP_CLOSE,
        &[0x03, 0xe8, b'o', b'k'],
        MASK,
    ));
    input.extend(client_frame(true, OP_CLOSE, &[], MASK));
    assert_eq!(
        one(&input),
        Ok(vec![
            Inbound::Binary,
            Inbound::Pong,
            Inbound::Close(Some(1000)),
            Inbound::Close(None)
        ])
    );
}

#[test]
fn server_frames_have_minimal_headers_and_round_trip() {
    for n in [0usize, 1, 125, 126, 65_535, 65_536] {
        let text = vec![b'y'; n];
        let f = text_frame(&text);
        let header = match n {
            0..=125 => 2,
            126..=65_535 => 4,
            _ => 10,
        };
        assert_eq!(f.len(), header + n, "{n}");
        assert_eq!(f[0], 0x81);
        assert_eq!(text_of(&f), &text[..]);
    }
    assert_eq!(PING, [0x89, 0x00]);
    assert_eq!(
        close_frame(4008, "slow_consumer")[..4],
        [0x88, 15, 0x0f, 0xa8]
    );
    let long = "é".repeat(100);
    let c = close_frame(1000, &long);
    assert!(c.len() <= 2 + MAX_CONTROL_PAYLOAD);
    assert!(std::str::from_utf8(&c[4..]).is_ok());
    assert_eq!(pong_frame(b"abc"), vec![0x8a, 3, b'a', b'b', b'c']);
}

#[derive(Debug, Clone)]
enum Msg {
    Text(String, Vec<usize>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (".{0,300}", prop::collection::vec(0usize..400, 0..4))
            .prop_map(|(s, cuts)| Msg::Text(s, cuts)),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Msg::Binary),
        prop::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Ping),
        prop::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Pong),
    ]
}

proptest! {
    /// Whatever a conforming client sends, fragmented anywhere, with pings between
    /// fragments, and however the socket splits it, decodes to the same messages.
    #[test]
    fn conforming_streams_decode_exactly(
        msgs in prop::collection::vec(msg(), 1..12),
        chunk in 1usize..64,
        mask in any::<[u8; 4]>(),
    ) {
        let mut input = Vec::new();
        let mut want = Vec::new();
        for m in &msgs {
            match m {
                Msg::Text(s, cuts) => {
                    let b = s.as_bytes();
                    let mut points: Vec<usize> = cuts.iter().map(|c| c % (b.len() + 1)).collect();
                    points.sort_unstable();
                    points.dedup();
                    let mut at = 0;
                    let mut first = true;
                    for p in points.into_iter().chain([b.len()]) {
                        let fin = p == b.len();
                        if p < at || (!fin && p == at && !first) { continue; }
                        let op = if first { OP_TEXT } else { OP_CONTINUATION };
                        input.extend(client_frame(fin, op, &b[at..p], mask));
                        if !fin {
                            input.extend(client_frame(true, OP_PING, b"between", mask));
                            want.push(Inbound::Ping(b"between".to_vec()));
                        }
                        first = false;
                        at = p;
                        if fin { break; }
                    }
                    want.push(Inbound::Text(s.clone()));
                }
                Msg::Binary(b) => {
                    input.extend(client_frame(true, OP_BINARY, b, mask));
                    want.push(Inbound::Binary);
                }
                Msg::Ping(p) => {
                    input.extend(client_frame(true, OP_PING, p, mask));
                    want.push(Inbound::Ping(p.clone()));
                }
                Msg::Pong(p) => {
                    input.extend(client_frame(true, OP_PONG, p, mask));
                    want.push(Inbound::Pong);
                }
            }
        }
        let got = decode_all(&mut Decoder::new(16 * 1024), &input, chunk).unwrap();
        prop_assert_eq!(got, want);
    }

    /// Arbitrary bytes never panic, never consume more than given, and decode the same
    /// whether they arrive at once or byte by byte.
    #[test]
    fn arbitrary_bytes_are_decoded_or_refused_the_same_in_any_split(
        input in prop::collection::vec(any::<u8>(), 0..200),
        chunk in 1usize..16,
    ) {
        let whole = decode_all_until_error(&mut Decoder::new(64), &input, input.len().max(1));
        let split = decode_all_until_error(&mut Decoder::new(64), &input, chunk);
        prop_assert_eq!(split, whole);
    }
}

/// Like [`decode_all`], but stops at the first error (arbitrary input may leave an
/// incomplete frame at the end, which is not an error).
fn decode_all_until_error(
    d: &mut Decoder,
    input: &[u8],
    chunk: usize,
) -> Result<Vec<Inbound>, CodecError> {
    let mut buf = Vec::new();
    let mut pos = 0;
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Decoded::Frame { consumed, message } = d.decode(&buf[pos..])? {
            pos += consumed;
            out.extend(message);
        }
    }
    Ok(out)
}
