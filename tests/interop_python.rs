//! The golden fixture made by the Python SDK (`clients/python`, `tests/fixtures/interop/
//! python.json`): its tokens verify with the relay's rules and its envelopes decrypt here.
//! The Python tests keep the file current (`SEALCAST_WRITE_FIXTURES=1 pytest`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sealcast::auth::{Authenticator, Secret, TokenPolicy};
use sealcast::payload;
use sealcast::protocol::AppId;
use serde_json::Value;

#[test]
fn tokens_and_ciphertexts_made_by_the_python_sdk_verify_and_decrypt_here() {
    let path = format!(
        "{}/tests/fixtures/interop/python.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let f: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
    )
    .unwrap();
    let secret = Secret::new(f["secret"].as_str().unwrap().as_bytes().to_vec());
    let auth = Authenticator::new(
        [(
            AppId::parse(f["app"].as_str().unwrap()).unwrap(),
            vec![(Some(f["kid"].as_str().unwrap().to_string()), &secret)],
        )],
        TokenPolicy::default(),
    );
    let now = f["now"].as_i64().unwrap();
    let mut kinds = Vec::new();
    for t in f["tokens"].as_array().unwrap() {
        let (token, want) = (t["token"].as_str().unwrap(), &t["claims"]);
        match t["aud"].as_str().unwrap() {
            "connect" => {
                let c = auth.verify_connect(token, now).unwrap();
                assert_eq!(c.sub, want["sub"].as_str().unwrap());
                assert_eq!(c.ns.as_str(), want["ns"].as_str().unwrap());
                assert_eq!(
                    (c.iat, c.exp),
                    (want["iat"].as_i64().unwrap(), want["exp"].as_i64().unwrap())
                );
                assert_eq!(c.jti.as_deref(), want["jti"].as_str());
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
        kinds.push(t["aud"].as_str().unwrap().to_string());
    }
    kinds.sort();
    assert_eq!(kinds, ["connect", "publish"]);
    let key = STANDARD.decode(f["payload_key"].as_str().unwrap()).unwrap();
    let ciphertexts = f["ciphertexts"].as_array().unwrap();
    assert!(!ciphertexts.is_empty());
    for c in ciphertexts {
        let (ch, ev, data) = (
            c["channel"].as_str().unwrap(),
            c["event"].as_str().unwrap(),
            c["data"].as_str().unwrap(),
        );
        assert_eq!(
            payload::decrypt(&key, ch, ev, data).unwrap(),
            c["plaintext"].as_str().unwrap().as_bytes()
        );
        assert!(payload::decrypt(&key, ch, &format!("{ev}x"), data).is_err());
    }
}
