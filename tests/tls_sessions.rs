//! Native TLS connections (`tls::TlsStream`, rustls' unbuffered API): TLS 1.2-only and
//! TLS 1.3-only clients over HTTPS and WSS, messages of many records both ways, session
//! resumption (tickets, the session-ID cache, neither), garbage after the handshake, and a
//! client that stops half-way through a record.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::certs::{Ca, ca, leaf};
use common::raw::{upgrade_request, ws_frame};
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12Resumption};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind, NamedGroup, RootCertStore, SupportedProtocolVersion};
use sealcast::config::TlsConfig;
use sealcast_client::wire::{Client, Publisher};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

/// A certificate for localhost written to a fresh directory, as `[tls]` with defaults.
fn tls_files(name: &str, ca: &Ca) -> (TlsConfig, PathBuf) {
    let d = std::env::temp_dir().join(format!(
        "sealcast-tls-sessions-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    let (cert, key, _) = leaf(ca, "relay");
    std::fs::write(d.join("cert.pem"), cert).unwrap();
    std::fs::write(d.join("key.pem"), key).unwrap();
    (
        TlsConfig::from_files(d.join("cert.pem"), d.join("key.pem")),
        d,
    )
}

/// A client trusting `ca`, speaking only `versions`, with its own session store.
fn client(
    ca: &Ca,
    versions: &[&'static SupportedProtocolVersion],
    tls12: Tls12Resumption,
) -> Arc<ClientConfig> {
    let store = Resumption::store(Arc::new(ClientSessionMemoryCache::new(32)));
    client_with(ca, versions, store.tls12_resumption(tls12))
}

/// A client trusting `ca`, speaking only `versions`, resuming with `resumption`.
fn client_with(
    ca: &Ca,
    versions: &[&'static SupportedProtocolVersion],
    resumption: Resumption,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let mut c =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    c.resumption = resumption;
    Arc::new(c)
}

async fn tls_connect(addr: std::net::SocketAddr, cfg: &Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::clone(cfg))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// `GET /healthz` read to the end (so the client has taken any ticket sent after the
/// handshake); returns how the handshake went.
async fn healthz(addr: std::net::SocketAddr, cfg: &Arc<ClientConfig>) -> HandshakeKind {
    let mut tls = tls_connect(addr, cfg).await;
    let kind = tls.get_ref().1.handshake_kind().unwrap();
    healthz_on(&mut tls).await;
    kind
}

/// `GET /healthz` on a connection, read to the end.
async fn healthz_on(tls: &mut TlsStream<TcpStream>) {
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, tls.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

fn completed(relay: &Relay, kind: &str) -> f64 {
    metric_with_label(
        &relay.state.metrics.render(),
        "sealcast_tls_handshakes_completed_total",
        kind,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_and_tls13_only_clients_carry_https_and_wss_with_large_messages() {
    let ca = ca();
    let (tls, d) = tls_files("versions", &ca);
    let relay = Relay::start_with(|c| c.tls = Some(tls)).await;
    let url = format!("wss://localhost:{}/v1/ws", relay.addr.port());
    let base = format!("https://localhost:{}", relay.addr.port());
    let max_frame = relay.state.config.websocket.max_frame_bytes;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let cfg = client(&ca, &[version], Tls12Resumption::SessionIdOrTickets);
        let (mut c, _) = Client::open_tls(&url, Arc::clone(&cfg))
            .await
            .unwrap()
            .authenticate(&connect_token(NS, "u", 600))
            .await
            .unwrap();
        let ch = channel(&format!("big-{:?}", version.version));
        // A client frame just under the frame limit: a subscribe padded with whitespace.
        let frame = json!({"type":"subscribe","id":77,"channel":ch}).to_string();
        let padded = format!("{frame}{}", " ".repeat(max_frame - frame.len() - 16));
        c.send_raw(Message::text(padded)).await.unwrap();
        let reply = c.frame(WAIT).await.unwrap();
        assert_eq!(
            (reply["type"].as_str(), reply["id"].as_u64()),
            (Some("subscribed"), Some(77))
        );
        // A publication near the payload limit, over HTTPS with the same TLS version, and
        // delivered over WSS in several records.
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*cfg).clone())
            .build()
            .unwrap();
        let publisher = Publisher::with_client(&base, http);
        let plain: String = (0..60_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let data = sealed(&ch, "Ev", &plain);
        let a = publisher
            .publish(&publish_token(None), &ch, "Ev", &data, None)
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{:?}", a.body);
        let got = c.frame(WAIT).await.unwrap();
        assert_eq!(got["data"].as_str(), Some(data.as_str()));
        c.close().await;
    }
    // Two WSS sessions and two publishers (which may resume the session of the WSS
    // client with the same config).
    assert!(completed(&relay, "full") >= 2.0);
    assert!(completed(&relay, "full") + completed(&relay, "resumed") >= 4.0);
    relay.stop().await;
    std::fs::remove_dir_all(&d).ok();
}

#[tokio::test]
async fn sessions_resume_from_tickets_and_from_the_session_cache() {
    let ca = ca();
    let (tls, d) = tls_files("resume", &ca);
    let relay = Relay::start_with(|c| c.tls = Some(tls)).await;
    // TLS 1.3 from a ticket.
    let v13 = client(
        &ca,
        &[&rustls::version::TLS13],
        Tls12Resumption::SessionIdOrTickets,
    );
    assert_eq!(healthz(relay.addr, &v13).await, HandshakeKind::Full);
    assert_eq!(healthz(relay.addr, &v13).await, HandshakeKind::Resumed);
    // TLS 1.2 from a ticket, and from the session-ID cache for a client without tickets.
    let cached = || {
        metric_value(
            &relay.state.metrics.render(),
            "sealcast_tls_session_cache_entries",
        )
    };
    assert_eq!(cached(), 0.0, "TLS 1.3 tickets keep nothing on the relay");
    let v12 = client(
        &ca,
        &[&rustls::version::TLS12],
        Tls12Resumption::SessionIdOrTickets,
    );
    assert_eq!(healthz(relay.addr, &v12).await, HandshakeKind::Full);
    // A full TLS 1.2 handshake also leaves its session ID (rustls issues both).
    assert_eq!(cached(), 1.0);
    assert_eq!(healthz(relay.addr, &v12).await, HandshakeKind::Resumed);
    let ids = client(
        &ca,
        &[&rustls::version::TLS12],
        Tls12Resumption::SessionIdOnly,
    );
    assert_eq!(healthz(relay.addr, &ids).await, HandshakeKind::Full);
    assert_eq!(healthz(relay.addr, &ids).await, HandshakeKind::Resumed);
    assert_eq!(cached(), 2.0);
    assert_eq!(completed(&relay, "resumed"), 3.0);
    assert_eq!(completed(&relay, "full"), 3.0);
    relay.stop().await;

    // Tickets off: TLS 1.3 resumes from the cache; with no cache either, nothing resumes.
    let (mut tls, _) = tls_files("resume", &ca);
    tls.session_tickets = false;
    let relay = Relay::start_with(|c| c.tls = Some(tls.clone())).await;
    let v13 = client(
        &ca,
        &[&rustls::version::TLS13],
        Tls12Resumption::SessionIdOrTickets,
    );
    assert_eq!(healthz(relay.addr, &v13).await, HandshakeKind::Full);
    assert_eq!(healthz(relay.addr, &v13).await, HandshakeKind::Resumed);
    relay.stop().await;
    tls.session_cache_size = 0;
    let relay = Relay::start_with(|c| c.tls = Some(tls)).await;
    for cfg in [
        client(
            &ca,
            &[&rustls::version::TLS13],
            Tls12Resumption::SessionIdOrTickets,
        ),
        client(
            &ca,
            &[&rustls::version::TLS12],
            Tls12Resumption::SessionIdOrTickets,
        ),
    ] {
        assert_eq!(healthz(relay.addr, &cfg).await, HandshakeKind::Full);
        assert_eq!(healthz(relay.addr, &cfg).await, HandshakeKind::Full);
    }
    assert_eq!(completed(&relay, "resumed"), 0.0);
    relay.stop().await;
    std::fs::remove_dir_all(&d).ok();
}

/// A client's session store that counts the TLS 1.3 tickets it is given.
#[derive(Debug)]
struct CountingStore {
    inner: ClientSessionMemoryCache,
    tickets: AtomicUsize,
}

impl ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

#[tokio::test]
async fn tls13_tickets_go_out_with_the_first_response() {
    let ca = ca();
    let (tls, d) = tls_files("tickets", &ca);
    let relay = Relay::start_with(|c| c.tls = Some(tls)).await;
    let store = Arc::new(CountingStore {
        inner: ClientSessionMemoryCache::new(8),
        tickets: AtomicUsize::new(0),
    });
    let cfg = client_with(
        &ca,
        &[&rustls::version::TLS13],
        Resumption::store(Arc::clone(&store) as Arc<dyn ClientSessionStore>),
    );
    for (round, kind) in [HandshakeKind::Full, HandshakeKind::Resumed]
        .into_iter()
        .enumerate()
    {
        let mut tls = tls_connect(relay.addr, &cfg).await;
        assert_eq!(tls.get_ref().1.handshake_kind(), Some(kind));
        // The relay has read our Finished by the time it answers anything; until we send
        // a request it sends nothing: the ticket waits for the response.
        let mut b = [0u8; 64];
        let early =
            tokio::time::timeout(Duration::from_millis(300), tls.get_mut().0.peek(&mut b)).await;
        assert!(
            early.is_err(),
            "round {round}: the relay wrote before the first response: {early:?} {:?}",
            &b[..8]
        );
        assert_eq!(
            store.tickets.load(Ordering::SeqCst),
            round * sealcast::tls::TLS13_TICKETS
        );
        healthz_on(&mut tls).await;
        // `TLS13_TICKETS` per handshake, full or resumed, all with the response.
        assert_eq!(
            store.tickets.load(Ordering::SeqCst),
            (round + 1) * sealcast::tls::TLS13_TICKETS
        );
    }
    relay.stop().await;
    std::fs::remove_dir_all(&d).ok();
}

/// A WebSocket over TLS spoken by hand: upgraded and authenticated.
async fn raw_wss(relay: &Relay, cfg: &Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let mut tls = tls_connect(relay.addr, cfg).await;
    tls.write_all(upgrade_request(relay.addr).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tls.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let connect = json!({"type":"connect","token":connect_token(NS, "raw", 600)}).to_string();
    tls.write_all(&ws_frame(true, 0x1, connect.as_bytes(), true))
        .await
        .unwrap();
    // The `connected` frame.
    let mut b = [0u8; 2];
    tls.read_exact(&mut b).await.unwrap();
    let mut body = vec![0u8; usize::from(b[1] & 0x7f)];
    tls.read_exact(&mut body).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("connected"));
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_ends_that_connection_with_an_alert_only() {
    let ca = ca();
    let (tls, d) = tls_files("garbage", &ca);
    let relay = Relay::start_with(|c| c.tls = Some(tls)).await;
    let cfg = client(
        &ca,
        &[&rustls::version::TLS13],
        Tls12Resumption::SessionIdOrTickets,
    );
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[
            23, 3, 3, 0, 24, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
        ][..],
        &[23, 3, 3, 0xff, 0xff][..],
    ] {
        let mut tls = raw_wss(&relay, &cfg).await;
        eventually("the session is counted", || async {
            relay.metric("sealcast_connections ") == 1.0
        })
        .await;
        tls.get_mut().0.write_all(junk).await.unwrap();
        // The relay answers with a fatal alert and closes.
        let end = tokio::time::timeout(WAIT, tls.read_to_end(&mut Vec::new()))
            .await
            .expect("the relay closed the connection");
        let err = end.unwrap_err();
        assert!(err.to_string().contains("alert"), "{junk:?}: {err}");
        eventually("the session ended", || async {
            relay.metric("sealcast_connections ") == 0.0
        })
        .await;
    }
    // The relay serves on.
    let url = format!("wss://localhost:{}/v1/ws", relay.addr.port());
    let (mut c, _) = Client::open_tls(&url, cfg)
        .await
        .unwrap()
        .authenticate(&connect_token(NS, "u", 600))
        .await
        .unwrap();
    assert_eq!(
        c.subscribe(&channel("after"), None).await.unwrap()["type"],
        "subscribed"
    );
    relay.stop().await;
    std::fs::remove_dir_all(&d).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_record_then_silence_is_ended_by_the_existing_timeouts() {
    let ca = ca();
    let (tls, d) = tls_files("stall", &ca);
    let relay = Relay::start_with(|c| {
        c.tls = Some(tls);
        c.http.header_read_timeout = Duration::from_millis(500);
        c.websocket.auth_timeout = Duration::from_millis(500);
    })
    .await;
    let cfg = client(
        &ca,
        &[&rustls::version::TLS13],
        Tls12Resumption::SessionIdOrTickets,
    );
    let record_start = [23u8, 3, 3, 0, 200, 1, 2, 3];
    // Before the request head: the header read timeout.
    let mut before = tls_connect(relay.addr, &cfg).await;
    before.get_mut().0.write_all(&record_start).await.unwrap();
    let end = tokio::time::timeout(WAIT, before.read_to_end(&mut Vec::new())).await;
    assert!(end.is_ok(), "closed by http.header_read_timeout");
    // After the upgrade, before `connect`: the auth timeout.
    let mut after = tls_connect(relay.addr, &cfg).await;
    after
        .write_all(upgrade_request(relay.addr).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(after.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    after.get_mut().0.write_all(&record_start).await.unwrap();
    let end = tokio::time::timeout(WAIT, after.read_to_end(&mut Vec::new())).await;
    assert!(end.is_ok(), "closed by websocket.auth_timeout");
    eventually("the session ended", || async {
        relay.metric("sealcast_connections ") == 0.0
    })
    .await;
    relay.stop().await;
    std::fs::remove_dir_all(&d).ok();
}
