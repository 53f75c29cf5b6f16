//! A lean subscriber for load generation: the same protocol as [`Client`](super::Client),
//! but a hand-rolled WebSocket codec so that one task can read hundreds of thousands of
//! `pub` frames per second without allocating per frame or parsing JSON.
//!
//! The connection is generic over its stream ([`LeanStream`]): a plain `TcpStream`
//! (`ws://`, the default type parameter) or a tokio-rustls client stream over one
//! (`wss://`, [`LeanConn::connect_tls_from`]). Each is compiled on its own (no dynamic
//! dispatch), so the plain path costs what it did before TLS existed.
//!
//! Frames from the relay are handed out as byte slices borrowed from the read buffer;
//! pings are answered at once; control replies (`connected`, `subscribed`, `error`) are
//! parsed with `serde_json`, `pub` frames only by [`PubView`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ClientError;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A frame from the relay, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum LeanFrame<'a> {
    /// A text frame's bytes (JSON).
    Text(&'a [u8]),
    /// A close frame's code, or `None` when the stream ended.
    Closed(Option<u16>),
}

/// What `subscribed` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeanSubscribed {
    /// The channel's epoch.
    pub epoch: String,
    /// The channel's last offset at subscription.
    pub offset: u64,
    /// `recovered`, when `since` was given.
    pub recovered: Option<bool>,
}

/// What a [`LeanConn`] runs over: a TCP stream, or a TLS client stream over one.
pub trait LeanStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath (for `SO_LINGER`).
    fn tcp(&self) -> &TcpStream;
    /// How the TLS handshake went (full or resumed); `None` without TLS.
    fn handshake_kind(&self) -> Option<HandshakeKind>;
}

impl LeanStream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }

    fn handshake_kind(&self) -> Option<HandshakeKind> {
        None
    }
}

impl LeanStream for TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.get_ref().1.handshake_kind()
    }
}

/// An authenticated WebSocket connection with a minimal codec, over a plain TCP stream
/// (`ws://`) or a TLS one (`wss://`).
#[derive(Debug)]
pub struct LeanConn<S = TcpStream> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    next_id: u64,
}

/// A cheap view of a `pub` frame as the relay encodes it
/// (`{"type":"pub","channel":..,"event":..,"data":..,"offset":N}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubView<'a> {
    /// The `data` field (base64, never escaped).
    pub data: &'a [u8],
    /// The offset.
    pub offset: u64,
}

