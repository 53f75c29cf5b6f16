//! RFC 6455 framing, server side, with no I/O: a decoder for what clients send and the
//! encoders for what the relay sends.
//!
//! Why our own and not tungstenite's: an idle connection is mostly buffers, and a general
//! WebSocket library keeps a read and a write buffer per socket for the socket's life
//! (BENCHMARKS.md measured them at about a third of an idle connection's memory). The relay
//! needs far less than a general library: client frames are small JSON texts, server frames
//! are texts encoded once per publication (header included, see [`text_frame`]) and shared
//! by every subscriber. So the decoder keeps no buffer of its own except a data message in
//! progress (fragmented, or one frame whose payload is still arriving), and
//! [`super::conn::Conn`] frees its buffers whenever they empty.
//!
//! What the decoder refuses, each a [`CodecError`] with its RFC 6455 7.4.1 close code:
//! - 1002 (protocol error): reserved bits (no extension is ever negotiated), reserved
//!   opcodes, unmasked client frames, fragmented or over-125-byte control frames, a
//!   continuation with no message to continue or a new message inside a fragmented one, a
//!   64-bit length with its top bit set, a close payload of one byte, and close codes a
//!   client may not send (1005, 1006, 1015, unassigned or out of range);
//! - 1007 (invalid payload): invalid UTF-8 in a text message or a close reason. A text
//!   payload is taken and checked as its bytes arrive, so the first bad byte is refused
//!   even while its fragment, or its frame, is unfinished;
//! - 1009 (too big): any data message over the size limit, refused from its header alone,
//!   before its payload arrives.
//!
//! A binary message is decoded whole (the relay's session refuses it with 1003, which is a
//! matter of its protocol, not of framing).

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
    /// A binary message. The relay's protocol has none (its session refuses one with
    /// 1003), but the codec carries it whole so that an echo server can test the layer.
    Binary(Vec<u8>),
    /// A ping, with its payload (to echo in the pong).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// Why a client's bytes are not WebSocket as RFC 6455 allows it. Each kind has its own
/// close code (RFC 6455 7.4.1): see [`CodecError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Framing the protocol forbids (closes with 1002).
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8 (closes with 1007).
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A data message over the size limit (closes with 1009).
    #[error("message over the size limit")]
    TooLarge,
}

impl CodecError {
    /// The close code RFC 6455 7.4.1 gives this error: 1002 protocol error, 1007 invalid
    /// payload data, 1009 message too big.
    pub fn close_code(self) -> u16 {
        match self {
            CodecError::Protocol(_) => 1002,
            CodecError::InvalidUtf8 => 1007,
            CodecError::TooLarge => 1009,
        }
    }
}

/// The result of one decoding step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed before anything can be decoded.
    Incomplete,
    /// `consumed` bytes were taken off the front of the input: a whole frame, or a frame
    /// header, or part of a data frame's payload (which is taken as it arrives, so that
    /// invalid UTF-8 is refused as soon as its bytes are in). They completed `message`, or
    /// it is still in progress (`None`).
    Progress {
        /// Bytes of the input taken (at least one).
        consumed: usize,
        /// The message they completed, if any.
        message: Option<Inbound>,
    },
}

/// A data message in progress: fragmented, or one frame whose payload is still arriving.
#[derive(Debug)]
struct Partial {
    text: bool,
    /// The payload so far, unmasked.
    data: Vec<u8>,
    /// For text, `data[..checked]` is valid UTF-8 and what follows it is the start of a
    /// character still arriving (at most 3 bytes). That and `data` are the whole state of
    /// the incremental UTF-8 check.
    checked: usize,
    /// The data frame whose payload is being read, if its header was taken already.
    frame: Option<Payload>,
    /// The final frame's payload has all been taken: the message is complete.
    ended: bool,
}

/// Where the decoder is in a data frame's payload.
#[derive(Debug)]
struct Payload {
    fin: bool,
    /// Payload bytes not yet taken.
    left: usize,
    mask: [u8; 4],
    /// How many payload bytes were unmasked so far, modulo 4.
    phase: usize,
}

