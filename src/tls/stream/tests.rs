//! The stream against rustls clients over loopback: both versions, records larger than
//! the reader's buffer, key updates both ways, close_notify, garbage, stalled handshakes,
//! resumption; and what an idle stream holds.

use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream as ClientStream;

use super::*;
use crate::config::TlsConfig;
use crate::telemetry::Metrics;
use crate::tls::{HandshakeError, Resumption, accept, build_config};

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

/// What an idle connection must not hold: no buffer, no expanded key.
fn assert_no_buffer(s: &TlsStream) {
    assert_eq!(s.out.capacity(), 0, "{s:?}");
    assert!(!s.deferred);
    assert_nothing_read_or_keyed(s);
}

/// The same before the relay's first write: a TLS 1.3 stream still holds its handshake's
/// tickets (sealed: no key is kept for them; `pki()` has tickets on), a TLS 1.2 stream
/// nothing.
fn assert_no_buffer_but_tickets(s: &TlsStream) {
    if s.protocol_version() == ProtocolVersion::TLSv1_3 {
        assert!(s.deferred && s.out_pos == 0 && !s.out.is_empty(), "{s:?}");
        // A few NewSessionTicket records of a header and a short body each.
        assert!(s.out.len() < 256 * crate::tls::TLS13_TICKETS, "{s:?}");
    } else {
        assert_eq!(s.out.capacity(), 0, "{s:?}");
    }
    assert_nothing_read_or_keyed(s);
}

fn assert_nothing_read_or_keyed(s: &TlsStream) {
    assert_eq!(s.held_in.capacity(), 0, "{s:?}");
    assert_eq!(s.plain.capacity(), 0, "{s:?}");
    assert!(s.traffic.seal_key.is_none() && s.traffic.open_key.is_none());
}

#[tokio::test]
async fn both_versions_round_trip_and_an_idle_stream_keeps_no_buffer() {
    let pki = pki();
    for (version, expect) in [
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
    ] {
        let (mut server, mut client) = pair(&pki, client_config(&pki, &[version])).await;
        assert_eq!(server.protocol_version(), expect);
        assert_eq!(server.handshake_kind(), HandshakeKind::Full);
        assert_no_buffer_but_tickets(&server);
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
    assert_eq!(server.held_in.capacity(), 0, "opened where it landed");
    assert_eq!(server.plain.len() - server.plain_pos, record.len() - 1000);
    let mut rest = vec![0u8; record.len() - 1000];
    server.read_exact(&mut rest).await.unwrap();
    assert!(rest.iter().all(|b| *b == 7));
    // Reading does not send the tickets: they wait for the relay's first write.
    assert_no_buffer_but_tickets(&server);
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
    assert_no_buffer_but_tickets(&server);
    server.write_all(b"now").await.unwrap();
    let mut now = [0u8; 3];
    client.read_exact(&mut now).await.unwrap();
    assert_eq!(&now, b"now");
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
            23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
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
    // The tickets go out with the relay's first write; the client takes them while
    // reading.
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
    assert_eq!(server.handshake_kind(), HandshakeKind::Resumed);
    assert_no_buffer_but_tickets(&server);
}

/// One request and one answer of `n` bytes each way.
async fn exchange(server: &mut TlsStream, client: &mut ClientStream<TcpStream>, n: usize) {
    let data: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
    client.write_all(&data).await.unwrap();
    client.flush().await.unwrap();
    let mut got = vec![0u8; n];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, data);
    server.write_all(&data).await.unwrap();
    server.flush().await.unwrap();
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(got, data);
}

#[tokio::test]
async fn every_offered_suite_carries_data_both_ways() {
    use rustls::crypto::ring::cipher_suite as cs;
    let pki = pki();
    // The test certificate is ECDSA, so the TLS 1.2 suites are the ECDSA ones.
    for suite in [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ] {
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![suite];
        let versions: &[&'static SupportedProtocolVersion] = match suite {
            rustls::SupportedCipherSuite::Tls13(_) => &[&rustls::version::TLS13],
            rustls::SupportedCipherSuite::Tls12(_) => &[&rustls::version::TLS12],
        };
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(pki.roots.clone())
            .with_no_client_auth();
        let (mut server, mut client) = pair(&pki, config).await;
        assert_eq!(client.get_ref().1.negotiated_cipher_suite(), Some(suite));
        for n in [1, 5000, 40_000] {
            exchange(&mut server, &mut client, n).await;
        }
        assert_no_buffer(&server);
    }
}

#[tokio::test]
async fn our_key_is_renewed_at_its_limit_in_tls13_and_tls12_closes_instead() {
    let pki = pki();
    let (mut server, mut client) =
        pair(&pki, client_config(&pki, &[&rustls::version::TLS13])).await;
    exchange(&mut server, &mut client, 100).await;
    // The key has sealed its limit (lowered to what it has sealed).
    server.traffic.limit = server.traffic.tx.seq;
    exchange(&mut server, &mut client, 100).await;
    assert_eq!(
        server.traffic.tx.seq, 1,
        "a KeyUpdate, then one record under the new key"
    );
    // Renewed again before each record from now on: the client follows every one.
    server.traffic.limit = 1;
    exchange(&mut server, &mut client, 40_000).await;
    assert_no_buffer(&server);

    let (mut server, mut client) =
        pair(&pki, client_config(&pki, &[&rustls::version::TLS12])).await;
    server.traffic.limit = server.traffic.tx.seq;
    assert!(server.write_all(b"x").await.is_err());
    server.shutdown().await.unwrap();
    let end = tokio::time::timeout(WAIT, client.read_to_end(&mut Vec::new())).await;
    assert!(
        end.expect("closed")
            .unwrap_err()
            .to_string()
            .contains("alert")
    );
}

#[tokio::test]
async fn key_updates_without_data_in_between_are_bounded() {
    let pki = pki();
    let (mut server, mut client) =
        pair(&pki, client_config(&pki, &[&rustls::version::TLS13])).await;
    let flood = tokio::spawn(async move {
        for _ in 0..=MAX_KEY_UPDATES {
            if client.get_mut().1.refresh_traffic_keys().is_err() {
                break;
            }
            // Writing nothing still sends what the connection has queued.
            if client.flush().await.is_err() {
                break;
            }
        }
        client
    });
    let mut buf = [0u8; 16];
    let err = tokio::time::timeout(WAIT, server.read(&mut buf))
        .await
        .expect("the flood ends the connection")
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    drop(flood.await.unwrap());
}

/// The stream lives inside every WSS session's task: what it holds there is the socket,
/// rustls' post-handshake state (560 bytes in rustls 0.23), the raw keys and a few
/// counters; everything else is on the heap only while in use (`assert_no_buffer`).
#[test]
fn the_stream_itself_stays_small() {
    let size = std::mem::size_of::<TlsStream>();
    assert!(size <= 1024, "TlsStream is {size} bytes");
}
