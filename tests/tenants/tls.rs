//! TLS handshake places: silent sockets never make a real client wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::certs::{ca, client_config, leaf};
use crate::common::proc::{serve, temp_dir};
use crate::common::{metric_value, metric_with_label};

/// A relay on TLS with an admin listener for its metrics; `tls_extra` goes into `[tls]`.
fn tls_relay(
    name: &str,
    tls_extra: &str,
) -> (crate::common::proc::Proc, Arc<rustls::ClientConfig>) {
    let ca = ca();
    let (cert, key, _) = leaf(&ca, "relay");
    let dir = temp_dir(&format!("{name}-pki"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let extra = format!(
        "admin_listen = \"127.0.0.1:0\"\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{tls_extra}\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let (p, _) = serve(name, &extra);
    (p, client_config(&ca))
}

/// `GET /healthz` over a fresh TLS connection; returns the status line.
async fn healthz(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_never_delay_a_real_tls_client() {
    let (p, cfg) = tls_relay("tls-silent", "");
    // 2,000 sockets from one address that never send a ClientHello: four times the 512
    // handshake places the relay used to have, each held for the whole handshake timeout.
    let mut silent = Vec::with_capacity(2000);
    for _ in 0..2000 {
        silent.push(TcpStream::connect(p.addr).await.unwrap());
    }
    // The relay has taken them all in (they hold handshake places, none is refused).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = p.metrics().await;
        if metric_value(&m, "sealcast_tls_handshakes ") >= 1990.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "silent sockets not accepted:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(10), healthz(p.addr, cfg))
        .await
        .expect("the TLS client was served")
        .expect("TLS request");
    let took = started.elapsed();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        took < Duration::from_secs(2),
        "a real client waited {took:?} behind silent sockets"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_without_client_hello_is_dropped_and_past_the_cap_refused() {
    let (p, cfg) = tls_relay(
        "tls-hello",
        "client_hello_timeout = \"1s\"\nhandshake_timeout = \"5s\"\nmax_handshakes = 20",
    );
    let mut silent = TcpStream::connect(p.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(4), silent.read(&mut buf))
        .await
        .expect("the relay dropped the silent socket");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Past `max_handshakes`, a new socket is closed at once and counted; once places are
    // free again a real client is served.
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(TcpStream::connect(p.addr).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = p.metrics().await;
        let refused = metric_with_label(&m, "sealcast_limit_hits_total", "tls_handshakes");
        if refused >= 10.0 {
            assert!(metric_value(&m, "sealcast_tls_handshakes ") <= 20.0, "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "no refusal counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            // Places come back as the relay notices the closed sockets.
            if let Ok(s) = healthz(p.addr, Arc::clone(&cfg)).await {
                if s.starts_with("HTTP/1.1 200") {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("served once places are free");
    assert!(status.starts_with("HTTP/1.1 200"));
}