impl Partial {
    /// Checks the UTF-8 of text that arrived since the last check: invalid as soon as a
    /// byte makes it so (RFC 6455 8.1, "fail fast"), or if `done` and a character is cut.
    fn check_utf8(&mut self, done: bool) -> Result<(), CodecError> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.checked..]) {
            Ok(_) => self.checked = self.data.len(),
            // `error_len` is `None` only when the bytes end inside a character that may
            // still be completed.
            Err(e) if e.error_len().is_none() && !done => self.checked += e.valid_up_to(),
            Err(_) => return Err(CodecError::InvalidUtf8),
        }
        Ok(())
    }

    /// Takes up to `left` payload bytes of the current frame from `input`; returns how
    /// many it took.
    fn take(&mut self, input: &[u8]) -> Result<usize, CodecError> {
        let Some(f) = self.frame.as_mut() else {
            return Ok(0);
        };
        let n = f.left.min(input.len());
        let at = self.data.len();
        self.data.extend_from_slice(&input[..n]);
        let mut mask = f.mask;
        mask.rotate_left(f.phase);
        unmask(&mut self.data[at..], mask);
        f.left -= n;
        f.phase = (f.phase + n) % 4;
        let done = f.left == 0 && f.fin;
        if f.left == 0 {
            self.ended = f.fin;
            self.frame = None;
        }
        self.check_utf8(done)?;
        Ok(n)
    }

    fn into_message(self) -> Result<Inbound, CodecError> {
        if !self.text {
            return Ok(Inbound::Binary(self.data));
        }
        // Checked as it arrived; this cannot fail, but is kept as the safe conversion.
        String::from_utf8(self.data)
            .map(Inbound::Text)
            .map_err(|_| CodecError::InvalidUtf8)
    }
}

/// Decodes client frames from a byte buffer the caller owns, taking data payloads as
/// they arrive.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// Boxed: `None` whenever no data message is in progress, so an idle decoder is small.
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
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A control frame's payload, whole and unmasked.
fn control(opcode: u8, mut p: Vec<u8>, mask: [u8; 4]) -> Result<Inbound, CodecError> {
    unmask(&mut p, mask);
    match opcode {
        OP_PING => Ok(Inbound::Ping(p)),
        OP_PONG => Ok(Inbound::Pong),
        _ => match p.len() {
            0 => Ok(Inbound::Close(None)),
            1 => Err(CodecError::Protocol("close frame of one byte")),
            _ => {
                let code = u16::from_be_bytes([p[0], p[1]]);
                if !close_code_allowed(code) {
                    return Err(CodecError::Protocol("close code not allowed"));
                }
                if std::str::from_utf8(&p[2..]).is_err() {
                    return Err(CodecError::InvalidUtf8);
                }
                Ok(Inbound::Close(Some(code)))
            }
        },
    }
}

impl Decoder {
    /// A decoder refusing data messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            partial: None,
        }
    }

    /// Whether a data message is in progress.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes from the front of `input`: a whole control frame once it is all there, a
    /// data frame's header, or whatever part of a data frame's payload has arrived. A
    /// data message over the limit is refused as soon as its header is, and invalid UTF-8
    /// as soon as its bytes are.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, CodecError> {
        if let Some(p) = self.partial.as_mut().filter(|p| p.frame.is_some()) {
            if input.is_empty() {
                return Ok(Decoded::Incomplete);
            }
            let consumed = p.take(input)?;
            return self.progress(consumed);
        }
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
        if !is_data {
            let Some(raw) = input.get(start..start + payload_len) else {
                return Ok(Decoded::Incomplete);
            };
            let message = control(h.opcode, raw.to_vec(), mask)?;
            return Ok(Decoded::Progress {
                consumed: start + payload_len,
                message: Some(message),
            });
        }
        // The common case, a whole unfragmented message at once, skips the `Partial`.
        if self.partial.is_none()
            && h.fin
            && let Some(raw) = input.get(start..start + payload_len)
        {
            let mut data = raw.to_vec();
            unmask(&mut data, mask);
            let message = if h.opcode == OP_TEXT {
                Inbound::Text(String::from_utf8(data).map_err(|_| CodecError::InvalidUtf8)?)
            } else {
                Inbound::Binary(data)
            };
            return Ok(Decoded::Progress {
                consumed: start + payload_len,
                message: Some(message),
            });
        }
        let p = self.partial.get_or_insert_with(|| {
            Box::new(Partial {
                text: h.opcode == OP_TEXT,
                data: Vec::new(),
                checked: 0,
                frame: None,
                ended: false,
            })
        });
        p.frame = Some(Payload {
            fin: h.fin,
            left: payload_len,
            mask,
            phase: 0,
        });
        let taken = p.take(&input[start..])?;
        self.progress(start + taken)
    }

    /// After taking `consumed` bytes of a data frame: the message, if that ended it.
    fn progress(&mut self, consumed: usize) -> Result<Decoded, CodecError> {
        let ended = self
            .partial
            .as_ref()
            .is_some_and(|p| p.frame.is_none() && p.ended);
        let message = match ended {
            true => self.partial.take().map(|p| p.into_message()).transpose()?,
            false => None,
        };
        Ok(Decoded::Progress { consumed, message })
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
