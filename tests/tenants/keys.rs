//! Keys and token headers: a secret replaced under the same kid ends the sessions it
//! verified (4002, so clients fetch a new token), `crit` is refused and `nbf` honoured.

use std::process::Command;

use sealcast::auth::{MintClaims, sign_with_header, unix_now};
use sealcast_client::wire::{Client, ClientError};
use serde_json::json;

use crate::common::proc::{spawn, temp_dir};
use crate::common::*;

const OLD: &str = "acme-old-secret-0123456789abcdefghijklmnop";
const NEW: &str = "acme-new-secret-0123456789abcdefghijklmnop";
const K2: &str = "acme-key-two-0123456789abcdefghijklmnop";

fn connect_with(secret: &str, kid: Option<&str>, sub: &str) -> String {
    MintClaims::connect("acme", NS, sub, unix_now(), 600).sign(kid, secret.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_replaced_under_the_same_kid_closes_its_sessions_with_4002() {
    let dir = temp_dir("keys-replace");
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("k1.secret");
    std::fs::write(&secret_file, OLD).unwrap();
    let path = dir.join("sealcast.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\n[[apps]]\nid = \"acme\"\n\
             [[apps.keys]]\nkid = \"k1\"\nsecret_file = \"{}\"\n\
             [[apps.keys]]\nkid = \"k2\"\nsecret_env = \"ACME_KEY_2\"\n",
            secret_file.display()
        ),
    )
    .unwrap();
    let p = spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[("ACME_KEY_2", K2)],
    );
    let ws = format!("ws://{}/v1/ws", p.addr);
    let (mut by_old, _) = Client::connect(&ws, &connect_with(OLD, Some("k1"), "a"))
        .await
        .unwrap();
    let (mut by_old_no_kid, _) = Client::connect(&ws, &connect_with(OLD, None, "b"))
        .await
        .unwrap();
    let (mut by_k2, _) = Client::connect(&ws, &connect_with(K2, Some("k2"), "c"))
        .await
        .unwrap();

    // The leaked secret is replaced in place; the kid stays.
    std::fs::write(&secret_file, NEW).unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &p.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(by_old.closed(WAIT).await.unwrap(), Some(4002));
    assert_eq!(by_old_no_kid.closed(WAIT).await.unwrap(), Some(4002));
    assert_eq!(
        by_k2.subscribe(&channel("x"), None).await.unwrap()["type"],
        "subscribed",
        "sessions of other keys stay"
    );
    // The old secret no longer connects; the new one does, under the same kid.
    match Client::connect(&ws, &connect_with(OLD, Some("k1"), "a")).await {
        Err(ClientError::Closed { code }) => assert_eq!(code, Some(4001)),
        other => panic!("{:?}", other.map(|(_, v)| v)),
    }
    Client::connect(&ws, &connect_with(NEW, Some("k1"), "a"))
        .await
        .expect("the new secret verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crit_is_refused_and_nbf_is_honoured_with_the_leeway() {
    let relay = Relay::start_with(|c| c.tokens.leeway = std::time::Duration::from_secs(5)).await;
    let now = unix_now();
    let claims = |extra: serde_json::Value| {
        let mut c = json!({"iss":"acme","aud":"connect","sub":"u","ns":NS,"iat":now,"exp":now+600});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let header = json!({"alg":"HS512","typ":"JWT","kid":"k1"});
    let crit = json!({"alg":"HS512","typ":"JWT","kid":"k1","crit":["exp"]});
    let cases = [
        (
            sign_with_header(&crit, &claims(json!({})), ACME_K1),
            Some(4001),
        ),
        (
            sign_with_header(&header, &claims(json!({"nbf": now + 60})), ACME_K1),
            Some(4001),
        ),
        (
            sign_with_header(&header, &claims(json!({"nbf": now + 3})), ACME_K1),
            None,
        ),
        (
            sign_with_header(&header, &claims(json!({"nbf": now - 60})), ACME_K1),
            None,
        ),
    ];
    for (i, (token, refused)) in cases.into_iter().enumerate() {
        let got = match Client::connect(&relay.ws_url(), &token).await {
            Ok(_) => None,
            Err(ClientError::Closed { code }) => code,
            Err(e) => panic!("case {i}: {e}"),
        };
        assert_eq!(got, refused, "case {i}");
    }
    let m = relay.state.metrics.render();
    for reason in ["critical_header", "not_yet_valid"] {
        assert!(
            metric_with_label(&m, "sealcast_token_rejections_total", reason) >= 1.0,
            "{reason}: {m}"
        );
    }
    relay.stop().await;
}
