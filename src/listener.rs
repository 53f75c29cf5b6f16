//! The relay's listeners, plain and TLS, both reporting the peer as [`PeerAddr`] to the
//! connection loop in [`crate::server`].
//!
//! TLS handshakes run in their own tasks and the accept loop never waits on them: a socket
//! that arrives while `tls.max_handshakes` are in progress is closed at once (counted), so
//! silent sockets cannot make other clients queue behind them. A handshake first waits for
//! the ClientHello alone, for `tls.client_hello_timeout` (short: a real client sends it at
//! once), then gets the rest of `tls.handshake_timeout` ([`crate::tls::accept`]). Each
//! connection takes the certificate current when it is accepted, and runs on
//! [`crate::tls::TlsStream`], which keeps no buffer while idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::config::TlsConfig;
use crate::telemetry::Metrics;
use crate::tls::{TlsReloader, TlsStream};
use crate::ws::PeerAddr;

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
    rx: mpsc::Receiver<(TlsStream, PeerAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stop accepting when the server lets go of the listener (shutdown).
        self.accept_task.abort();
    }
}

/// Holds one place among the handshakes in progress; gives it back when dropped.
struct HandshakeSlot {
    in_flight: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl HandshakeSlot {
    fn take(in_flight: &Arc<AtomicUsize>, max: usize, metrics: &Arc<Metrics>) -> Option<Self> {
        in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        metrics.tls_handshakes.inc();
        Some(HandshakeSlot {
            in_flight: Arc::clone(in_flight),
            metrics: Arc::clone(metrics),
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.metrics.tls_handshakes.dec();
    }
}

impl TlsListener {
    /// Starts accepting on `tcp` with the certificate of `tls`.
    pub fn new(
        tcp: TcpListener,
        tls: Arc<TlsReloader>,
        config: &TlsConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        // Completed handshakes wait here for the server loop, which takes them at once.
        let (tx, rx) = mpsc::channel(1024);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max = config.max_handshakes;
        let (hello_timeout, total_timeout) =
            (config.client_hello_timeout, config.handshake_timeout);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, addr) = accept_tcp(&tcp).await;
                let Some(slot) = HandshakeSlot::take(&in_flight, max, &metrics) else {
                    // Never wait: close this one and keep accepting.
                    metrics.limit_hit("tls_handshakes");
                    drop(stream);
                    continue;
                };
                let config = tls.config();
                let tx = tx.clone();
                let metrics = Arc::clone(&metrics);
                tokio::spawn(async move {
                    let result =
                        crate::tls::accept(stream, config, hello_timeout, total_timeout).await;
                    drop(slot);
                    match result {
                        Ok(tls_stream) => {
                            metrics.tls_handshake_completed(
                                tls_stream.handshake_kind() == rustls::HandshakeKind::Resumed,
                            );
                            let _ = tx.send((tls_stream, PeerAddr(addr))).await;
                        }
                        Err(e) => tracing::debug!(peer = %addr, error = %e, "TLS handshake failed"),
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
    type Io = TlsStream;
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
