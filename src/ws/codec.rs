//! RFC 6455 framing, server side, with no I/O: a decoder for what clients send and the
//! encoders for what the relay sends.
//!
//! Why our own and not tungstenite's: an idle connection is mostly buffers, and a general
//! WebSocket library keeps a read and a write buffer per socket for the socket's life
//! (BENCHMARKS.md measured them at about a third of an idle connection's memory). The relay
//! needs far less than a general library: client frames are small JSON texts, server frames
//! are texts encoded once per publication (header included, see [`text_frame`]) and shared
//! by every subscriber. So the decoder keeps no buffer of its own except a fragmented
//! message in progress, and [`super::conn::Conn`] frees its buffers whenever they empty.
//!
//! What the decoder refuses, each a [`CodecError`]: reserved bits (no extension is ever
//! negotiated), reserved opcodes, unmasked client frames, fragmented or over-125-byte
//! control frames, a continuation with no message to continue or a new message inside a
//! fragmented one, a 64-bit length with its top bit set, invalid UTF-8 in a text message or
//! a close reason, close codes that may not be sent, and any data message over the size
//! limit, which is refused from its header alone, before its payload arrives.

/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Control frames carry at most this many payload bytes (RFC 6455 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A ping with no payload, as the relay sends it.
pub const PING: [u8; 2] = [0x80 | OP_PING, 0];

/// One complete message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A text message, valid UTF-8.
    Text(String),
    /// A binary message (the relay's protocol has none; its content is not kept).
    Binary,
    /// A ping, with its payload (to echo in the pong).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// Why a client's bytes are not WebSocket as RFC 6455 allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Framing the protocol forbids.
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8.
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A data message over the size limit.
    #[error("message over the size limit")]
    TooLarge,
}

/// The result of one decoding step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed before the next frame can be decoded.
    Incomplete,
    /// One frame was taken off the front of the input (`consumed` bytes). It completed
    /// `message`, or was a fragment kept for later (`None`).
    Frame {
        /// Bytes of the input the frame took.
        consumed: usize,
        /// The message it completed, if any.
        message: Option<Inbound>,
    },
}

/// A fragmented data message in progress.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
}

/// Decodes client frames, one at a time, from a byte buffer the caller owns.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// Boxed: `None` on all but the rare fragmented message, so an idle decoder is small.
    partial: Option<Box<Partial>>,
}

/// A frame header up to its length (the mask, which follows, is read separately so that
/// an oversize length is refused without waiting for anything after it).
struct Header {
    fin: bool,
    opcode: u8,
    /// Header bytes before the mask.
    len: usize,
    payload: u64,
}

fn parse_header(input: &[u8]) -> Result<Option<Header>, CodecError> {
    let [b0, b1, ..] = *input else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(CodecError::Protocol("reserved bits set"));
    }
    let opcode = b0 & 0x0f;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(CodecError::Protocol("reserved opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(CodecError::Protocol("client frame not masked"));
    }
    let fin = b0 & 0x80 != 0;
    let (payload, ext) = match b1 & 0x7f {
        126 => {
            let Some(b) = input.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 2)
        }
        127 => {
            let Some(b) = input.get(2..10) else {
                return Ok(None);
            };
            let mut n = [0u8; 8];
            n.copy_from_slice(b);
            let n = u64::from_be_bytes(n);
            if n >> 63 != 0 {
                return Err(CodecError::Protocol("64-bit length with the top bit set"));
            }
            (n, 8)
        }
        n => (u64::from(n), 0),
    };
    if opcode >= OP_CLOSE {
        if !fin {
            return Err(CodecError::Protocol("fragmented control frame"));
        }
        if payload > MAX_CONTROL_PAYLOAD as u64 {
            return Err(CodecError::Protocol("control frame over 125 bytes"));
        }
    }
    Ok(Some(Header {
        fin,
        opcode,
        len: 2 + ext,
        payload,
    }))
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// Whether a client may send this close code (RFC 6455 7.4; 1004-1006 and 1015 are
/// reserved, 1016-2999 unassigned, 3000-4999 for libraries and applications).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

