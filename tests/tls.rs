//! Native TLS (hardening): a test CA and leaf made here with rcgen; `wss://` and `https://`
//! end to end; TLS 1.1 and a non-AEAD TLS 1.2 suite refused (checked with `openssl
//! s_client`); the certificate reloads when its files change, and a bad new pair keeps
//! the old one serving.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::certs::{ca, client_config, leaf};
use common::*;
use rustls::pki_types::CertificateDer;
use sealcast::config::TlsConfig;
use sealcast_client::wire::Client;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sealcast-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_pair(dir: &Path, cert: &str, key: &str) -> TlsConfig {
    // Write to temporary names and rename, as a certificate manager does, so that a reload
    // never reads half a file.
    for (name, text) in [("cert.pem", cert), ("key.pem", key)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    TlsConfig {
        reload_interval: Duration::from_millis(100),
        ..TlsConfig::from_files(dir.join("cert.pem"), dir.join("key.pem"))
    }
}

/// The leaf certificate the relay presents to a fresh TLS connection.
async fn served_leaf(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> CertificateDer<'static> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn wss_and_https_work_end_to_end() {
    let ca = ca();
    let d = dir("e2e");
    let (cert, key, _) = leaf(&ca, "relay-1");
    let tls = write_pair(&d, &cert, &key);
    let relay = Relay::start_with(|c| c.tls = Some(tls)).await;
    let cfg = client_config(&ca);
    let url = format!("wss://localhost:{}/v1/ws", relay.addr.port());
    let (mut c, connected) = Client::open_tls(&url, Arc::clone(&cfg))
        .await
        .unwrap()
        .authenticate(&connect_token(NS, "u", 600))
        .await
        .unwrap();
    assert_eq!(connected["ns"], NS);
    let ch = channel("g");
    c.subscribe(&ch, None).await.unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let data = sealed(&ch, "Ev", "over tls");
    let r = http
        .post(format!(
            "https://localhost:{}/v1/publish",
            relay.addr.port()
        ))
        .bearer_auth(publish_token(None))
        .json(&serde_json::json!({"channel":ch,"event":"Ev","data":data}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.frame(WAIT).await.unwrap()["data"], data);
    // Plain HTTP on the TLS port gets no answer of ours.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/healthz", relay.addr.port())).await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    relay.stop().await;
    std::fs::remove_dir_all(&d).ok();
}

fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .args([
            "10",
            "openssl",
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let negotiated = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (negotiated, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_protocols_and_non_aead_suites_are_refused() {
    let ca = ca();
    let d = dir("suites");
    let (cert, key, _) = leaf(&ca, "relay-1");
    let tls = write_pair(&d, &cert, &key);
    let relay = Relay::start_with(|c| c.tls = Some(tls)).await;
    let port = relay.addr.port();
    let result = tokio::task::spawn_blocking(move || {
        // Positive controls: TLS 1.3, and TLS 1.2 with ECDHE + AES-GCM and ChaCha20-Poly1305.
        let (ok13, t13) = s_client(port, &["-tls1_3"]);
        let (ok12, t12) = s_client(
            port,
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
        );
        let (okcc, tcc) = s_client(
            port,
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
        );
        // Refused: TLS 1.1 and 1.0 (the client's own floor lowered so the refusal is the
        // relay's), and TLS 1.2 suites without AEAD (CBC) or without ECDHE.
        let (ok11, _) = s_client(port, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
        let (ok10, _) = s_client(port, &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
        let (okcbc, _) = s_client(
            port,
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:@SECLEVEL=0",
            ],
        );
        let (okrsa, _) = s_client(
            port,
            &[
                "-tls1_2",
                "-cipher",
                "AES128-GCM-SHA256:AES256-SHA256:@SECLEVEL=0",
            ],
        );
        (ok13, t13, ok12, t12, okcc, tcc, ok11, ok10, okcbc, okrsa)
    })
    .await
    .unwrap();
    let (ok13, t13, ok12, t12, okcc, tcc, ok11, ok10, okcbc, okrsa) = result;
    assert!(ok13 && t13.contains("TLSv1.3"), "TLS 1.3 works: {t13}");
    assert!(
        ok12 && t12.contains("ECDHE-ECDSA-AES128-GCM-SHA256"),
        "TLS 1.2 AEAD works: {t12}"
    );
    assert!(okcc, "TLS 1.2 ChaCha20-Poly1305 works: {tcc}");
    assert!(!ok11, "TLS 1.1 refused");
    assert!(!ok10, "TLS 1.0 refused");
    assert!(!okcbc, "CBC suites refused");
    assert!(!okrsa, "static-RSA key exchange refused");
    relay.stop().await;
    std::fs::remove_dir_all(&d).ok();
}

#[tokio::test]
async fn certificate_reloads_on_change_and_a_bad_pair_keeps_the_old_one() {
    let ca = ca();
    let d = dir("reload");
    let (cert1, key1, der1) = leaf(&ca, "relay-first");
    let tls = write_pair(&d, &cert1, &key1);
    let relay = Relay::start_with(|c| c.tls = Some(tls)).await;
    let cfg = client_config(&ca);
    assert_eq!(served_leaf(relay.addr, Arc::clone(&cfg)).await, der1);
    // A session opened on the first certificate survives the reload.
    let url = format!("wss://localhost:{}/v1/ws", relay.addr.port());
    let (mut old, _) = Client::open_tls(&url, Arc::clone(&cfg))
        .await
        .unwrap()
        .authenticate(&connect_token(NS, "u", 600))
        .await
        .unwrap();
    let (cert2, key2, der2) = leaf(&ca, "relay-second");
    write_pair(&d, &cert2, &key2);
    let deadline = tokio::time::Instant::now() + WAIT;
    while served_leaf(relay.addr, Arc::clone(&cfg)).await != der2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A key that does not match the certificate: refused, the second pair keeps serving.
    let (cert3, _, _) = leaf(&ca, "relay-third");
    let (_, wrong_key, _) = leaf(&ca, "other");
    write_pair(&d, &cert3, &wrong_key);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served_leaf(relay.addr, Arc::clone(&cfg)).await, der2);
    // Garbage files: same.
    write_pair(&d, "not a certificate", "not a key");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served_leaf(relay.addr, Arc::clone(&cfg)).await, der2);
    assert_eq!(
        old.subscribe(&channel("still-here"), None).await.unwrap()["type"],
        "subscribed"
    );
    relay.stop().await;
    std::fs::remove_dir_all(&d).ok();
}

#[tokio::test]
async fn a_bad_pair_at_start_refuses_to_start() {
    let d = dir("bad-start");
    let tls = write_pair(&d, "nope", "nope");
    let mut config = test_config();
    config.tls = Some(tls);
    let err = sealcast::Server::bind(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls.cert_file"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}
