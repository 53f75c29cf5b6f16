//! The app key rotation runbook of docs/operations.md, step by step over the real binary:
//! keys as files, SIGHUP after each change, no restart. And the mistake the runbook warns
//! about: a key added with `secret_env` cannot be loaded by SIGHUP, and the refusal says why.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::proc::{spawn, temp_dir};
use common::*;
use sealcast::auth::{MintClaims, unix_now};
use sealcast_client::wire::Client;

const K1: &str = "acme-key-one-0123456789abcdefghijklmnop";
const K2: &str = "acme-key-two-0123456789abcdefghijklmnop";

fn key(kid: &str, file: &std::path::Path) -> String {
    format!(
        "[[apps.keys]]\nkid = \"{kid}\"\nsecret_file = {:?}\n",
        file.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_key_rotation_with_secret_files_and_sighup() {
    let dir = temp_dir("runbook-rotation");
    std::fs::create_dir_all(&dir).unwrap();
    let (f1, f2) = (dir.join("acme-k1"), dir.join("acme-k2"));
    std::fs::write(&f1, K1).unwrap();
    let path = dir.join("sealcast.toml");
    let config = |keys: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\n[shutdown]\ndrain = \"200ms\"\n[[apps]]\nid = \"acme\"\n{keys}"
        )
    };
    std::fs::write(&path, config(&key("k1", &f1))).unwrap();
    let p = spawn(&["serve", "--config", path.to_str().unwrap()], &[]);
    let ws = format!("ws://{}/v1/ws", p.addr);
    let token = |kid: &str, secret: &str| {
        MintClaims::connect("acme", NS, "u", unix_now(), 600).sign(Some(kid), secret.as_bytes())
    };
    let hup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &p.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    // Waits until the log has `needle` `n` times (reloads are asynchronous to the signal).
    let logged = |needle: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if p.stderr.lock().unwrap().matches(needle).count() >= n {
                return;
            }
            assert!(Instant::now() < deadline, "no {needle:?} #{n} in the log");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (mut old_session, _) = Client::connect(&ws, &token("k1", K1)).await.unwrap();

    // 1. Add the new kid next to the old one: write its file, list it, SIGHUP.
    std::fs::write(&f2, K2).unwrap();
    std::fs::write(&path, config(&(key("k1", &f1) + &key("k2", &f2)))).unwrap();
    hup();
    logged("config_reloaded", 1);
    // 2. Switch minting to k2: new tokens verify, sessions of k1 tokens carry on.
    let (mut new_session, _) = Client::connect(&ws, &token("k2", K2)).await.unwrap();
    assert_eq!(
        old_session.subscribe(&channel("a"), None).await.unwrap()["type"],
        "subscribed"
    );

    // The runbook's warning: a key given by an environment variable the process was not
    // started with cannot be loaded by SIGHUP; the refusal says what to do instead.
    let k3 = "[[apps.keys]]\nkid = \"k3\"\nsecret_env = \"ACME_KEY_3_NEVER_SET\"\n";
    std::fs::write(&path, config(&(key("k1", &f1) + &key("k2", &f2) + k3))).unwrap();
    hup();
    logged("reload refused", 1);
    let logs = p.stderr.lock().unwrap().clone();
    assert!(
        logs.contains("cannot gain a new environment variable") && logs.contains("secret_file"),
        "{logs}"
    );

    // 3. After the longest token lifetime, remove the old kid and SIGHUP: k1 sessions are
    //    closed (told to fetch a fresh token), k1 tokens are refused, k2 carries on.
    std::fs::write(&path, config(&key("k2", &f2))).unwrap();
    hup();
    logged("config_reloaded", 2);
    let code = old_session.closed(WAIT).await.unwrap();
    // 4001 before, 4002 once issue 10 (a removed key closes with 4002) lands.
    assert!(matches!(code, Some(4001 | 4002)), "{code:?}");
    assert_eq!(
        new_session.subscribe(&channel("b"), None).await.unwrap()["type"],
        "subscribed"
    );
    assert!(Client::connect(&ws, &token("k1", K1)).await.is_err());
    assert!(Client::connect(&ws, &token("k2", K2)).await.is_ok());
    drop(p);
    std::fs::remove_dir_all(&dir).ok();
}