impl<'a> PubView<'a> {
    /// Parses a `pub` frame without a JSON parser; `None` for any other frame.
    pub fn parse(text: &'a [u8]) -> Option<PubView<'a>> {
        const HEAD: &[u8] = br#"{"type":"pub","#;
        const DATA: &[u8] = br#""data":""#;
        const OFFSET: &[u8] = br#","offset":"#;
        if !text.starts_with(HEAD) || text.last() != Some(&b'}') {
            return None;
        }
        let o = rfind(text, OFFSET)?;
        let digits = &text[o + OFFSET.len()..text.len() - 1];
        let mut offset: u64 = 0;
        if digits.is_empty() {
            return None;
        }
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            offset = offset.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        let d = rfind(&text[..o], DATA)? + DATA.len();
        let data = &text[d..o.checked_sub(1)?];
        Some(PubView { data, offset })
    }
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Opens a TCP connection to `addr` with `TCP_NODELAY`, from `source` when given (port
/// chosen by the kernel). Spreading tens of thousands of sockets over several loopback
/// sources (127.0.0.2, 127.0.0.3, ...) keeps the kernel's ephemeral-port search short: from
/// one source address, `connect` spent 70% of the load generator's CPU in
/// `__inet_hash_connect` at 19,000 sockets.
pub async fn tcp_from(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, ClientError> {
    let stream = match source {
        None => TcpStream::connect(addr).await.map_err(io)?,
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .map_err(io)?;
            socket.set_reuseaddr(true).map_err(io)?;
            socket.bind(SocketAddr::new(ip, 0)).map_err(io)?;
            socket.connect(addr).await.map_err(io)?
        }
    };
    stream.set_nodelay(true).map_err(io)?;
    Ok(stream)
}

impl LeanConn<TcpStream> {
    /// Opens `ws://addr/v1/ws`, sends `connect` with `token` and waits for `connected`.
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<LeanConn, ClientError> {
        Self::connect_from(addr, None, token).await
    }

    /// As [`LeanConn::connect`], from a given source address (see [`tcp_from`]).
    pub async fn connect_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
        token: &str,
    ) -> Result<LeanConn, ClientError> {
        let stream = tcp_from(addr, source).await?;
        LeanConn::open(stream, &addr.to_string(), token).await
    }
}

impl LeanConn<TlsStream<TcpStream>> {
    /// Opens `wss://name/v1/ws` on `addr` (from `source` when given): TCP, then the TLS
    /// handshake of `tls` for `name` (resumed when its config holds a session for `name`
    /// and the relay accepts it), then as [`LeanConn::connect`].
    pub async fn connect_tls_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
        tls: &TlsConnector,
        name: ServerName<'static>,
        token: &str,
    ) -> Result<LeanConn<TlsStream<TcpStream>>, ClientError> {
        let tcp = tcp_from(addr, source).await?;
        let host = match &name {
            ServerName::DnsName(d) => d.as_ref().to_string(),
            ServerName::IpAddress(_) => addr.to_string(),
            _ => addr.ip().to_string(),
        };
        let stream = tls.connect(name, tcp).await.map_err(io)?;
        LeanConn::open(stream, &host, token).await
    }
}

impl<S> LeanConn<S> {
    /// Whether a whole data frame is buffered beyond the frames handed out so far, so that
    /// [`LeanConn::next`] returns it without waiting. A ping or pong next does not count:
    /// `next` answers it and then waits for the socket, so a caller batching its own
    /// bookkeeping until nothing is buffered must not wait for it.
    pub fn has_buffered(&self) -> bool {
        match header(&self.buf[self.start..self.end]) {
            Some((op, hlen, plen)) => {
                op != OP_PING && op != OP_PONG && self.end - self.start >= hlen + plen
            }
            None => false,
        }
    }
}

impl<S: LeanStream> LeanConn<S> {
    /// Upgrades `stream` (connected to the relay; TLS already established for `wss://`)
    /// to a WebSocket on `/v1/ws` with `Host: host`, sends `connect` with `token` and
    /// waits for `connected`.
    pub async fn open(mut stream: S, host: &str, token: &str) -> Result<LeanConn<S>, ClientError> {
        let key = STANDARD.encode(rand::random::<[u8; 16]>());
        let req = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.map_err(io)?;
        let mut c = LeanConn {
            stream,
            buf: vec![0; 4096],
            start: 0,
            end: 0,
            next_id: 1,
        };
        let head_end = loop {
            if let Some(p) = c.buf[..c.end].windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if c.end == c.buf.len() || !c.fill().await? {
                return Err(ClientError::Closed { code: None });
            }
        };
        if !c.buf.starts_with(b"HTTP/1.1 101") {
            let status = String::from_utf8_lossy(&c.buf[..head_end.min(64)]).into_owned();
            return Err(ClientError::Unexpected(Value::String(status)));
        }
        c.start = head_end;
        c.send_text(
            json!({"type":"connect","token":token})
                .to_string()
                .as_bytes(),
        )
        .await?;
        let v = c.reply(None).await?;
        if v["type"] != "connected" {
            return Err(ClientError::Unexpected(v));
        }
        Ok(c)
    }

    /// The stream underneath (for a TLS stream: the negotiated session).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// How the TLS handshake went (full or resumed); `None` without TLS.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.stream.handshake_kind()
    }

