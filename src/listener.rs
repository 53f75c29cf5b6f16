//! The relay's listeners, plain and TLS, both reporting the peer as [`PeerAddr`] to the
//! connection loop in [`crate::server`].
//!
//! TLS handshakes run in their own tasks, never in the accept loop, so one slow client
//! cannot hold up others; at most `MAX_HANDSHAKES` run at once and each gets
//! `HANDSHAKE_TIMEOUT`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

use crate::tls::TlsReloader;
use crate::ws::PeerAddr;

const MAX_HANDSHAKES: usize = 512;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept_tcp(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                // Frames are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                return (stream, addr);
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Plain HTTP/WS.
#[derive(Debug)]
pub struct PlainListener(pub TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (s, a) = accept_tcp(&self.0).await;
        (s, PeerAddr(a))
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr().map(PeerAddr)
    }
}

/// HTTPS/WSS.
#[derive(Debug)]
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, PeerAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stop accepting when the server lets go of the listener (shutdown).
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Starts accepting on `tcp` with the certificate of `tls`.
    pub fn new(tcp: TcpListener, tls: Arc<TlsReloader>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, addr) = accept_tcp(&tcp).await;
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let acceptor = tls.acceptor();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let _ = tx.send((tls_stream, PeerAddr(addr))).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %addr, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            rx,
            local,
            accept_task,
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task only ends when aborted by drop; never resolve then.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(PeerAddr(self.local))
    }
}
