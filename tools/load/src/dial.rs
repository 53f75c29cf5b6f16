//! How the load clients reach the relay: `ws://` ([`Plain`]) or `wss://` ([`TlsDialer`]),
//! one dialer per client ([`Dialers`]) so that a client reconnecting offers its own TLS
//! session. Scenarios are generic over the dialer and compiled once per transport: the
//! read loop of a plain socket has no TLS branch in it.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use sealcast_client::wire::ClientError;
use sealcast_client::wire::lean::{LeanConn, LeanStream};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::relay::Relay;
use super::tls::TlsDialer;

/// Opens an authenticated lean connection to the relay.
pub trait Dial: Clone + Send + Sync + 'static {
    /// The stream the connection runs over.
    type Stream: LeanStream;

    /// Connects to `addr` from `source`, upgrades to a WebSocket and authenticates.
    fn connect(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        token: &str,
    ) -> impl Future<Output = Result<LeanConn<Self::Stream>, ClientError>> + Send;
}

/// `ws://`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl Dial for Plain {
    type Stream = TcpStream;

    fn connect(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        token: &str,
    ) -> impl Future<Output = Result<LeanConn<TcpStream>, ClientError>> + Send {
        LeanConn::connect_from(addr, source, token)
    }
}

impl Dial for TlsDialer {
    type Stream = TlsStream<TcpStream>;

    fn connect(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        token: &str,
    ) -> impl Future<Output = Result<LeanConn<Self::Stream>, ClientError>> + Send {
        LeanConn::connect_tls_from(addr, source, &self.connector, self.name.clone(), token)
    }
}

/// One dialer per client index (a client keeps its TLS sessions across reconnections).
#[derive(Clone)]
pub struct Dialers<D>(Arc<Vec<D>>);

impl<D: Dial> Dialers<D> {
    /// The dialer of client `i` (indices beyond the count wrap).
    pub fn get(&self, i: usize) -> &D {
        &self.0[i % self.0.len()]
    }
}

impl Dialers<Plain> {
    /// `n` plain dialers.
    pub fn plain(n: usize) -> Dialers<Plain> {
        Dialers(Arc::new(vec![Plain; n.max(1)]))
    }
}

impl Dialers<TlsDialer> {
    /// `n` TLS dialers of `relay` (each with its own session store when resuming).
    pub fn tls(tls: &super::tls::TlsClient, n: usize) -> Dialers<TlsDialer> {
        Dialers(Arc::new((0..n.max(1)).map(|_| tls.dialer()).collect()))
    }
}

/// Runs `$body` with `$d` bound to the relay's dialers for `$n` clients: [`Plain`] for a
/// `ws://` relay, [`TlsDialer`] for a `wss://` one; each arm is compiled on its own.
#[macro_export]
macro_rules! with_dialers {
    ($relay:expr, $n:expr, |$d:ident| $body:expr) => {
        match $relay.tls() {
            None => {
                let $d = $crate::dial::Dialers::plain($n);
                $body
            }
            Some(t) => {
                let $d = $crate::dial::Dialers::tls(t, $n);
                $body
            }
        }
    };
}

/// The transport's name for reports.
pub fn transport(relay: &Relay) -> &'static str {
    match relay.tls() {
        None => "ws",
        Some(t) if t.resume() => "wss (resumption on)",
        Some(_) => "wss (resumption off)",
    }
}
