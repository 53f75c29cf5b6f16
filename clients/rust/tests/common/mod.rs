//! The real relay binary for the SDK's integration tests, and a TCP proxy in front of it
//! that a test can cut. Everything listens on 127.0.0.1; every wait is bounded.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealcast_client::subscriber::{ConnectionState, Event, Subscription};
use sealcast_client::{PayloadKey, Signer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const SECRET: &str = "sdk-integration-secret-0123456789abcdef";
pub const NS: &str = "ari:cloud:jira::site/7f3c0d2e/dashboard/10001";
pub const WAIT: Duration = Duration::from_secs(10);

pub fn channel(topic: &str) -> String {
    format!("{NS}#{topic}")
}

pub fn signer() -> Signer {
    Signer::new("acme", Some("k1"), SECRET).unwrap()
}

pub fn payload_key() -> PayloadKey {
    PayloadKey::from_bytes(&[42; 32]).unwrap()
}

/// The relay binary: `SEALCAST_BIN`, or the workspace's debug build.
pub fn relay_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SEALCAST_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    let bin = target.join("debug").join("sealcast");
    assert!(
        bin.exists(),
        "no relay binary at {}: build it with `cargo build --bin sealcast` (or set SEALCAST_BIN)",
        bin.display()
    );
    bin
}

/// A running relay, killed on drop.
pub struct Relay {
    child: Child,
    pub addr: SocketAddr,
    pub stderr: Arc<Mutex<String>>,
    dir: PathBuf,
}

impl Relay {
    /// Starts the binary on `listen` (`127.0.0.1:0` for a free port) with app `acme`
    /// (key `k1`) and the extra config `extra` (tables).
    pub fn start(listen: &str, extra: &str) -> Relay {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sealcast-sdk-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("sealcast.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\n{extra}\n[shutdown]\ndrain = \"100ms\"\n\
                 [[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"SDK_ACME_K1\"\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(relay_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .env("SDK_ACME_K1", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the relay");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap();
                if s.len() < 1 << 20 {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "the relay did not start; stderr: {}",
                    stderr.lock().unwrap()
                )
            });
            let rest = line
                .strip_prefix("sealcast listening on http://")
                .or_else(|| line.strip_prefix("sealcast listening on https://"));
            if let Some(rest) = rest {
                break rest.parse().expect("listening address");
            }
        };
        Relay {
            child,
            addr,
            stderr,
            dir,
        }
    }

    /// A directory of this relay's, for files its config names.
    pub fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sealcast-sdk-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Kills the process (no drain: the sockets just end).
    pub fn kill(mut self) -> SocketAddr {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.addr
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy to `upstream` on 127.0.0.1: [`Proxy::cut`] drops every connection through
/// it, and while it is down new connections are accepted and dropped at once.
pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (d, c) = (Arc::clone(&down), Arc::clone(&conns));
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection end
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Proxy {
            addr,
            down,
            conns,
            accept,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Drops every connection and refuses new ones until [`Proxy::up`].
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// The next event, within [`WAIT`].
pub async fn next(sub: &mut Subscription) -> Event {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("an event in time")
        .expect("the subscription is live")
}

/// Waits (bounded) for a state that satisfies `f`; returns it.
pub async fn state_where(
    rx: &mut tokio::sync::watch::Receiver<ConnectionState>,
    f: impl Fn(&ConnectionState) -> bool,
) -> ConnectionState {
    tokio::time::timeout(WAIT, rx.wait_for(|s| f(s)))
        .await
        .expect("the state in time")
        .expect("the subscriber is alive")
        .clone()
}

/// A CA and a leaf for 127.0.0.1 and localhost signed by it, made with rcgen:
/// (CA PEM, leaf cert PEM, leaf key PEM, a rustls client config trusting the CA).
pub fn test_pki() -> (String, String, String, Arc<rustls::ClientConfig>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "sealcast SDK test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "relay");
    let cert = leaf
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (
        ca_cert.pem(),
        cert.pem(),
        key.serialize_pem(),
        Arc::new(config),
    )
}
