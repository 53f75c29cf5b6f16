//! Golden fixtures shared with the TypeScript SDK (`clients/js`): tokens and ciphertexts
//! made by one side must verify and decrypt on the other.
//!
//! - `tests/fixtures/interop/ts.json` is made by the SDK (`npm run fixtures`); Rust
//!   verifies it here.
//! - `tests/fixtures/interop/rust.json` is made here, deterministically (HMAC and a fixed
//!   nonce); the SDK's tests verify it. `SEALCAST_WRITE_FIXTURES=1 cargo test --test
//!   interop` rewrites it; otherwise this test fails if it is stale.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sealcast::auth::{Authenticator, MintClaims, Secret, TokenPolicy};
use sealcast::payload;
use sealcast::protocol::AppId;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/interop/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

fn authenticator(f: &Value) -> (Authenticator, Secret) {
    let secret = Secret::new(f["secret"].as_str().unwrap().as_bytes().to_vec());
    let auth = Authenticator::new(
        [(
            AppId::parse(f["app"].as_str().unwrap()).unwrap(),
            vec![(Some(f["kid"].as_str().unwrap().to_string()), &secret)],
        )],
        TokenPolicy::default(),
    );
    (auth, secret)
}

#[test]
fn tokens_and_ciphertexts_made_by_the_typescript_sdk_verify_and_decrypt_here() {
    let f = fixture("ts.json");
    let (auth, _) = authenticator(&f);
    let now = f["now"].as_i64().unwrap();
    let tokens = f["tokens"].as_array().unwrap();
    assert!(
        tokens.iter().any(|t| t["aud"] == "connect")
            && tokens.iter().any(|t| t["aud"] == "publish")
    );
    for t in tokens {
        let token = t["token"].as_str().unwrap();
        let want = &t["claims"];
        match t["aud"].as_str().unwrap() {
            "connect" => {
                let c = auth.verify_connect(token, now).unwrap();
                assert_eq!(
                    (c.app.as_str(), c.sub.as_str(), c.ns.as_str()),
                    (
                        want["iss"].as_str().unwrap(),
                        want["sub"].as_str().unwrap(),
                        want["ns"].as_str().unwrap()
                    )
                );
                assert_eq!(
                    (c.iat, c.exp),
                    (want["iat"].as_i64().unwrap(), want["exp"].as_i64().unwrap())
                );
                assert!(
                    auth.verify_publish(token, now).is_err(),
                    "a connect token never publishes"
                );
            }
            "publish" => {
                let c = auth.verify_publish(token, now).unwrap();
                assert_eq!(c.ns.as_ref().map(|n| n.as_str()), want["ns"].as_str());
                assert_eq!(c.exp, want["exp"].as_i64().unwrap());
                assert!(
                    auth.verify_connect(token, now).is_err(),
                    "a publish token never connects"
                );
            }
            other => panic!("unknown aud {other}"),
        }
    }
    let key = STANDARD.decode(f["payload_key"].as_str().unwrap()).unwrap();
    for c in f["ciphertexts"].as_array().unwrap() {
        let (ch, ev, data) = (
            c["channel"].as_str().unwrap(),
            c["event"].as_str().unwrap(),
            c["data"].as_str().unwrap(),
        );
        assert_eq!(
            payload::decrypt(&key, ch, ev, data).unwrap(),
            c["plaintext"].as_str().unwrap().as_bytes()
        );
        // Bound to its channel and event.
        assert!(payload::decrypt(&key, &format!("{ch}x"), ev, data).is_err());
        assert!(payload::decrypt(&key, ch, &format!("{ev}x"), data).is_err());
    }
}

fn rust_fixture() -> Value {
    let secret = "rust-interop-secret-0123456789abcdef-not-for-production";
    let key: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(11).wrapping_add(5))
        .collect();
    let ns = "ari:cloud:jira::site/7f3c0d2e/dashboard/10001";
    let (iat, now) = (1_700_000_000i64, 1_700_000_100i64);
    let connect = MintClaims::connect("acme", ns, "557058:rust-user", iat, 3600);
    let publish = MintClaims::publish("acme", Some(ns), iat, 300);
    let plaintexts = [
        (
            format!("{ns}#gadget-20002"),
            "AddAbsence",
            r#"{"who":"ana","days":["2026-12-01","2026-12-02"],"note":"Größe: ✓"}"#,
        ),
        (format!("{ns}#rotation"), "Rotate", r#"{"on_call":"bo"}"#),
    ];
    let ciphertexts: Vec<Value> = plaintexts
        .iter()
        .enumerate()
        .map(|(i, (ch, ev, pt))| {
            let nonce: [u8; 12] = std::array::from_fn(|j| (i * 16 + j) as u8);
            json!({"channel":ch,"event":ev,"plaintext":pt,"data":payload::encrypt_with_nonce(&key, nonce, ch, ev, pt.as_bytes()).unwrap()})
        })
        .collect();
    json!({
        "app": "acme", "kid": "k1", "secret": secret, "payload_key": STANDARD.encode(&key), "now": now,
        "tokens": [
            {"aud":"connect","token":connect.sign(Some("k1"), secret.as_bytes()),"claims":connect},
            {"aud":"publish","token":publish.sign(Some("k1"), secret.as_bytes()),"claims":publish},
        ],
        "ciphertexts": ciphertexts,
    })
}

#[test]
fn the_rust_made_fixture_is_current_and_verifies() {
    let made = rust_fixture();
    let path = format!(
        "{}/tests/fixtures/interop/rust.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = serde_json::to_string_pretty(&made).unwrap() + "\n";
    if std::env::var_os("SEALCAST_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        text,
        "stale: rerun with SEALCAST_WRITE_FIXTURES=1"
    );
    // And it verifies with the same checks the TypeScript side must pass.
    let (auth, _) = authenticator(&made);
    let now = made["now"].as_i64().unwrap();
    assert!(
        auth.verify_connect(made["tokens"][0]["token"].as_str().unwrap(), now)
            .is_ok()
    );
    assert!(
        auth.verify_publish(made["tokens"][1]["token"].as_str().unwrap(), now)
            .is_ok()
    );
}
