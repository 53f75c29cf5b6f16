//! One upgraded socket speaking WebSocket: reads whole client messages, writes server
//! frames, closes politely. Owned by its session task, never shared.
//!
//! Memory is the design constraint here: at a million connections every byte kept per
//! socket is a megabyte. So an idle `Conn` holds no buffer at all. Reads land in a stack
//! buffer first; the decoder takes a data payload as it arrives (into the message in
//! progress), so only the bytes of an incomplete header or control frame are kept (in
//! `rbuf`, freed once it empties); writes gather frames in `wbuf` for one write per batch
//! and free it once the batch is out.
//!
//! Every operation is cancel-safe: progress lives in `self`, so a read abandoned by a
//! `select!` loses no bytes and a write cut short by a timeout keeps its remainder, which
//! [`Conn::close`] finishes before the close frame so the stream stays well-framed.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::codec::{self, CodecError, Decoded, Decoder, Inbound};

/// Bytes read from the socket at a time, into a stack buffer.
const READ_CHUNK: usize = 4096;
/// Gathered frames are written out once they pass this size, even mid-batch.
const WRITE_CHUNK: usize = 64 * 1024;

/// Why no message could be read.
#[derive(Debug)]
pub enum RecvError {
    /// The client closed the stream, or it broke.
    Gone,
    /// The client's bytes are not valid WebSocket.
    Codec(CodecError),
}

/// A server-side WebSocket connection over `S` (plain TCP, TLS, or hyper's upgraded IO).
pub struct Conn<S> {
    io: S,
    decoder: Decoder,
    /// Unparsed bytes read from the socket: at most an incomplete frame header or control
    /// frame once decoding has run. Empty and unallocated when idle.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Frames not yet written. Empty and unallocated when idle.
    wbuf: Vec<u8>,
    wpos: usize,
    close_sent: bool,
}

