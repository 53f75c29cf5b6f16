//! The harness shared by the hostile rounds: the relay binary and its metrics, raw HTTP
//! over fresh connections, the long-lived watchers, the tally of inputs sent and the
//! acknowledged publications, a normal client, and the wait for every connection to drain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sealcast::payload;
use sealcast_client::wire::{Client, Incoming};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::common::proc::{Proc, spawn};
use crate::common::raw::{RawWs, ws_frame};
use crate::common::*;

pub(crate) const OTHER_SECRET: &[u8] = OTHER_K1;

// ---------------------------------------------------------------------------------------
// The binary

pub(crate) fn spawn_relay(extra: &str) -> Proc {
    // One directory per relay: the tests of this crate run in parallel.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sealcast-hostile-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sealcast.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\n{extra}\n\
             [websocket]\nauth_timeout = \"1s\"\nidle_timeout = \"4s\"\nping_interval = \"2s\"\n\
             [http]\nmax_body_bytes = 65536\nheader_read_timeout = \"1s\"\npublic_metrics = true\n\
             [shutdown]\ndrain = \"200ms\"\n\
             [[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n\
             [[apps]]\nid = \"other\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"OTHER_KEY_1\"\n"
        ),
    )
    .unwrap();
    spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[
            ("ACME_KEY_1", std::str::from_utf8(ACME_K1).unwrap()),
            ("OTHER_KEY_1", std::str::from_utf8(OTHER_SECRET).unwrap()),
            ("RUST_LOG", "warn"),
        ],
    )
}

pub(crate) async fn metrics(addr: SocketAddr) -> String {
    let r = raw_http(
        addr,
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    String::from_utf8_lossy(&r).into_owned()
}

pub(crate) async fn gauge(addr: SocketAddr, name: &str) -> f64 {
    metric_value(&metrics(addr).await, name)
}

// ---------------------------------------------------------------------------------------
// Raw sockets

/// Writes `bytes`, then reads until the peer closes or `wait` passes; returns what came.
pub(crate) async fn raw_http(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return out;
    };
    let _ = tcp.write_all(bytes).await;
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// The status codes of every response in `bytes`.
pub(crate) fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

impl RawWs {
    /// Opens and authenticates as acme in NS.
    pub(crate) async fn authed(addr: SocketAddr) -> RawWs {
        let mut w = RawWs::open(addr).await;
        let connect = json!({"type":"connect","token":connect_token(NS, "raw", 600)}).to_string();
        w.send(&ws_frame(true, 0x1, connect.as_bytes(), true)).await;
        let (op, payload) = w.read_frame().await.expect("connected");
        assert_eq!(op, 0x1);
        assert!(String::from_utf8_lossy(&payload).contains("\"connected\""));
        w
    }
}

// ---------------------------------------------------------------------------------------
// Long-lived subscribers

pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(Vec<Value>, Option<Incoming>)>,
}

/// Subscribes `token`'s session to `channel` and collects every frame until stopped,
/// sending a WebSocket ping whenever it has been quiet for 500 ms (as a browser answers
/// the relay's pings) so that the idle timeout never ends it.
pub(crate) async fn watcher(addr: SocketAddr, token: &str, channel: &str) -> Watcher {
    let (mut c, _) = Client::connect(&format!("ws://{addr}/v1/ws"), token)
        .await
        .expect("watcher connects");
    let s = c.subscribe(channel, None).await.unwrap();
    assert_eq!(s["type"], "subscribed", "{s}");
    assert_eq!(s["offset"], 0, "{s}");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let mut frames = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        while !flag.load(Ordering::Acquire) && Instant::now() < deadline {
            match c.next(Duration::from_millis(500)).await {
                Ok(Incoming::Frame(f)) => frames.push(f),
                Ok(closed @ Incoming::Closed(_)) => return (frames, Some(closed)),
                Err(_) => {
                    if c.send_raw(Message::Ping(Default::default())).await.is_err() {
                        return (frames, Some(Incoming::Closed(None)));
                    }
                }
            }
        }
        // Drain what is already in flight.
        while let Ok(Incoming::Frame(f)) = c.next(Duration::from_millis(300)).await {
            frames.push(f);
        }
        c.close().await;
        (frames, None)
    });
    Watcher { stop, task }
}

