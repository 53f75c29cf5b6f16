//! `admin_listen`: the operations endpoints on a listener of their own, over the real
//! binary. `/metrics` leaves the public listener, the admin listener serves nothing but
//! operations, and it outlives the drain so `/readyz` reports it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::proc::{spawn, temp_dir};
use common::*;
use sealcast_client::wire::Client;

const SECRET: &str = "acme-key-one-0123456789abcdefghijklmnop";

async fn status(url: String) -> Option<u16> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_to_the_admin_listener_which_reports_the_drain() {
    let dir = temp_dir("admin");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sealcast.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [shutdown]\ndrain = \"3s\"\ngrace = \"10s\"\n\
         [[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n",
    )
    .unwrap();
    let mut p = spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[("ACME_KEY_1", SECRET)],
    );
    let admin = p
        .stdout_lines
        .iter()
        .find_map(|l| l.strip_prefix("sealcast admin listening on "))
        .unwrap_or_else(|| panic!("no admin line in {:?}", p.stdout_lines))
        .to_string();
    let public = format!("http://{}", p.addr);
    assert_ne!(admin, public);

    // Sessions, so that the metrics have something to show and the drain takes a while:
    // each closes at a random moment of the 3 s window.
    let ws = format!("ws://{}/v1/ws", p.addr);
    let mut sessions = Vec::new();
    for i in 0..20 {
        let (c, _) = Client::connect(&ws, &connect_token(NS, &format!("u{i}"), 600))
            .await
            .unwrap();
        sessions.push(c);
    }
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric_value(&metrics, "sealcast_connections"), 20.0);
    // Operations are on both listeners except /metrics, which is private now.
    assert_eq!(status(format!("{public}/metrics")).await, Some(404));
    for path in ["/healthz", "/readyz"] {
        assert_eq!(status(format!("{public}{path}")).await, Some(200), "{path}");
        assert_eq!(status(format!("{admin}{path}")).await, Some(200), "{path}");
    }
    // The admin listener serves nothing else.
    assert_eq!(status(format!("{admin}/v1/ws")).await, Some(404));
    let publish = reqwest::Client::new()
        .post(format!("{admin}/v1/publish"))
        .bearer_auth(publish_token(None))
        .json(&serde_json::json!({"channel": channel("g"), "event": "E", "data": sealed(&channel("g"), "E", "{}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(publish.status(), 404);

    // SIGTERM: while sessions drain, the admin listener says "not ready".
    let kill = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match status(format!("{admin}/readyz")).await {
            Some(503) => break,
            Some(200) => {}
            other => panic!("admin /readyz during the drain: {other:?}"),
        }
        assert!(Instant::now() < deadline, "/readyz never said 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for mut c in sessions {
        assert_eq!(c.closed(WAIT).await.unwrap(), Some(1001));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 10 item 7: `/metrics` tells refusal reasons apart (unknown app, unknown kid, bad
/// signature), so on a public port anyone could enumerate app ids and kids. Outside
/// `serve --dev` it is served on the public listener only when `[http] public_metrics` asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_metrics_is_opt_in() {
    let dir = temp_dir("public-metrics");
    std::fs::create_dir_all(&dir).unwrap();
    let apps =
        "[[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n";
    let start = |name: &str, extra: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("listen = \"127.0.0.1:0\"\n{extra}{apps}")).unwrap();
        spawn(
            &["serve", "--config", path.to_str().unwrap()],
            &[("ACME_KEY_1", SECRET)],
        )
    };
    // The default config, no admin listener: nothing to scrape on the public port.
    let default = start("default.toml", "");
    let public = format!("http://{}", default.addr);
    assert_eq!(status(format!("{public}/metrics")).await, Some(404));
    assert_eq!(status(format!("{public}/readyz")).await, Some(200));
    drop(default);

    // Opted in: served, with the refusal reasons it exposes.
    let opted = start("opted.toml", "[http]\npublic_metrics = true\n");
    let public = format!("http://{}", opted.addr);
    let r = reqwest::get(format!("{public}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("sealcast_token_rejections_total{reason=\"unknown_app\"}"),
        "{text}"
    );
    drop(opted);

    // Dev mode keeps it on the public port, which is the only one it has.
    let dev = spawn(&["serve", "--dev"], &[("SEALCAST_LISTEN", "127.0.0.1:0")]);
    assert_eq!(
        status(format!("http://{}/metrics", dev.addr)).await,
        Some(200)
    );
    drop(dev);
    std::fs::remove_dir_all(&dir).ok();
}

/// `sealcast health`, the image's HEALTHCHECK: exit 0 when the probe answers 2xx, 1 with
/// a message otherwise (an error status, or nothing listening).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_subcommand_probes_the_admin_listener() {
    let (p, path) = common::proc::serve("health", "admin_listen = \"127.0.0.1:0\"\n");
    let admin = format!("http://{}", p.admin_addr());
    let health = |url: String| common::proc::run(&["health", "--url", &url], &[]);
    let ok = health(format!("{admin}/readyz"));
    assert!(ok.status.success(), "{ok:?}");
    let not_found = health(format!("http://{}/metrics", p.addr));
    assert_eq!(not_found.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_found.stderr).contains("404"));
    drop(p);
    let gone = health(format!("{admin}/readyz"));
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no answer"));
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}
