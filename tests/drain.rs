//! A kubelet's view of a pod stopping, over the real binary with no admin listener:
//! SIGTERM, then readiness 503 at once on the public port, which keeps accepting and
//! answers a new WebSocket upgrade with 503 and `Retry-After`; the existing sessions are
//! closed with 1001 spread over the drain window; the process exits 0 within the grace.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::proc::{spawn, temp_dir};
use common::raw::upgrade_request;
use common::*;
use sealcast_client::wire::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "acme-key-one-0123456789abcdefghijklmnop";
const DRAIN: Duration = Duration::from_secs(3);
const GRACE: Duration = Duration::from_secs(10);

async fn status(url: String) -> Option<u16> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    Some(r.status().as_u16())
}

/// A WebSocket upgrade on a fresh TCP connection; the answer's head, or None when the
/// connection is refused.
async fn upgrade_head(addr: std::net::SocketAddr) -> Option<String> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.write_all(upgrade_request(addr).as_bytes()).await.ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(2), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(String::from_utf8_lossy(&head).to_ascii_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_unready_keeps_answering_drains_with_1001_and_exits_0() {
    let dir = temp_dir("drain");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sealcast.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\n[shutdown]\ndrain = \"{}s\"\ngrace = \"{}s\"\n\
             [[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n",
            DRAIN.as_secs(),
            GRACE.as_secs()
        ),
    )
    .unwrap();
    let mut p = spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[("ACME_KEY_1", SECRET)],
    );
    let public = format!("http://{}", p.addr);
    // The listening line comes as the server starts; readiness follows a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(format!("{public}/readyz")).await != Some(200) {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ws = format!("ws://{}/v1/ws", p.addr);
    let mut sessions = Vec::new();
    for i in 0..12 {
        let (c, _) = Client::connect(&ws, &connect_token(NS, &format!("u{i}"), 600))
            .await
            .unwrap();
        sessions.push(c);
    }

    let kill = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let term = Instant::now();

    // Readiness fails at once (a kubelet probes every few seconds; the first probe after
    // the signal must fail).
    let deadline = term + Duration::from_millis(500);
    loop {
        match status(format!("{public}/readyz")).await {
            Some(503) => break,
            Some(200) => {}
            other => panic!("/readyz right after SIGTERM: {other:?}"),
        }
        assert!(Instant::now() < deadline, "/readyz still 200 after 500 ms");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The public listener still accepts; a new upgrade is told to come back later.
    let head = upgrade_head(p.addr)
        .await
        .expect("upgrade refused at TCP level");
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("\r\nretry-after: "), "{head}");

    // Every session closes with 1001, at moments spread over the window.
    let mut closed_at = Vec::new();
    for c in &mut sessions {
        assert_eq!(c.closed(GRACE).await.unwrap(), Some(1001));
        closed_at.push(term.elapsed());
    }
    let last = *closed_at.iter().max().unwrap();
    assert!(
        last <= DRAIN + Duration::from_secs(1),
        "last close at {last:?}"
    );
    // 12 uniform moments: the last lands in the window's second half but with a
    // probability of 1 - 0.5^12.
    assert!(last >= DRAIN / 4, "all closed within {last:?}: not spread");

    // Until the process exits, the public port answers readiness with 503 (never 200),
    // and it exits 0 within the grace period.
    let exit = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        match status(format!("{public}/readyz")).await {
            Some(503) => {}
            // Refused: the listener closed as the process ends.
            None => {}
            other => panic!("/readyz during the drain: {other:?}"),
        }
        assert!(
            term.elapsed() < GRACE,
            "did not exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    // The listener stayed up through the whole drain window.
    assert!(term.elapsed() >= DRAIN, "exited after {:?}", term.elapsed());
    std::fs::remove_dir_all(&dir).ok();
}
