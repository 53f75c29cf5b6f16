//! A server-side TLS stream over TCP on rustls' unbuffered API, so that an idle
//! connection owns no buffer, as [`crate::ws::conn`] does.
//!
//! rustls' buffered connection (what `tokio-rustls` wraps) keeps a receive buffer of at
//! least 4 KiB once it has read anything and never gives it back, plus queues for
//! plaintext and records: ~7 KiB per idle WSS connection, more than the whole WebSocket
//! session. The unbuffered connection keeps only the protocol state (keys, sequence
//! numbers, the handshake state machine); the bytes are ours to hold, so this stream holds
//! them only while they are in use:
//!
//! - reads land in a stack buffer the size of the largest record and are decrypted in
//!   place there; only what is left over is kept on the heap (`held_in`: an incomplete
//!   record, or the records of a handshake message still incomplete) and a record's
//!   plaintext that did not fit the reader's buffer (`plain`); each is freed once empty;
//! - writes are encrypted into `out`, which is freed once the socket has taken it all.
//!
//! Everything rustls asks for between records is handled here: the handshake (with the
//! ClientHello and whole-handshake timeouts of [`accept`]), TLS 1.3 session tickets sent
//! after it, the peer's KeyUpdate (answered before our next record, as RFC 8446 4.6.3
//! asks), close_notify both ways (the peer's is the end of the stream; ours is sent by
//! `poll_shutdown`), and refused renegotiation in TLS 1.2. A bad record, an alert or any
//! protocol error ends the connection: rustls queues the alert to send, which goes out
//! with the next write attempt or at shutdown, and every later read or write fails.
//!
//! Bounded: rustls refuses a record over 16 KiB plus its overhead and a handshake message
//! over 64 KiB, and `held_in` is capped above both; `out` takes at most [`MAX_WRITE`] of
//! plaintext per write and writes wait once [`MAX_HELD_OUT`] is queued.
//!
//! Cancel-safe like [`crate::ws::conn`]: progress lives in `self`, so a read or write
//! abandoned by a `select!` loses nothing (bytes read are processed before the read
//! returns; bytes accepted by a write are in `out`).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus, WriteTraffic,
};
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read from the socket at a time, into a stack buffer: the largest record a peer
/// may send (16 KiB of payload, 2 KiB of expansion, the 5-byte header), so that a record
/// that arrives whole is decrypted where it landed.
const READ_CHUNK: usize = 16 * 1024 + 2048 + 5;
/// Most received bytes held: a handshake message of rustls' maximum (64 KiB), a record
/// in progress and one read more. rustls refuses anything larger long before.
const MAX_HELD_IN: usize = 0x1_0000 + 2 * READ_CHUNK + 1024;
/// Most plaintext taken by one write (four full records).
pub const MAX_WRITE: usize = 64 * 1024;
/// Encrypted bytes queued beyond which writes (and reads, which may queue alerts) wait for
/// the socket.
pub const MAX_HELD_OUT: usize = 64 * 1024;

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

/// Runs the server handshake on `io` with `config`: the complete ClientHello must arrive
/// within `hello_timeout`, the whole handshake (our last flight written, TLS 1.3 tickets
/// included) within `total_timeout`.
pub async fn accept(
    io: TcpStream,
    config: Arc<ServerConfig>,
    hello_timeout: Duration,
    total_timeout: Duration,
) -> Result<TlsStream, HandshakeError> {
    let started = tokio::time::Instant::now();
    let conn = UnbufferedServerConnection::new(config).map_err(HandshakeError::Tls)?;
    let mut stream = TlsStream {
        io,
        conn,
        held_in: Vec::new(),
        plain: Vec::new(),
        plain_pos: 0,
        out: Vec::new(),
        out_pos: 0,
        read_closed: false,
        write_closed: false,
        failed: None,
    };
    match tokio::time::timeout(
        hello_timeout,
        std::future::poll_fn(|cx| stream.poll_handshake(cx, true)),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(HandshakeError::HelloTimeout),
    }
    let rest = total_timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(
        rest,
        std::future::poll_fn(|cx| stream.poll_handshake(cx, false)),
    )
    .await
    {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HandshakeError::Timeout),
    }
}

