//! The server handshake, on rustls' unbuffered API, then the hand-over to [`TlsStream`].
//!
//! rustls runs the handshake (ClientHello, certificate, key exchange, Finished, the TLS 1.3
//! tickets sent at its end); this module only moves bytes: reads land in a stack buffer
//! and are processed where they landed, only what rustls has not consumed is kept
//! (`held_in`), and what rustls has to send is gathered in `out` and written. Once the
//! handshake is complete and its last flight written, rustls gives up the traffic keys
//! and sequence numbers (`dangerous_into_kernel_connection`, the kTLS hand-over) and the
//! connection continues on [`TlsStream`]'s own record layer: the rustls connection (over
//! 2 KiB with its queues, kept for the connection's life otherwise) is dropped.
//!
//! The TLS 1.3 session tickets that end a server's handshake are not written on their own:
//! they wait in [`TlsStream`]'s output for the first application write (the HTTP response
//! to the request the client sends right behind its Finished) and go out in the same
//! write, one send (and one read for the client) fewer per connection. A client needs no
//! ticket before it sends its request; anything the relay has to write for other reasons
//! (an alert, a KeyUpdate answer, the close) takes them along.
//!
//! Timeouts: the complete ClientHello must arrive within `hello_timeout` (rustls has read
//! it once it has an answer to send), the whole handshake within `total_timeout`.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, UnbufferedStatus};
use rustls::{HandshakeKind, ServerConfig};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use super::record::HEADER;
use super::stream::{MAX_HELD_IN, READ_CHUNK, TlsStream, Traffic};

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// No complete ClientHello within `tls.client_hello_timeout`.
    #[error("no ClientHello in time")]
    HelloTimeout,
    /// The handshake did not complete within `tls.handshake_timeout`.
    #[error("handshake timed out")]
    Timeout,
    /// The client closed the connection first.
    #[error("client closed the connection during the handshake")]
    Closed,
    /// The client broke the protocol (the alert was sent).
    #[error("handshake failed: {0}")]
    Tls(rustls::Error),
    /// The socket failed.
    #[error("handshake i/o: {0}")]
    Io(#[from] io::Error),
}

/// Runs the server handshake on `io` with `config` (which must allow secret extraction,
/// as [`super::build_config`] does): the complete ClientHello must arrive within
/// `hello_timeout`, the whole handshake (our last flight written, TLS 1.3 tickets
/// included) within `total_timeout`.
pub async fn accept(
    io: TcpStream,
    config: Arc<ServerConfig>,
    hello_timeout: Duration,
    total_timeout: Duration,
) -> Result<TlsStream, HandshakeError> {
    let started = tokio::time::Instant::now();
    let mut hs = Handshake {
        io,
        conn: UnbufferedServerConnection::new(config).map_err(HandshakeError::Tls)?,
        held_in: Vec::new(),
        plain: Vec::new(),
        out: Vec::new(),
        out_pos: 0,
        read_closed: false,
        failed: None,
    };
    let hello = std::future::poll_fn(|cx| hs.poll(cx, true));
    match tokio::time::timeout(hello_timeout, hello).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(HandshakeError::HelloTimeout),
    }
    let rest = total_timeout.saturating_sub(started.elapsed());
    let done = std::future::poll_fn(|cx| hs.poll(cx, false));
    match tokio::time::timeout(rest, done).await {
        Ok(Ok(())) => hs.finish(),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HandshakeError::Timeout),
    }
}

/// A connection during its handshake.
struct Handshake {
    io: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received bytes rustls has not consumed: an incomplete record, or the records of a
    /// handshake message not complete yet.
    held_in: Vec<u8>,
    /// Application data that came right behind the client's Finished.
    plain: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    read_closed: bool,
    failed: Option<rustls::Error>,
}

/// Feeds `incoming` to rustls until it needs more input, doing what each state asks:
/// plaintext to `plain`, records to send into `out`. Returns how many bytes of
/// `incoming` rustls is done with (the rest must be offered again, after more input).
/// On error, the alert rustls queued is put into `out`.
fn process(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    out: &mut Vec<u8>,
    plain: &mut Vec<u8>,
    peer_closed: &mut bool,
) -> Result<usize, rustls::Error> {
    let mut discard = 0;
    loop {
        let UnbufferedStatus { discard: d, state } =
            conn.process_tls_records(&mut incoming[discard..]);
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                discard += d;
                drain_alerts(conn, &mut incoming[discard..], out);
                return Err(e);
            }
        };
        let mut extra = 0;
        match state {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record?;
                    extra += record.discard;
                    plain.extend_from_slice(record.payload);
                }
            }
            ConnectionState::EncodeTlsData(mut data) => encode(&mut data, out),
            // The records are in `out`, in order; they go out as the socket takes them.
            ConnectionState::TransmitTlsData(transmit) => transmit.done(),
            ConnectionState::PeerClosed => *peer_closed = true,
            ConnectionState::BlockedHandshake
            | ConnectionState::WriteTraffic(_)
            | ConnectionState::Closed => return Ok(discard + d),
            // Early data is never accepted (`max_early_data_size` stays 0), and no other
            // state exists in this rustls.
            _ => {
                return Err(rustls::Error::General(
                    "unexpected TLS connection state".into(),
                ));
            }
        }
        discard += d + extra;
    }
}

