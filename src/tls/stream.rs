//! A server-side TLS connection after its handshake ([`super::accept`]), read and written
//! as a byte stream, that keeps no buffer and no expanded key while idle, as
//! [`crate::ws::conn`] keeps no buffer.
//!
//! Memory is the point. rustls' buffered connection (what `tokio-rustls` wraps) keeps a
//! receive buffer of at least 4 KiB for the connection's life, and even its unbuffered
//! connection keeps over 2 KiB (its state machine, queues and handshake bookkeeping, and
//! two expanded AEAD keys of ~540 bytes each). Here, once the handshake is done, the
//! connection is: the socket, rustls' small post-handshake state (only to derive new keys
//! at a TLS 1.3 KeyUpdate), the raw traffic keys and sequence numbers of each direction
//! ([`record::Keys`]), and buffers that exist only while in use:
//!
//! - reads land in a stack buffer the size of the largest record and are opened in place
//!   there; only an incomplete record (`held_in`) and plaintext the reader has not taken
//!   (`plain`) are kept on the heap, each freed once empty;
//! - writes are sealed into `out`, freed once the socket has taken it all;
//! - the expanded key of a direction is made when a record is to be opened or sealed, and
//!   dropped after the read that used it and once `out` is written: a few hundred
//!   nanoseconds per batch, against a system call's microseconds.
//!
//! Records (format and AEAD in [`record`]): application data is the stream; the peer's
//! close_notify is the end of the stream (later bytes ignored) and ours is sent by
//! `poll_shutdown`; a TLS 1.3 KeyUpdate renews the receiving key and, when asked, ours
//! after sending our own (RFC 8446 4.6.3), at most [`MAX_KEY_UPDATES`] without data in
//! between; our key is also renewed before it seals the suite's confidentiality limit
//! of records (TLS 1.2, which cannot renew, closes instead). Anything else (a record that
//! does not open or is too long, a bad alert, renegotiation, a change_cipher_spec, a
//! client's NewSessionTicket, more than [`MAX_EMPTY_RECORDS`] empty records in a row)
//! fails the connection with the fatal alert it calls for, which goes out with the next
//! write attempt or at shutdown; a fatal alert from the peer fails it too. Every later
//! read or write then fails.
//!
//! Bounded: a record announcing more than the version's maximum is refused from its
//! header, so `held_in` holds less than one record plus one read; `out` takes at most
//! [`MAX_WRITE`] of plaintext per write and writes wait once [`MAX_HELD_OUT`] is queued.
//!
//! Cancel-safe like [`crate::ws::conn`]: progress lives in `self`, so a read or write
//! abandoned by a `select!` loses nothing (bytes read are processed before the read
//! returns; bytes accepted by a write are in `out`).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use ring::aead::LessSafeKey;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ExtractedSecrets, HandshakeKind, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::record::{self, HEADER, Keys, MAX_PLAINTEXT, Refused, Version, alert};

/// Bytes read from the socket at a time, into a stack buffer: the largest record a peer
/// may send (16 KiB of payload, 2 KiB of expansion, the 5-byte header), so that a record
/// that arrives whole is opened where it landed.
pub(super) const READ_CHUNK: usize = MAX_PLAINTEXT + 2048 + HEADER;
/// Most received bytes held during the handshake: a handshake message of rustls' maximum
/// (64 KiB), a record in progress and one read more. rustls refuses anything larger long
/// before. After it, less than one record plus one read is ever held.
pub(super) const MAX_HELD_IN: usize = 0x1_0000 + 2 * READ_CHUNK + 1024;
/// Most plaintext taken by one write (four full records).
pub const MAX_WRITE: usize = 64 * 1024;
/// Encrypted bytes queued beyond which writes (and reads, which may queue alerts and key
/// updates) wait for the socket.
pub const MAX_HELD_OUT: usize = 64 * 1024;
/// TLS 1.3 KeyUpdates accepted without application data in between.
pub const MAX_KEY_UPDATES: u8 = 32;
/// Empty application-data records accepted in a row.
pub const MAX_EMPTY_RECORDS: u8 = 32;
/// TLS 1.2 warning alerts (other than close_notify) or TLS 1.3 `user_canceled` accepted.
const MAX_WARNINGS: u8 = 4;