    /// Subscribes (recovering from `since` when given) and waits for the reply; replayed
    /// `pub` frames that follow stay buffered for [`LeanConn::next`].
    pub async fn subscribe(
        &mut self,
        channel: &str,
        since: Option<(&str, u64)>,
    ) -> Result<LeanSubscribed, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut f = json!({"type":"subscribe","id":id,"channel":channel});
        if let Some((epoch, offset)) = since {
            f["since"] = json!({"epoch":epoch,"offset":offset});
        }
        self.send_text(f.to_string().as_bytes()).await?;
        let v = self.reply(Some(id)).await?;
        if v["type"] != "subscribed" {
            return Err(ClientError::Unexpected(v));
        }
        Ok(LeanSubscribed {
            epoch: v["epoch"].as_str().unwrap_or_default().to_string(),
            offset: v["offset"].as_u64().unwrap_or_default(),
            recovered: v["recovered"].as_bool(),
        })
    }

    /// Sends `frame` (an object) with a fresh `id` and returns the relay's reply to it
    /// (`subscribed`, `unsubscribed` or `error`), waiting at most the reply timeout.
    pub async fn request(&mut self, mut frame: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        self.send_text(frame.to_string().as_bytes()).await?;
        self.reply(Some(id)).await
    }

    /// Waits (bounded) for a JSON reply that is not a `pub` frame, with `id` if given.
    async fn reply(&mut self, id: Option<u64>) -> Result<Value, ClientError> {
        let wait = tokio::time::sleep(super::REPLY_TIMEOUT);
        tokio::pin!(wait);
        loop {
            let next = tokio::select! {
                _ = &mut wait => return Err(ClientError::Timeout),
                n = self.peek_frame() => n?,
            };
            match next {
                (LeanFrame::Closed(code), _) => return Err(ClientError::Closed { code }),
                (LeanFrame::Text(t), len) => {
                    if t.starts_with(br#"{"type":"pub""#) {
                        // A replayed publication after `subscribed`: leave it buffered.
                        return Err(ClientError::Unexpected(Value::Null));
                    }
                    let v: Value = serde_json::from_slice(t).unwrap_or(Value::Null);
                    self.start += len;
                    if id.is_none() || v["id"] == json!(id) {
                        return Ok(v);
                    }
                }
            }
        }
    }

    /// The next frame from the relay; pings are answered on the way.
    pub async fn next(&mut self) -> Result<LeanFrame<'_>, ClientError> {
        let (_, len) = self.peek_frame().await?;
        let at = self.start;
        self.start += len;
        Ok(decode_at(&self.buf[at..at + len]))
    }

    /// Waits until a whole data frame (or close) is buffered at `start`; returns it and
    /// its encoded length without consuming it.
    async fn peek_frame(&mut self) -> Result<(LeanFrame<'_>, usize), ClientError> {
        loop {
            match header(&self.buf[self.start..self.end]) {
                Some((op, hlen, plen)) if self.end - self.start >= hlen + plen => {
                    let total = hlen + plen;
                    if op == OP_PING {
                        let payload = self.buf[self.start + hlen..self.start + total].to_vec();
                        self.start += total;
                        self.send(OP_PONG, &payload).await?;
                        continue;
                    }
                    if op == OP_PONG {
                        self.start += total;
                        continue;
                    }
                    let at = self.start;
                    return Ok((decode_at(&self.buf[at..at + total]), total));
                }
                Some((_, hlen, plen)) if hlen + plen > self.buf.len() => {
                    self.compact();
                    self.buf.resize((hlen + plen).next_power_of_two(), 0);
                }
                _ => {}
            }
            if !self.fill().await? {
                return Ok((LeanFrame::Closed(None), 0));
            }
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> Result<bool, ClientError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.compact();
            if self.end == self.buf.len() {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .await
            .map_err(io)?;
        self.end += n;
        Ok(n > 0)
    }

    /// Sends a masked text frame.
    pub async fn send_text(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.send(OP_TEXT, payload).await
    }

    async fn send(&mut self, op: u8, payload: &[u8]) -> Result<(), ClientError> {
        let mask: [u8; 4] = rand::random();
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.push(0x80 | op);
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&out).await.map_err(io)
    }

    /// Drops the connection with a TCP reset (`SO_LINGER` 0), as a crashed or redeployed
    /// peer would: no close handshake and no `TIME_WAIT` left on this side (a load
    /// generator reconnecting thousands of sockets would otherwise run out of ports).
    pub fn abort(self) {
        let _ = self.stream.tcp().set_zero_linger();
    }

    /// Sends a close frame (1000) and shuts the socket down; errors are ignored.
    pub async fn close(mut self) {
        let _ = self.send(OP_CLOSE, &1000u16.to_be_bytes()).await;
        let _ = tokio::time::timeout(Duration::from_millis(200), self.stream.shutdown()).await;
    }
}