impl Watcher {
    pub(crate) async fn finish(self) -> Vec<Value> {
        self.stop.store(true, Ordering::Release);
        let (frames, closed) = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("watcher stops")
            .unwrap();
        assert!(closed.is_none(), "a watcher was disconnected: {closed:?}");
        frames
    }
}

// ---------------------------------------------------------------------------------------
// What a round sent and what the API acknowledged

/// Counts of inputs sent and of the answers seen, per kind.
#[derive(Default, Debug)]
pub(crate) struct Tally {
    pub(crate) inputs: usize,
    pub(crate) answers: BTreeMap<String, usize>,
}

impl Tally {
    pub(crate) fn note(&mut self, kind: &str, answer: impl std::fmt::Display) {
        self.inputs += 1;
        *self.answers.entry(format!("{kind}:{answer}")).or_default() += 1;
    }
}

pub(crate) struct Ctx {
    pub(crate) addr: SocketAddr,
    /// Acknowledged publications on the main channel: (offset, plaintext).
    pub(crate) acked: Vec<(u64, String)>,
    pub(crate) next_msg: usize,
    pub(crate) tally: Tally,
}

pub(crate) fn main_channel() -> String {
    channel("main")
}

pub(crate) fn quiet_channel() -> String {
    channel("quiet")
}

impl Ctx {
    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Publishes one good publication to the main channel and records it.
    pub(crate) async fn publish_main(&mut self) {
        self.next_msg += 1;
        let text = format!("m-{}", self.next_msg);
        let ch = main_channel();
        let body = json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", &text)}).to_string();
        let r = post(self.addr, "/v1/publish", &publish_token(None), &body).await;
        assert_eq!(r.0, 200, "{}", r.1);
        let v: Value = serde_json::from_str(&r.1).unwrap();
        self.acked.push((v["offset"].as_u64().unwrap(), text));
    }
}

/// A POST over a fresh connection; `(status, body)`.
pub(crate) async fn post(addr: SocketAddr, path: &str, token: &str, body: &str) -> (u16, String) {
    post_raw(
        addr,
        path,
        &format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
        body.as_bytes(),
    )
    .await
}

pub(crate) async fn post_raw(
    addr: SocketAddr,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let out = raw_http(addr, &req, Duration::from_secs(10)).await;
    let status = statuses(&out).first().copied().unwrap_or(0);
    let text = String::from_utf8_lossy(&out);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A normal client connects, subscribes to a fresh channel and receives one publication.
/// Retries the connect (bounded) in case a connection limit is refilling after the flood.
pub(crate) async fn normal_client(ctx: &Ctx, topic: &str) {
    let url = ctx.ws_url();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut c = loop {
        match Client::connect(&url, &connect_token(NS, "normal", 600)).await {
            Ok((c, _)) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("normal client retries: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the relay no longer serves a normal client: {e}"),
        }
    };
    let ch = format!("{}-{}", channel(topic), rand_suffix());
    let s = c.subscribe(&ch, None).await.unwrap();
    assert_eq!(s["type"], "subscribed", "{s}");
    let body = json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", "hello")}).to_string();
    let r = post(ctx.addr, "/v1/publish", &publish_token(None), &body).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let f = c.frame(WAIT).await.unwrap();
    assert_eq!(f["type"], "pub", "{f}");
    let plain = payload::decrypt(&PAYLOAD_KEY, &ch, "Ev", f["data"].as_str().unwrap()).unwrap();
    assert_eq!(plain, b"hello");
    c.close().await;
}

fn rand_suffix() -> String {
    format!("{:x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// Waits (bounded) until only the watchers' sessions remain and the process's descriptors
/// are back near `fds`; returns the final `(sessions, fds)`.
pub(crate) async fn drained(p: &Proc, sessions: f64, fds: usize) -> (f64, usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = gauge(p.addr, "sealcast_connections ").await;
        // The metrics request itself holds one descriptor while it is served.
        let f = p.open_fds();
        if (s == sessions && f <= fds + 1) || Instant::now() > deadline {
            return (s, f);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
