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
                Decoded::Progress { consumed, message } => {
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
            client_frame(true, OP_CLOSE, &[0x03, 0xee], MASK),
            CodecError::Protocol("close code not allowed"),
        ),
        (
            client_frame(true, OP_CLOSE, &[0x03, 0xf7], MASK),
            CodecError::Protocol("close code not allowed"),
        ),
        (
            client_frame(true, OP_CLOSE, &[0x13, 0x88], MASK),
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
fn each_error_has_its_rfc_6455_close_code() {
    assert_eq!(CodecError::Protocol("reserved bits set").close_code(), 1002);
    assert_eq!(CodecError::InvalidUtf8.close_code(), 1007);
    assert_eq!(CodecError::TooLarge.close_code(), 1009);
}

/// Feeds `input` to `d` as one socket read: decodes until it needs more bytes.
fn feed(d: &mut Decoder, input: &[u8]) -> Result<(usize, Vec<Inbound>), CodecError> {
    let (mut pos, mut out) = (0, Vec::new());
    while let Decoded::Progress { consumed, message } = d.decode(&input[pos..])? {
        pos += consumed;
        out.extend(message);
    }
    Ok((pos, out))
}

#[test]
fn the_first_bad_fragment_is_refused_before_the_message_ends() {
    let mut d = Decoder::new(1024);
    let first = client_frame(false, OP_TEXT, "κόσμε".as_bytes(), MASK);
    assert_eq!(feed(&mut d, &first), Ok((first.len(), vec![])));
    assert!(d.in_message());
    // U+110000 and beyond cannot be UTF-8: refused with no final frame in sight.
    let bad = client_frame(false, OP_CONTINUATION, b"\xf4\x90\x80\x80", MASK);
    assert_eq!(feed(&mut d, &bad), Err(CodecError::InvalidUtf8));
}

#[test]
fn bad_utf8_inside_one_frame_is_refused_before_the_frame_ends() {
    let mut d = Decoder::new(1024);
    let mut text = b"hello ".to_vec();
    text.extend_from_slice(b"\xed\xa0\x80"); // a UTF-16 surrogate, never valid UTF-8
    text.extend_from_slice(&[b'x'; 50]);
    let f = client_frame(true, OP_TEXT, &text, MASK);
    // Header (2 bytes), mask (4), then the first 3 payload bytes: taken, no message yet.
    assert_eq!(feed(&mut d, &f[..9]), Ok((9, vec![])));
    assert!(d.in_message());
    // The next read holds the surrogate: refused although 50 bytes of the frame are
    // still to come.
    assert_eq!(feed(&mut d, &f[9..20]), Err(CodecError::InvalidUtf8));
}

#[test]
fn a_character_cut_by_a_read_or_a_fragment_waits_for_its_end() {
    let euro = "€".as_bytes();
    // Cut by the socket inside one frame.
    let mut d = Decoder::new(1024);
    let f = client_frame(true, OP_TEXT, "a€".as_bytes(), MASK);
    assert_eq!(feed(&mut d, &f[..8]), Ok((8, vec![])));
    assert_eq!(
        feed(&mut d, &f[8..]),
        Ok((f.len() - 8, vec![Inbound::Text("a€".into())]))
    );
    // A message whose last fragment ends inside a character is refused at its end.
    let mut d = Decoder::new(1024);
    let first = client_frame(false, OP_TEXT, &euro[..2], MASK);
    assert_eq!(feed(&mut d, &first), Ok((first.len(), vec![])));
    let last = client_frame(true, OP_CONTINUATION, &[], MASK);
    assert_eq!(feed(&mut d, &last), Err(CodecError::InvalidUtf8));
}

#[test]
fn a_payload_is_taken_as_it_arrives_and_nothing_is_kept_after_the_message() {
    let mut d = Decoder::new(100_000);
    let data: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
    let f = client_frame(true, OP_BINARY, &data, MASK);
    let mut got = Vec::new();
    // Reads of 4096 bytes, as `Conn` does: past the 14-byte header, every read is taken
    // whole (the caller keeps nothing of a data payload).
    let mut pending = Vec::new();
    for piece in f.chunks(4096) {
        pending.extend_from_slice(piece);
        let (taken, msgs) = feed(&mut d, &pending).unwrap();
        assert_eq!(taken, pending.len());
        pending.clear();
        got.extend(msgs);
    }
    assert_eq!(got, vec![Inbound::Binary(data)]);
    assert!(
        !d.in_message(),
        "the message in progress is dropped once complete"
    );
}

#[test]
fn fragmented_binary_messages_keep_their_bytes() {
    let mut input = client_frame(false, OP_BINARY, &[0xff, 0], MASK);
    input.extend(client_frame(true, OP_PING, b"", MASK));
    input.extend(client_frame(true, OP_CONTINUATION, &[0xfe], MASK));
    assert_eq!(
        one(&input),
        Ok(vec![
            Inbound::Ping(vec![]),
            Inbound::Binary(vec![0xff, 0, 0xfe])
        ])
    );
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
        Ok(Decoded::Progress { message: None, .. })
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
            Inbound::Binary(vec![0, 1, 2]),
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
                    want.push(Inbound::Binary(b.clone()));
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
        while let Decoded::Progress { consumed, message } = d.decode(&buf[pos..])? {
            pos += consumed;
            out.extend(message);
        }
    }
    Ok(out)
}
