//! The byte-stream side of [`TlsStream`]: reads open records into the reader's buffer,
//! writes seal records and push them to the socket, flush and shutdown (close_notify).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::super::record::{self, alert};
use super::{Failure, MAX_HELD_OUT, MAX_WRITE, TlsStream};

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
            if let Some(f) = this.failed {
                // Best effort for our alert (shutdown finishes it).
                let _ = this.poll_write_out(cx);
                return Poll::Ready(Err(f.io()));
            }
            if this.read_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Records that reading produced (key updates) go out as the socket takes them;
            // past the cap, reading waits for the socket.
            if this.out_pending() > 0 && !this.deferred {
                match this.poll_write_out(cx) {
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending if this.out_pending() >= MAX_HELD_OUT => return Poll::Pending,
                    _ => {}
                }
            }
            let before = buf.filled().len();
            ready!(this.poll_fill(cx, buf))?;
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
        if let Some(f) = this.failed {
            return Poll::Ready(Err(f.io()));
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
        this.compact_out();
        if let Err(r) = this.traffic.seal_data(&data[..n], &mut this.out) {
            this.fail(r.into());
            return Poll::Ready(Err(this
                .failed
                .map_or_else(|| io::ErrorKind::BrokenPipe.into(), Failure::io)));
        }
        // Push what the socket takes now; the rest waits for the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Only what was written is flushed: tickets still waiting for the first write
        // stay (hyper flushes before it has read a request).
        if !this.deferred {
            ready!(this.poll_write_out(cx))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            this.write_closed = true;
            this.compact_out();
            // close_notify (warning); if it cannot be sealed, the TCP close still ends it.
            let _ = this
                .traffic
                .seal(record::ALERT, &[1, alert::CLOSE_NOTIFY], &mut this.out);
        }
        // Our close_notify, or the alert of the error that ended the connection.
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