/// A TLS connection whose handshake is complete, read and written as a byte stream.
pub struct TlsStream {
    io: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received bytes rustls has not consumed yet: an incomplete record, or the records of
    /// a handshake message not complete yet. Empty and unallocated when idle.
    held_in: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet (the rest of a record larger than the
    /// reader's buffer). Empty and unallocated when idle.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Encrypted bytes not written yet. Empty and unallocated when idle.
    out: Vec<u8>,
    out_pos: usize,
    /// The peer sent close_notify or closed its end: reads return end of stream.
    read_closed: bool,
    /// Our close_notify is queued: no more writes.
    write_closed: bool,
    /// The error that ended the connection (its alert is queued in `out`).
    failed: Option<rustls::Error>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("version", &self.conn.protocol_version())
            .field("held_in", &self.held_in.len())
            .field("plain", &(self.plain.len() - self.plain_pos))
            .field("out", &(self.out.len() - self.out_pos))
            .field("read_closed", &self.read_closed)
            .field("write_closed", &self.write_closed)
            .field("failed", &self.failed)
            .finish()
    }
}

/// Where decrypted application data goes: the reader's buffer first, the rest to `plain`.
struct Sink<'a, 'b> {
    reader: Option<&'a mut ReadBuf<'b>>,
    plain: &'a mut Vec<u8>,
}

impl Sink<'_, '_> {
    fn put(&mut self, mut data: &[u8]) {
        if self.plain.is_empty()
            && let Some(r) = self.reader.as_mut()
        {
            let n = r.remaining().min(data.len());
            r.put_slice(&data[..n]);
            data = &data[n..];
        }
        self.plain.extend_from_slice(data);
    }
}

/// What to do once rustls allows application data to be written.
enum Job<'d> {
    /// Nothing: stop there.
    Nothing,
    /// Encrypt these bytes into `out`.
    Encrypt(&'d [u8]),
    /// Queue our close_notify into `out`.
    CloseNotify,
}

/// Where processing stopped.
#[derive(Debug, PartialEq)]
enum Stop {
    /// rustls needs more bytes from the peer (mid-handshake, or between records).
    NeedInput,
    /// Both sides have sent close_notify.
    Closed,
}

/// Feeds `incoming` to rustls until it needs more input, doing what each state asks:
/// plaintext to `sink`, records to send into `out`, `job` once writing is allowed.
/// Returns how many bytes of `incoming` rustls is done with (the rest must be offered
/// again, after more input). On error, the alert rustls queued is put into `out`.
fn process(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    out: &mut Vec<u8>,
    sink: &mut Sink<'_, '_>,
    job: &mut Job<'_>,
    peer_closed: &mut bool,
) -> Result<(usize, Stop), rustls::Error> {
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
                    sink.put(record.payload);
                }
            }
            ConnectionState::EncodeTlsData(mut data) => encode(&mut data, out),
            // The records are in `out`, in order, ahead of anything written later; it
            // goes to the socket as the socket takes it.
            ConnectionState::TransmitTlsData(transmit) => transmit.done(),
            ConnectionState::PeerClosed => *peer_closed = true,
            ConnectionState::Closed => return Ok((discard + d, Stop::Closed)),
            ConnectionState::BlockedHandshake => return Ok((discard + d, Stop::NeedInput)),
            ConnectionState::WriteTraffic(mut traffic) => {
                match std::mem::replace(job, Job::Nothing) {
                    Job::Nothing => return Ok((discard + d, Stop::NeedInput)),
                    Job::Encrypt(data) => encrypt(&mut traffic, data, out)?,
                    Job::CloseNotify => close_notify(&mut traffic, out)?,
                }
            }
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