/// The record layer's state: what rustls handed over at the end of the handshake.
pub(super) struct Traffic {
    /// rustls' post-handshake state: derives the next traffic keys at a key update.
    kernel: KernelConnection<ServerConnectionData>,
    version: Version,
    /// Records sealed under one key before it must be renewed (the suite's
    /// confidentiality limit).
    limit: u64,
    tx: Keys,
    rx: Keys,
    /// Expanded keys, only while in use.
    seal_key: Option<Box<LessSafeKey>>,
    open_key: Option<Box<LessSafeKey>>,
    key_updates: u8,
    empty_records: u8,
    warnings: u8,
}

impl Traffic {
    /// From rustls' hand-over; `None` for a version or AEAD this layer does not implement.
    pub(super) fn new(
        kernel: KernelConnection<ServerConnectionData>,
        secrets: ExtractedSecrets,
    ) -> Option<Traffic> {
        let version = match kernel.protocol_version() {
            ProtocolVersion::TLSv1_3 => Version::Tls13,
            ProtocolVersion::TLSv1_2 => Version::Tls12,
            _ => return None,
        };
        let limit = match kernel.negotiated_cipher_suite() {
            rustls::SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            rustls::SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        Some(Traffic {
            version,
            limit,
            tx: Keys::new(secrets.tx.0, &secrets.tx.1)?,
            rx: Keys::new(secrets.rx.0, &secrets.rx.1)?,
            kernel,
            seal_key: None,
            open_key: None,
            key_updates: 0,
            empty_records: 0,
            warnings: 0,
        })
    }

    /// Seals one record, renewing our key first when it has sealed its limit.
    fn seal(&mut self, typ: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Refused> {
        if self.tx.seq >= self.limit {
            self.renew_tx(out)?;
        }
        self.seal_now(typ, payload, out)
    }

    fn seal_now(&mut self, typ: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Refused> {
        let Traffic {
            version,
            tx,
            seal_key,
            ..
        } = self;
        let key = seal_key.get_or_insert_with(|| tx.expand());
        record::seal(*version, tx, key, typ, payload, out).ok_or(Refused(alert::INTERNAL_ERROR))
    }

    /// Sends our KeyUpdate (under the old key) and switches to the next key (TLS 1.3).
    fn renew_tx(&mut self, out: &mut Vec<u8>) -> Result<(), Refused> {
        if self.version != Version::Tls13 {
            return Err(Refused(alert::INTERNAL_ERROR));
        }
        // KeyUpdate, update_not_requested (RFC 8446 4.6.3).
        self.seal_now(record::HANDSHAKE, &[24, 0, 0, 1, 0], out)?;
        let (seq, secrets) = self
            .kernel
            .update_tx_secret()
            .map_err(|_| Refused(alert::INTERNAL_ERROR))?;
        self.tx = Keys::new(seq, &secrets).ok_or(Refused(alert::INTERNAL_ERROR))?;
        self.seal_key = None;
        Ok(())
    }

    /// Seals `data` as application data, in records of at most 16 KiB.
    fn seal_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Refused> {
        for chunk in data.chunks(MAX_PLAINTEXT) {
            self.seal(record::APPLICATION_DATA, chunk, out)?;
        }
        Ok(())
    }

    /// Opens the whole records at the start of `buf` (plaintext to `sink`, answers into
    /// `out`) until the peer's close_notify. Returns the bytes consumed: the rest is an
    /// incomplete record.
    fn open_records(
        &mut self,
        buf: &mut [u8],
        sink: &mut Sink<'_, '_>,
        out: &mut Vec<u8>,
        read_closed: &mut bool,
    ) -> Result<usize, Failure> {
        let mut at = 0;
        while !*read_closed && buf.len() - at >= HEADER {
            let mut header = [0u8; HEADER];
            header.copy_from_slice(&buf[at..at + HEADER]);
            let len = record::announced(self.version, &header)?;
            if !(record::ALERT..=record::APPLICATION_DATA).contains(&header[0]) {
                // An unknown type, or a change_cipher_spec after the handshake.
                return Err(Refused(alert::UNEXPECTED_MESSAGE).into());
            }
            if buf.len() - at < HEADER + len {
                break;
            }
            let whole = &mut buf[at..at + HEADER + len];
            at += HEADER + len;
            let Traffic {
                version,
                rx,
                open_key,
                ..
            } = self;
            let key = open_key.get_or_insert_with(|| rx.expand());
            let (typ, range) = record::open(*version, rx, key, whole)?;
            let payload = &whole[range];
            match typ {
                record::APPLICATION_DATA => {
                    if payload.is_empty() {
                        self.empty_records += 1;
                        if self.empty_records > MAX_EMPTY_RECORDS {
                            return Err(Refused(alert::UNEXPECTED_MESSAGE).into());
                        }
                    } else {
                        self.empty_records = 0;
                        self.key_updates = 0;
                        sink.put(payload);
                    }
                }
                record::ALERT => self.on_alert(payload, read_closed)?,
                record::HANDSHAKE => self.on_handshake(payload, out)?,
                _ => return Err(Refused(alert::UNEXPECTED_MESSAGE).into()),
            }
        }
        Ok(at)
    }

    fn on_alert(&mut self, payload: &[u8], read_closed: &mut bool) -> Result<(), Failure> {
        let &[level, desc] = payload else {
            return Err(Refused(alert::DECODE_ERROR).into());
        };
        if desc == alert::CLOSE_NOTIFY {
            *read_closed = true;
            return Ok(());
        }
        // TLS 1.3: user_canceled is the only one that is not an error (close_notify
        // follows). TLS 1.2: a warning is not an error.
        let warning = match self.version {
            Version::Tls13 => desc == alert::USER_CANCELED,
            Version::Tls12 => level == 1,
        };
        if !warning {
            return Err(Failure {
                alert: desc,
                ours: false,
            });
        }
        self.warnings += 1;
        if self.warnings > MAX_WARNINGS {
            return Err(Refused(alert::UNEXPECTED_MESSAGE).into());
        }
        Ok(())
    }

    /// A handshake record after the handshake: a TLS 1.3 KeyUpdate is the only one a
    /// client may send (renegotiation, in TLS 1.2, is refused).
    fn on_handshake(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Failure> {
        if self.version != Version::Tls13 {
            return Err(Refused(alert::UNEXPECTED_MESSAGE).into());
        }
        let requested = match payload {
            [24, 0, 0, 1, r @ (0 | 1)] => *r == 1,
            [24, ..] => return Err(Refused(alert::DECODE_ERROR).into()),
            _ => return Err(Refused(alert::UNEXPECTED_MESSAGE).into()),
        };
        self.key_updates += 1;
        if self.key_updates > MAX_KEY_UPDATES {
            return Err(Refused(alert::UNEXPECTED_MESSAGE).into());
        }
        let (seq, secrets) = self
            .kernel
            .update_rx_secret()
            .map_err(|_| Refused(alert::INTERNAL_ERROR))?;
        self.rx = Keys::new(seq, &secrets).ok_or(Refused(alert::INTERNAL_ERROR))?;
        self.open_key = None;
        if requested {
            self.renew_tx(out)?;
        }
        Ok(())
    }
}

/// Why the connection failed: the alert, and whether we sent it or the peer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failure {
    alert: u8,
    ours: bool,
}

impl From<Refused> for Failure {
    fn from(r: Refused) -> Self {
        Failure {
            alert: r.0,
            ours: true,
        }
    }
}

impl Failure {
    fn io(self) -> io::Error {
        let who = if self.ours { "sent" } else { "received" };
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("TLS connection failed: alert {} {who}", self.alert),
        )
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

/// A TLS connection whose handshake is complete, read and written as a byte stream.
pub struct TlsStream {
    io: TcpStream,
    traffic: Traffic,
    /// An incomplete record. Empty and unallocated when idle.
    held_in: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet (the rest of a record larger than the
    /// reader's buffer). Empty and unallocated when idle.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Encrypted bytes not written yet. Empty and unallocated when idle.
    out: Vec<u8>,
    out_pos: usize,
    /// `out` holds only the TLS 1.3 tickets of the handshake: reading and flushing do not
    /// write them, the first write (or an alert, or the shutdown) takes them along.
    deferred: bool,
    /// The peer sent close_notify or closed its end: reads return end of stream.
    read_closed: bool,
    /// Our close_notify is queued: no more writes.
    write_closed: bool,
    resumed: bool,
    /// What ended the connection (our alert, if any, is queued in `out`).
    failed: Option<Failure>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("version", &self.traffic.version)
            .field("held_in", &self.held_in.len())
            .field("plain", &(self.plain.len() - self.plain_pos))
            .field("out", &(self.out.len() - self.out_pos))
            .field("deferred", &self.deferred)
            .field("read_closed", &self.read_closed)
            .field("write_closed", &self.write_closed)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    pub(super) fn new(
        io: TcpStream,
        traffic: Traffic,
        resumed: bool,
        mut held_in: Vec<u8>,
        plain: Vec<u8>,
        tickets: Vec<u8>,
        read_closed: bool,
    ) -> TlsStream {
        if held_in.is_empty() {
            held_in = Vec::new();
        } else {
            held_in.shrink_to_fit();
        }
        TlsStream {
            io,
            traffic,
            held_in,
            plain,
            plain_pos: 0,
            deferred: !tickets.is_empty(),
            out: tickets,
            out_pos: 0,
            read_closed,
            write_closed: false,
            resumed,
            failed: None,
        }
    }

    /// How the handshake went: full, or resumed from a session ticket or the cache.
    pub fn handshake_kind(&self) -> HandshakeKind {
        if self.resumed {
            HandshakeKind::Resumed
        } else {
            HandshakeKind::Full
        }
    }

    /// The TLS version negotiated.
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.traffic.kernel.protocol_version()
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

    /// Ends the connection with `f`, queueing our alert.
    fn fail(&mut self, f: Failure) {
        tracing::debug!(alert = f.alert, ours = f.ours, "TLS connection failed");
        self.deferred = false;
        if f.ours && !self.write_closed {
            self.compact_out();
            let _ = self
                .traffic
                .seal_now(record::ALERT, &[2, f.alert], &mut self.out);
        }
        self.write_closed = true;
        self.failed = Some(f);
        self.held_in = Vec::new();
    }

    /// Writes `out` until the socket has taken it all, then frees it and the sealing key.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.deferred = false;
        ready!(poll_write_all(
            &mut self.io,
            &mut self.out,
            &mut self.out_pos,
            cx
        ))?;
        self.traffic.seal_key = None;
        Poll::Ready(Ok(()))
    }

    /// Reads once from the socket into a stack buffer and opens the records that came.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        if buf.filled().is_empty() {
            // The peer closed without close_notify. What it sent is length-delimited
            // (HTTP/1.1, WebSocket frames), so a cut shows there; here it is the end.
            self.read_closed = true;
            self.held_in = Vec::new();
            return Poll::Ready(Ok(()));
        }
        self.take_in(buf.filled_mut(), reader);
        Poll::Ready(Ok(()))
    }

    /// Opens `data` just read (after the incomplete record held from before) and keeps
    /// what is left: less than one record.
    fn take_in(&mut self, data: &mut [u8], reader: &mut ReadBuf<'_>) {
        self.compact_out();
        let queued = self.out.len();
        let TlsStream {
            traffic,
            held_in,
            plain,
            out,
            read_closed,
            ..
        } = self;
        let mut sink = Sink {
            reader: Some(reader),
            plain,
        };
        let result = if held_in.is_empty() {
            traffic
                .open_records(data, &mut sink, out, read_closed)
                .map(|done| held_in.extend_from_slice(&data[done..]))
        } else {
            held_in.extend_from_slice(data);
            traffic
                .open_records(held_in, &mut sink, out, read_closed)
                .map(|done| {
                    held_in.drain(..done);
                })
        };
        traffic.open_key = None;
        if self.out.len() > queued {
            // A record reading produced (a KeyUpdate answer) goes out with the tickets.
            self.deferred = false;
        }
        match result {
            Err(f) => self.fail(f),
            // Anything after the peer's close_notify is ignored (RFC 8446 6.1).
            Ok(()) if self.read_closed || self.held_in.is_empty() => self.held_in = Vec::new(),
            Ok(()) => {}
        }
    }
}

/// Writes `out[*pos..]` until the socket has taken it all, then frees `out` (an idle
/// connection keeps no output buffer). Cancel-safe: progress lives in `pos`.
pub(super) fn poll_write_all(
    io: &mut TcpStream,
    out: &mut Vec<u8>,
    pos: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while *pos < out.len() {
        let n = ready!(Pin::new(&mut *io).poll_write(cx, &out[*pos..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *pos += n;
    }
    if out.capacity() > 0 {
        *out = Vec::new();
    }
    *pos = 0;
    Poll::Ready(Ok(()))
}

mod byte_stream;

#[cfg(test)]
mod tests;