/// After an error: puts the alert rustls queued (if any) into `out`. Only while rustls has
/// records queued: each call hands one out before looking at the input again (which
/// would fail again, and queue a second fatal alert).
fn drain_alerts(conn: &mut UnbufferedServerConnection, incoming: &mut [u8], out: &mut Vec<u8>) {
    let mut discard = 0;
    while conn.wants_write() {
        let UnbufferedStatus { discard: d, state } =
            conn.process_tls_records(&mut incoming[discard..]);
        match state {
            Ok(ConnectionState::EncodeTlsData(mut data)) => encode(&mut data, out),
            _ => return,
        }
        discard += d;
    }
}

/// Appends a record rustls prepared (handshake, alert, ticket) to `out`.
fn encode(data: &mut EncodeTlsData<'_, ServerConnectionData>, out: &mut Vec<u8>) {
    let start = out.len();
    let mut room = 0;
    loop {
        out.resize(start + room, 0);
        match data.encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(s)) if s.required_size > room => {
                room = s.required_size;
            }
            // Already taken (cannot happen: each state is encoded once), or a size
            // rustls keeps raising (cannot happen either): nothing to add.
            Err(_) => {
                out.truncate(start);
                return;
            }
        }
    }
}

/// Whether `buf` starts with a whole record (which rustls, had it been able to use it,
/// would have consumed: so it holds part of a handshake message in progress).
fn holds_a_record(buf: &[u8]) -> bool {
    buf.len() >= HEADER && {
        let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        buf.len() >= HEADER + len
    }
}

impl Handshake {
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        super::stream::poll_write_all(&mut self.io, &mut self.out, &mut self.out_pos, cx)
    }

    /// Whether what is left to write once the handshake is complete can wait for the
    /// first application write: in TLS 1.3 that is only the session tickets (the server's
    /// Finished went out before the client's could come); in TLS 1.2 it may be the server's
    /// Finished, which the client waits for.
    fn tickets_wait(&self) -> bool {
        self.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
    }

    /// Reads once and processes what came.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        if buf.filled().is_empty() {
            self.read_closed = true;
            return Poll::Ready(Ok(()));
        }
        let data = buf.filled_mut();
        let Handshake {
            conn,
            held_in,
            plain,
            out,
            read_closed,
            failed,
            ..
        } = self;
        let result = if held_in.is_empty() {
            let r = process(conn, data, out, plain, read_closed);
            if let Ok(done) = r {
                held_in.extend_from_slice(&data[done..]);
            }
            r
        } else if held_in.len() + data.len() > MAX_HELD_IN {
            Err(rustls::Error::General(
                "too much unprocessed TLS input".into(),
            ))
        } else {
            held_in.extend_from_slice(data);
            let r = process(conn, held_in, out, plain, read_closed);
            if let Ok(done) = r {
                held_in.drain(..done);
            }
            r
        };
        if let Err(e) = result {
            *failed = Some(e);
        }
        Poll::Ready(Ok(()))
    }

    /// Drives the handshake: with `until_hello`, until the ClientHello has been read (our
    /// answer is ready); else until it is complete and our last flight is written.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        until_hello: bool,
    ) -> Poll<Result<(), HandshakeError>> {
        loop {
            if let Some(e) = self.failed.take() {
                // Best effort for the alert: what the socket takes now.
                let _ = self.poll_write_out(cx);
                return Poll::Ready(Err(HandshakeError::Tls(e)));
            }
            if until_hello && (self.out_pos < self.out.len() || !self.conn.is_handshaking()) {
                return Poll::Ready(Ok(()));
            }
            if !self.conn.is_handshaking() && self.tickets_wait() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_write_out(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.read_closed {
                return Poll::Ready(Err(HandshakeError::Closed));
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    /// Hands the connection over to [`TlsStream`]: rustls' traffic keys and sequence
    /// numbers, what was received and not yet used.
    fn finish(self) -> Result<TlsStream, HandshakeError> {
        if holds_a_record(&self.held_in) {
            // A handshake message (a KeyUpdate) split across records right behind the
            // Finished: its first records are in rustls' hands, not ours. No client does
            // this; refusing it keeps the hand-over exact.
            return Err(HandshakeError::Tls(rustls::Error::General(
                "a handshake message split across records after the handshake".into(),
            )));
        }
        let resumed = self.conn.handshake_kind() == Some(HandshakeKind::Resumed);
        let (secrets, kernel) = self
            .conn
            .dangerous_into_kernel_connection()
            .map_err(HandshakeError::Tls)?;
        let traffic = Traffic::new(kernel, secrets).ok_or_else(|| {
            HandshakeError::Tls(rustls::Error::General(
                "negotiated an AEAD the record layer does not implement".into(),
            ))
        })?;
        let mut out = self.out;
        out.drain(..self.out_pos);
        Ok(TlsStream::new(
            self.io,
            traffic,
            resumed,
            self.held_in,
            self.plain,
            out,
            self.read_closed,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_record_is_told_from_part_of_one() {
        assert!(!holds_a_record(&[]));
        assert!(!holds_a_record(&[23, 3, 3, 0]));
        assert!(!holds_a_record(&[23, 3, 3, 0, 4, 1, 2, 3]));
        assert!(holds_a_record(&[23, 3, 3, 0, 3, 1, 2, 3]));
        assert!(holds_a_record(&[22, 3, 3, 0, 0]));
    }
}