impl<S> std::fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered_in", &(self.rbuf.len() - self.rpos))
            .field("buffered_out", &(self.wbuf.len() - self.wpos))
            .field("close_sent", &self.close_sent)
            .finish()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps an upgraded socket. `pre` holds bytes the HTTP layer read past the upgrade
    /// request (a client may send its first frame without waiting for the 101).
    pub fn new(io: S, pre: &[u8], max_message: usize) -> Self {
        Conn {
            io,
            decoder: Decoder::new(max_message),
            rbuf: pre.to_vec(),
            rpos: 0,
            wbuf: Vec::new(),
            wpos: 0,
            close_sent: false,
        }
    }

    /// Reads the next complete message. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Inbound, RecvError> {
        loop {
            while self.rpos < self.rbuf.len() {
                match self.decoder.decode(&self.rbuf[self.rpos..]) {
                    Err(e) => return Err(RecvError::Codec(e)),
                    Ok(Decoded::Incomplete) => break,
                    Ok(Decoded::Progress { consumed, message }) => {
                        self.rpos += consumed;
                        if let Some(m) = message {
                            self.compact();
                            return Ok(m);
                        }
                    }
                }
            }
            self.compact();
            std::future::poll_fn(|cx| self.poll_fill(cx)).await?;
        }
    }

    /// Drops consumed bytes; frees the buffer when nothing is left in it.
    fn compact(&mut self) {
        if self.rpos == self.rbuf.len() {
            if self.rbuf.capacity() > 0 {
                self.rbuf = Vec::new();
            }
            self.rpos = 0;
        } else if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RecvError>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack);
        match ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
            Ok(()) if buf.filled().is_empty() => Poll::Ready(Err(RecvError::Gone)),
            Ok(()) => {
                self.rbuf.extend_from_slice(buf.filled());
                Poll::Ready(Ok(()))
            }
            Err(_) => Poll::Ready(Err(RecvError::Gone)),
        }
    }

    /// Queues a complete frame (as made by [`codec`]) for the next [`Conn::flush`];
    /// writes out what is gathered once it passes `WRITE_CHUNK`.
    pub async fn feed(&mut self, frame: &[u8]) -> io::Result<()> {
        self.wbuf.extend_from_slice(frame);
        if self.wbuf.len() - self.wpos >= WRITE_CHUNK {
            self.write_out().await?;
        }
        Ok(())
    }

    /// Queues a text frame of `text` for the next flush.
    pub fn feed_text(&mut self, text: &[u8]) {
        codec::put_header(&mut self.wbuf, codec::OP_TEXT, text.len());
        self.wbuf.extend_from_slice(text);
    }

    /// Queues a binary frame of `data` and writes everything queued. (The relay's own
    /// protocol is text only; this is for tools on this layer, such as the Autobahn echo
    /// server in `examples/`.)
    pub async fn send_binary(&mut self, data: &[u8]) -> io::Result<()> {
        codec::put_header(&mut self.wbuf, codec::OP_BINARY, data.len());
        self.wbuf.extend_from_slice(data);
        self.flush().await
    }

    /// Queues a text frame of `text` and writes everything queued.
    pub async fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        self.feed_text(text);
        self.flush().await
    }

    /// Queues a complete frame and writes everything queued.
    pub async fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.wbuf.extend_from_slice(frame);
        self.flush().await
    }

    /// Writes everything queued and flushes the stream (TLS buffers included), then
    /// frees the write buffer. Cancel-safe: a cut-short write keeps its remainder.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.write_out().await?;
        self.io.flush().await
    }

    async fn write_out(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            let n = self.io.write(&self.wbuf[self.wpos..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.wpos += n;
        }
        self.wbuf = Vec::new();
        self.wpos = 0;
        Ok(())
    }

    /// Closes with `code`: finishes any frame cut short and sends the close frame (within
    /// `write_within`), waits up to `linger` for the client's close (so the close frame is
    /// not lost to a TCP reset), then shuts the stream down. `code` `None` answers a
    /// client's close without a code.
    pub async fn close(
        &mut self,
        code: Option<u16>,
        reason: &str,
        write_within: Duration,
        linger: Duration,
    ) {
        if !self.close_sent {
            self.close_sent = true;
            let frame = match code {
                Some(c) => codec::close_frame(c, reason),
                None => vec![0x80 | codec::OP_CLOSE, 0],
            };
            self.wbuf.extend_from_slice(&frame);
            if !matches!(
                tokio::time::timeout(write_within, self.flush()).await,
                Ok(Ok(()))
            ) {
                let _ = tokio::time::timeout(linger, self.io.shutdown()).await;
                return;
            }
        }
        let _ = tokio::time::timeout(linger, async {
            // Until the client's close, its end of stream, or anything unreadable.
            while let Ok(m) = self.recv().await {
                if matches!(m, Inbound::Close(_)) {
                    break;
                }
            }
        })
        .await;
        let _ = tokio::time::timeout(linger, self.io.shutdown()).await;
    }

    /// Answers a client's close frame (echoing its code, RFC 6455 5.5.1) and shuts down.
    pub async fn answer_close(&mut self, code: Option<u16>, linger: Duration) {
        if !self.close_sent {
            self.close_sent = true;
            let frame = match code {
                Some(c) => codec::close_frame(c, ""),
                None => vec![0x80 | codec::OP_CLOSE, 0],
            };
            self.wbuf.extend_from_slice(&frame);
            let _ = tokio::time::timeout(linger, self.flush()).await;
        }
        let _ = tokio::time::timeout(linger, self.io.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, duplex};

    use super::*;

    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x80 | opcode];
        assert!(payload.len() < 126);
        f.push(0x80 | payload.len() as u8);
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[tokio::test]
    async fn reads_messages_split_anyhow_and_frees_its_buffer_between_them() {
        let (mut client, server) = duplex(64);
        let mut conn = Conn::new(server, &masked(codec::OP_TEXT, b"first"), 1024);
        let second = masked(codec::OP_TEXT, b"second");
        assert_eq!(conn.recv().await.unwrap(), Inbound::Text("first".into()));
        assert_eq!(conn.rbuf.capacity(), 0, "nothing kept once read");
        let writer = tokio::spawn(async move {
            for b in second {
                client.write_all(&[b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        assert_eq!(conn.recv().await.unwrap(), Inbound::Text("second".into()));
        assert_eq!(conn.rbuf.capacity(), 0);
        drop(writer.await.unwrap());
        assert!(matches!(conn.recv().await, Err(RecvError::Gone)));
    }

    // Paused clock: the timeout below fires only once the read has taken all it can.
    #[tokio::test(start_paused = true)]
    async fn a_payload_in_progress_is_not_kept_in_the_read_buffer() {
        let (mut client, server) = duplex(1 << 16);
        let mut conn = Conn::new(server, &[], 1 << 16);
        // A 10,000-byte binary frame (16-bit length): header, mask, then half the payload.
        let mut frame = vec![0x82, 0x80 | 126, 0x27, 0x10, 0, 0, 0, 0];
        frame.extend_from_slice(&[7u8; 10_000]);
        client.write_all(&frame[..5_008]).await.unwrap();
        // The read waits for the rest; abandon it once everything sent has been taken.
        let wait = tokio::time::timeout(Duration::from_secs(1), conn.recv()).await;
        assert!(wait.is_err(), "the message is not complete yet");
        assert!(conn.decoder.in_message());
        assert_eq!(conn.rbuf.capacity(), 0, "the payload went to the message");
        client.write_all(&frame[5_008..]).await.unwrap();
        assert_eq!(conn.recv().await.unwrap(), Inbound::Binary(vec![7; 10_000]));
        assert!(!conn.decoder.in_message());
        assert_eq!(conn.rbuf.capacity(), 0);
    }

    #[tokio::test]
    async fn batches_go_out_in_one_piece_and_the_write_buffer_is_freed() {
        let (mut client, server) = duplex(1 << 16);
        let mut conn = Conn::new(server, &[], 1024);
        let a = codec::text_frame(b"a");
        let b = codec::text_frame(b"bb");
        conn.feed(&a).await.unwrap();
        conn.feed(&b).await.unwrap();
        conn.flush().await.unwrap();
        assert_eq!(conn.wbuf.capacity(), 0);
        let mut got = vec![0u8; a.len() + b.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [&a[..], &b[..]].concat());
    }

    #[tokio::test]
    async fn close_sends_the_code_and_waits_for_the_answer() {
        let (mut client, server) = duplex(1024);
        let mut conn = Conn::new(server, &[], 1024);
        let peer = tokio::spawn(async move {
            let mut head = [0u8; 4];
            client.read_exact(&mut head).await.unwrap();
            let mut reason = vec![0u8; usize::from(head[1]) - 2];
            client.read_exact(&mut reason).await.unwrap();
            client
                .write_all(&masked(codec::OP_CLOSE, &head[2..4]))
                .await
                .unwrap();
            (u16::from_be_bytes([head[2], head[3]]), reason)
        });
        conn.close(
            Some(4003),
            "token_revoked",
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await;
        let (code, reason) = peer.await.unwrap();
        assert_eq!((code, &reason[..]), (4003, &b"token_revoked"[..]));
    }

    #[tokio::test]
    async fn a_write_cut_short_is_finished_before_the_close_frame() {
        let (mut client, server) = duplex(16);
        let mut conn = Conn::new(server, &[], 1024);
        let big = codec::text_frame(&[b'x'; 100]);
        conn.feed(&big).await.unwrap();
        // The pipe holds 16 bytes: this flush cannot finish and is abandoned.
        let cut = tokio::time::timeout(Duration::from_millis(50), conn.flush()).await;
        assert!(cut.is_err());
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut chunk = [0u8; 64];
            loop {
                let n = client.read(&mut chunk).await.unwrap();
                all.extend_from_slice(&chunk[..n]);
                if all.len() >= big.len() + 4 {
                    return (all, big);
                }
            }
        });
        conn.close(
            Some(4008),
            "",
            Duration::from_millis(200),
            Duration::from_millis(200),
        )
        .await;
        let (all, big) = reader.await.unwrap();
        assert_eq!(&all[..big.len()], &big[..], "the whole frame, then");
        assert_eq!(&all[big.len()..big.len() + 4], &[0x88, 2, 0x0f, 0xa8]);
    }
}