/// Encrypts `data` into `out` (after any record rustls has queued, such as our answer to
/// the peer's KeyUpdate).
fn encrypt(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    fill(out, |buf| traffic.encrypt(data, buf))
}

/// Queues our close_notify into `out`.
fn close_notify(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    out: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    fill(out, |buf| traffic.queue_close_notify(buf))
}

/// Calls `write` with room at the end of `out`, first none (rustls answers with the size
/// it needs), then that.
fn fill(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = 0;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(s)) if s.required_size > room => {
                room = s.required_size;
            }
            Err(e) => {
                out.truncate(start);
                return Err(rustls::Error::General(e.to_string()));
            }
        }
    }
}

fn broken(e: &rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.clone())
}

impl TlsStream {
    /// How the handshake went (full, or resumed from a session ticket or cache).
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.conn.handshake_kind()
    }

    /// The TLS version negotiated.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    fn out_pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Drops what the socket has taken from `out`, before more is appended.
    fn compact_out(&mut self) {
        if self.out_pos > 0 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    /// Writes `out` until the socket has taken it all, then frees it.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        if self.out.capacity() > 0 {
            self.out = Vec::new();
        }
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads once from the socket into a stack buffer and processes what came: plaintext
    /// to `reader` (the rest to `plain`), records to send into `out`. End of stream sets
    /// `read_closed`. Errors are kept in `failed` (the alert queued).
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        reader: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<()>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        if buf.filled().is_empty() {
            // The peer closed without close_notify. What it sent is length-delimited
            // (HTTP/1.1, WebSocket frames), so a cut shows there; here it is the end.
            // `held_in` stays: rustls may still point into it (a handshake message in
            // progress), and our close_notify is made with it.
            self.read_closed = true;
            return Poll::Ready(Ok(()));
        }
        self.take_in(buf.filled_mut(), reader);
        Poll::Ready(Ok(()))
    }

    /// Processes `data` just read (after what is held from before) and keeps what rustls
    /// has not consumed.
    fn take_in(&mut self, data: &mut [u8], reader: Option<&mut ReadBuf<'_>>) {
        let TlsStream {
            conn,
            held_in,
            plain,
            out,
            read_closed,
            failed,
            out_pos,
            ..
        } = self;
        if *out_pos > 0 {
            out.drain(..*out_pos);
            *out_pos = 0;
        }
        let mut sink = Sink { reader, plain };
        let mut job = Job::Nothing;
        let result = if held_in.is_empty() {
            let r = process(conn, data, out, &mut sink, &mut job, read_closed);
            if let Ok((done, _)) = &r {
                held_in.extend_from_slice(&data[*done..]);
            }
            r
        } else if held_in.len() + data.len() > MAX_HELD_IN {
            Err(rustls::Error::General(
                "too much unprocessed TLS input".into(),
            ))
        } else {
            held_in.extend_from_slice(data);
            let r = process(conn, held_in, out, &mut sink, &mut job, read_closed);
            if let Ok((done, _)) = &r {
                held_in.drain(..*done);
            }
            r
        };
        match result {
            // Anything after the peer's close_notify is ignored (RFC 8446 6.1).
            Ok(_) if *read_closed => *held_in = Vec::new(),
            Ok((_, Stop::Closed)) => {
                *read_closed = true;
                *held_in = Vec::new();
            }
            Ok((_, Stop::NeedInput)) if held_in.is_empty() && held_in.capacity() > 0 => {
                *held_in = Vec::new();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "TLS connection failed");
                *failed = Some(e);
                *held_in = Vec::new();
            }
        }
    }

    /// Runs `job` once rustls allows writing (after any record it has queued).
    fn run_job(&mut self, mut job: Job<'_>) -> io::Result<()> {
        self.compact_out();
        let TlsStream {
            conn,
            held_in,
            plain,
            out,
            read_closed,
            failed,
            ..
        } = self;
        let mut sink = Sink {
            reader: None,
            plain,
        };
        match process(conn, held_in, out, &mut sink, &mut job, read_closed) {
            Ok((done, stop)) => {
                held_in.drain(..done);
                if held_in.is_empty() {
                    *held_in = Vec::new();
                }
                if matches!(job, Job::Nothing) {
                    Ok(())
                } else if stop == Stop::Closed {
                    Err(io::ErrorKind::BrokenPipe.into())
                } else {
                    Err(io::Error::other("TLS connection not writable"))
                }
            }
            Err(e) => {
                let io = broken(&e);
                *failed = Some(e);
                *held_in = Vec::new();
                Err(io)
            }
        }
    }

    /// Drives the handshake: with `until_hello`, until the ClientHello has been read (our
    /// answer is ready); else until it is complete and our last flight is written.
    fn poll_handshake(
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
            if until_hello && (self.out_pending() > 0 || !self.conn.is_handshaking()) {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_write_out(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.read_closed {
                return Poll::Ready(Err(HandshakeError::Closed));
            }
            ready!(self.poll_fill(cx, None))?;
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.failed {
                let err = broken(e);
                // Best effort for the alert (shutdown finishes it).
                let _ = this.poll_write_out(cx);
                return Poll::Ready(Err(err));
            }
            if this.read_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Records that reading produced (an answer, an alert) go out as the socket
            // takes them; past the cap, reading waits for the socket.
            if this.out_pending() > 0 {
                match this.poll_write_out(cx) {
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending if this.out_pending() >= MAX_HELD_OUT => return Poll::Pending,
                    _ => {}
                }
            }
            let before = buf.filled().len();
            ready!(this.poll_fill(cx, Some(buf)))?;
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = &this.failed {
            return Poll::Ready(Err(broken(e)));
        }
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.out_pending() >= MAX_HELD_OUT {
            ready!(this.poll_write_out(cx))?;
        }
        let n = data.len().min(MAX_WRITE);
        this.run_job(Job::Encrypt(&data[..n]))?;
        // Push what the socket takes now; the rest waits for the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            this.write_closed = true;
            if this.failed.is_none() {
                // A connection already closed both ways has nothing more to say.
                match this.run_job(Job::CloseNotify) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        // Our close_notify, or the alert of the error that ended the connection.
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::client::TlsStream as ClientStream;

    use super::*;
    use crate::config::TlsConfig;
    use crate::telemetry::Metrics;
    use crate::tls::{Resumption, build_config};

    const WAIT: Duration = Duration::from_secs(10);

    struct Pki {
        server: Arc<ServerConfig>,
        roots: RootCertStore,
    }

    fn pki() -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der: CertificateDer<'static> = cert.der().clone();
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = TlsConfig::from_files("unused".into(), "unused".into());
        let resumption = Resumption::new(&config, Arc::new(Metrics::default())).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        Pki {
            server: build_config(vec![der], key, &resumption).unwrap(),
            roots,
        }
    }

    fn client_config(pki: &Pki, versions: &[&'static SupportedProtocolVersion]) -> ClientConfig {
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(pki.roots.clone())
            .with_no_client_auth()
    }

    /// A handshake over loopback: (relay side, client side).
    async fn pair(pki: &Pki, client: ClientConfig) -> (TlsStream, ClientStream<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await.unwrap()
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let server = accept(tcp, Arc::clone(&pki.server), WAIT, WAIT)
            .await
            .unwrap();
        (server, client.await.unwrap())
    }

    fn assert_no_buffer(s: &TlsStream) {
        assert_eq!(s.held_in.capacity(), 0, "{s:?}");
        assert_eq!(s.plain.capacity(), 0, "{s:?}");
        assert_eq!(s.out.capacity(), 0, "{s:?}");
    }

    #[tokio::test]
    async fn both_versions_round_trip_and_an_idle_stream_keeps_no_buffer() {
        let pki = pki();
        for (version, expect) in [
            (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
            (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        ] {
            let (mut server, mut client) = pair(&pki, client_config(&pki, &[version])).await;
            assert_eq!(server.protocol_version(), Some(expect));
            assert_eq!(server.handshake_kind(), Some(HandshakeKind::Full));
            assert_no_buffer(&server);
            client.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
            // Several records each way, larger than any read buffer.
            let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
            server.write_all(&big).await.unwrap();
            server.flush().await.unwrap();
            let mut back = vec![0u8; big.len()];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(back, big);
            client.write_all(&big).await.unwrap();
            client.flush().await.unwrap();
            let mut there = vec![0u8; big.len()];
            server.read_exact(&mut there).await.unwrap();
            assert_eq!(there, big);
            assert_no_buffer(&server);
        }
    }

    #[tokio::test]
    async fn a_record_is_held_only_until_the_reader_takes_it() {
        let pki = pki();
        let (mut server, mut client) =
            pair(&pki, client_config(&pki, &[&rustls::version::TLS13])).await;
        // One 16 KiB record, read 1,000 bytes at a time.
        let record = vec![7u8; 16 * 1024];
        client.write_all(&record).await.unwrap();
        client.flush().await.unwrap();
        let mut part = [0u8; 1000];
        server.read_exact(&mut part).await.unwrap();
        assert_eq!(server.held_in.capacity(), 0, "decrypted where it landed");
        assert_eq!(server.plain.len() - server.plain_pos, record.len() - 1000);
        let mut rest = vec![0u8; record.len() - 1000];
        server.read_exact(&mut rest).await.unwrap();
        assert!(rest.iter().all(|b| *b == 7));
        assert_no_buffer(&server);
        // Half a record: its bytes are held while the rest is awaited, then freed. The
        // record is made by the client's connection and sent by hand, split.
        let raw = {
            let conn = &mut client.get_mut().1;
            std::io::Write::write_all(&mut conn.writer(), b"half").unwrap();
            let mut buf = Vec::new();
            conn.write_tls(&mut buf).unwrap();
            buf
        };
        let tcp = &mut client.get_mut().0;
        tcp.write_all(&raw[..3]).await.unwrap();
        let mut four = [0u8; 4];
        let cut = tokio::time::timeout(Duration::from_millis(200), server.read_exact(&mut four));
        assert!(cut.await.is_err(), "half a record is not data");
        assert_eq!(server.held_in.len(), 3);
        tcp.write_all(&raw[3..]).await.unwrap();
        server.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"half");
        assert_no_buffer(&server);
    }

    #[tokio::test]
    async fn key_updates_and_close_notify_both_ways() {
        let pki = pki();
        let (mut server, mut client) =
            pair(&pki, client_config(&pki, &[&rustls::version::TLS13])).await;
        // The client updates its keys and asks us to update ours (RFC 8446 4.6.3).
        client.get_mut().1.refresh_traffic_keys().unwrap();
        client.write_all(b"after update").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0u8; 12];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"after update");
        server.write_all(b"answer").await.unwrap();
        server.flush().await.unwrap();
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
        // The client's close_notify is our end of stream; ours is its clean end.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
        server.shutdown().await.unwrap();
        let mut tail = Vec::new();
        client.read_to_end(&mut tail).await.unwrap();
        assert!(tail.is_empty());
        assert_no_buffer(&server);
    }

    /// Reads what the relay sends until it closes: the TLS records' content types (before
    /// the handshake, so in the clear).
    async fn record_types(tcp: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut all)).await;
        let mut types = Vec::new();
        let mut at = 0;
        while at + 5 <= all.len() {
            types.push(all[at]);
            at += 5 + usize::from(u16::from_be_bytes([all[at + 3], all[at + 4]]));
        }
        types
    }

    #[tokio::test]
    async fn garbage_after_the_handshake_fails_the_stream_with_an_alert() {
        let pki = pki();
        let junk: [&[u8]; 3] = [
            b"GET / HTTP/1.1\r\n\r\n",
            // An application-data record that does not decrypt.
            &[
                23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
                20,
            ],
            // A header announcing a record far over the maximum.
            &[23, 3, 3, 0xff, 0xff],
        ];
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            for junk in junk {
                let (mut server, mut client) = pair(&pki, client_config(&pki, &[version])).await;
                client.get_mut().0.write_all(junk).await.unwrap();
                let mut buf = [0u8; 64];
                let err = server.read(&mut buf).await.unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidData);
                assert!(server.write_all(b"more").await.is_err());
                server.shutdown().await.unwrap();
                drop(server);
                // The client reads our fatal alert.
                let got = tokio::time::timeout(WAIT, client.read_to_end(&mut Vec::new())).await;
                let err = got.expect("the relay closed").unwrap_err();
                assert!(err.to_string().contains("alert"), "{junk:?}: {err}");
            }
        }
    }

    /// A ClientHello as a rustls client would send it.
    fn client_hello(pki: &Pki) -> Vec<u8> {
        let config = Arc::new(client_config(pki, &[&rustls::version::TLS13]));
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = rustls::ClientConnection::new(config, name).unwrap();
        let mut hello = Vec::new();
        c.write_tls(&mut hello).unwrap();
        hello
    }

    #[tokio::test]
    async fn a_stalled_handshake_is_ended_by_the_right_timeout() {
        let pki = pki();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hello = client_hello(&pki);
        let (short, long) = (Duration::from_millis(300), Duration::from_millis(600));
        // Half a ClientHello, then nothing: the ClientHello timeout.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&hello[..hello.len() / 2]).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let r = accept(tcp, Arc::clone(&pki.server), short, long).await;
        assert!(matches!(r, Err(HandshakeError::HelloTimeout)), "{r:?}");
        // A whole ClientHello, then nothing: the handshake timeout.
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        c2.write_all(&hello).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let r = accept(tcp, Arc::clone(&pki.server), short, long).await;
        assert!(matches!(r, Err(HandshakeError::Timeout)), "{r:?}");
        // Not TLS at all: refused with an alert.
        let mut c3 = TcpStream::connect(addr).await.unwrap();
        c3.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let r = accept(tcp, Arc::clone(&pki.server), short, long).await;
        assert!(matches!(r, Err(HandshakeError::Tls(_))), "{r:?}");
        assert_eq!(record_types(&mut c3).await.last(), Some(&21));
        // A client that closes first.
        let c4 = TcpStream::connect(addr).await.unwrap();
        drop(c4);
        let (tcp, _) = listener.accept().await.unwrap();
        let r = accept(tcp, Arc::clone(&pki.server), short, long).await;
        assert!(matches!(r, Err(HandshakeError::Closed)), "{r:?}");
        drop((c, c2));
    }

    #[tokio::test]
    async fn a_ticket_from_one_connection_resumes_the_next() {
        let pki = pki();
        let config = client_config(&pki, &[&rustls::version::TLS13]);
        let (mut server, mut client) = pair(&pki, config.clone()).await;
        assert_eq!(
            client.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        // The tickets went out with the end of the handshake; the client takes them
        // while reading.
        server.write_all(b"hi").await.unwrap();
        server.flush().await.unwrap();
        let mut hi = [0u8; 2];
        client.read_exact(&mut hi).await.unwrap();
        drop((server, client));
        let (server, client) = pair(&pki, config).await;
        assert_eq!(
            client.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed)
        );
        assert_eq!(server.handshake_kind(), Some(HandshakeKind::Resumed));
        assert_no_buffer(&server);
    }
}