impl Decoder {
    /// A decoder refusing data messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            partial: None,
        }
    }

    /// Whether a fragmented message is in progress.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes the frame at the front of `input`, if it is all there. A data message over
    /// the limit is refused as soon as its header is.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, CodecError> {
        let Some(h) = parse_header(input)? else {
            return Ok(Decoded::Incomplete);
        };
        let is_data = h.opcode < OP_CLOSE;
        if is_data {
            match (h.opcode, &self.partial) {
                (OP_CONTINUATION, None) => {
                    return Err(CodecError::Protocol("continuation with no message"));
                }
                (OP_TEXT | OP_BINARY, Some(_)) => {
                    return Err(CodecError::Protocol("new message inside a fragmented one"));
                }
                _ => {}
            }
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len());
            if h.payload > (self.max_message - so_far.min(self.max_message)) as u64 {
                return Err(CodecError::TooLarge);
            }
        }
        let Some(m) = input.get(h.len..h.len + 4) else {
            return Ok(Decoded::Incomplete);
        };
        let mask = [m[0], m[1], m[2], m[3]];
        let start = h.len + 4;
        // Within the message limit (or 125 for control frames), so it fits in usize.
        let payload_len = h.payload as usize;
        let Some(raw) = input.get(start..start + payload_len) else {
            return Ok(Decoded::Incomplete);
        };
        let consumed = start + payload_len;
        let frame = |message| Ok(Decoded::Frame { consumed, message });
        match h.opcode {
            OP_PING => {
                let mut p = raw.to_vec();
                unmask(&mut p, mask);
                frame(Some(Inbound::Ping(p)))
            }
            OP_PONG => frame(Some(Inbound::Pong)),
            OP_CLOSE => {
                let mut p = raw.to_vec();
                unmask(&mut p, mask);
                match p.len() {
                    0 => frame(Some(Inbound::Close(None))),
                    1 => Err(CodecError::Protocol("close frame of one byte")),
                    _ => {
                        let code = u16::from_be_bytes([p[0], p[1]]);
                        if !close_code_allowed(code) {
                            return Err(CodecError::Protocol("close code not allowed"));
                        }
                        if std::str::from_utf8(&p[2..]).is_err() {
                            return Err(CodecError::InvalidUtf8);
                        }
                        frame(Some(Inbound::Close(Some(code))))
                    }
                }
            }
            _ => {
                let mut partial = match self.partial.take() {
                    Some(p) => p,
                    None => Box::new(Partial {
                        text: h.opcode == OP_TEXT,
                        data: Vec::new(),
                    }),
                };
                let at = partial.data.len();
                partial.data.extend_from_slice(raw);
                unmask(&mut partial.data[at..], mask);
                if !h.fin {
                    self.partial = Some(partial);
                    return frame(None);
                }
                let Partial { text, data } = *partial;
                if !text {
                    return frame(Some(Inbound::Binary));
                }
                match String::from_utf8(data) {
                    Ok(s) => frame(Some(Inbound::Text(s))),
                    Err(_) => Err(CodecError::InvalidUtf8),
                }
            }
        }
    }
}

/// Appends the header of an unmasked, final server frame.
pub fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// A complete text frame of `text`, header included: what the hub stores once per
/// publication and every subscriber's socket receives as is.
pub fn text_frame(text: &[u8]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(text.len() + 10);
    put_header(&mut out, OP_TEXT, text.len());
    out.extend_from_slice(text);
    out.into_boxed_slice()
}

/// The payload of a server text frame made by [`text_frame`] (for tests and tools).
pub fn text_of(frame: &[u8]) -> &[u8] {
    let skip = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(skip..).unwrap_or(&[])
}

/// A close frame with `code` and `reason` (a reason over 123 bytes is cut, at a
/// character boundary).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut out = Vec::with_capacity(4 + reason.len());
    put_header(&mut out, OP_CLOSE, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
    out
}

/// A pong echoing a ping's payload (at most 125 bytes, as the decoder guarantees).
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut out = Vec::with_capacity(2 + payload.len());
    put_header(&mut out, OP_PONG, payload.len());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests;