/// Parses a frame header: (opcode, header length, payload length).
fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
    if b.len() < 2 {
        return None;
    }
    let op = b[0] & 0x0F;
    let masked = b[1] & 0x80 != 0;
    let (hlen, plen) = match b[1] & 0x7F {
        126 => (4, usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]))),
        127 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(b.get(2..10)?);
            (10, usize::try_from(u64::from_be_bytes(l)).ok()?)
        }
        n => (2, usize::from(n)),
    };
    Some((op, hlen + if masked { 4 } else { 0 }, plen))
}

/// Decodes a whole frame (the relay never masks nor fragments its frames).
fn decode_at(frame: &[u8]) -> LeanFrame<'_> {
    let Some((op, hlen, _)) = header(frame) else {
        return LeanFrame::Closed(None);
    };
    let payload = &frame[hlen..];
    match op {
        OP_TEXT => LeanFrame::Text(payload),
        OP_CLOSE if payload.len() >= 2 => {
            LeanFrame::Closed(Some(u16::from_be_bytes([payload[0], payload[1]])))
        }
        _ => LeanFrame::Closed(None),
    }
}

fn io(e: std::io::Error) -> ClientError {
    ClientError::Ws(tokio_tungstenite::tungstenite::Error::Io(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pub_frame_cheaply() {
        // As the relay encodes it.
        let f = br#"{"type":"pub","channel":"a/b#c","event":"Ev","data":"QUJD","offset":42}"#;
        let v = PubView::parse(f).unwrap();
        assert_eq!(v.offset, 42);
        assert_eq!(v.data, b"QUJD");
        assert_eq!(PubView::parse(br#"{"type":"subscribed","offset":1}"#), None);
    }

    /// A subscriber batching its counters until nothing is buffered must not hold them
    /// across a ping that came right after the last publication (it would wait for the next
    /// publication, or forever at the end of a run).
    #[test]
    fn a_ping_or_a_partial_frame_is_not_a_buffered_frame() {
        let conn = |bytes: &[u8]| LeanConn {
            stream: (),
            buf: bytes.to_vec(),
            start: 0,
            end: bytes.len(),
            next_id: 1,
        };
        let text = [0x81, 2, b'{', b'}'];
        let ping = [0x89, 0];
        assert!(conn(&text).has_buffered());
        assert!(!conn(&ping).has_buffered());
        assert!(!conn(&[0x8A, 0]).has_buffered());
        assert!(!conn(&text[..3]).has_buffered());
        assert!(!conn(&[]).has_buffered());
        let mut after_text = conn(&[&text[..], &ping[..]].concat());
        after_text.start = text.len();
        assert!(!after_text.has_buffered());
    }

    #[test]
    fn parses_headers() {
        assert_eq!(header(&[0x81, 5]), Some((1, 2, 5)));
        assert_eq!(header(&[0x81, 126, 1, 0]), Some((1, 4, 256)));
        assert_eq!(header(&[0x81]), None);
    }
}
