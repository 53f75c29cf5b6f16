//! The golden fixtures shared by the four implementations (`tests/fixtures/interop` at the
//! workspace root: `rust.json` made by the relay, `ts.json` by the TypeScript SDK,
//! `python.json` by the Python SDK): every token verifies (its HS512 MAC under the app
//! secret, its claims as recorded), every envelope decrypts to its plaintext, and minting
//! or encrypting the same inputs here gives the same bytes (tokens are deterministic; an
//! envelope is, given its nonce, which is its first 12 bytes).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sealcast_client::payload::{self, KeyRing, PayloadKey};
use sealcast_client::token::{Audience, Claims, Signer};
use serde_json::Value;
use sha2::Sha512;

const FIXTURES: [&str; 3] = ["rust.json", "ts.json", "python.json"];

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/interop/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Checks the MAC the way the relay does (HMAC-SHA512 over `header.claims`, constant time)
/// and returns the decoded header and claims.
fn verify(token: &str, secret: &[u8]) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let mut mac = Hmac::<Sha512>::new_from_slice(secret).unwrap();
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
        .expect("the token's MAC verifies under the app secret");
    let json = |p: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    (json(parts[0]), json(parts[1]))
}

#[test]
fn every_fixture_token_verifies_and_minting_the_same_claims_gives_the_same_bytes() {
    for name in FIXTURES {
        let f = fixture(name);
        let secret = s(&f, "secret");
        let signer = Signer::new(s(&f, "app"), Some(s(&f, "kid")), secret).unwrap();
        let tokens = f["tokens"].as_array().unwrap();
        assert!(
            tokens.iter().any(|t| t["aud"] == "connect")
                && tokens.iter().any(|t| t["aud"] == "publish"),
            "{name} has both kinds"
        );
        for t in tokens {
            let token = s(t, "token");
            let (header, claims) = verify(token, secret.as_bytes());
            assert_eq!(header["alg"], "HS512", "{name}");
            assert_eq!(header["kid"], f["kid"], "{name}");
            assert_eq!(claims, t["claims"], "{name}: the recorded claims");
            assert!(
                claims["iat"].as_i64().unwrap() <= f["now"].as_i64().unwrap()
                    && f["now"].as_i64().unwrap() < claims["exp"].as_i64().unwrap(),
                "{name}: valid at the fixture's now"
            );
            let iat = claims["iat"].as_i64().unwrap();
            let ttl = (claims["exp"].as_i64().unwrap() - iat) as u64;
            let mut mine = match s(t, "aud") {
                "connect" => Claims::connect(s(&claims, "ns"), s(&claims, "sub"), iat, ttl),
                "publish" => Claims::publish(claims["ns"].as_str(), iat, ttl),
                other => panic!("{name}: aud {other}"),
            };
            assert_eq!(
                mine.aud,
                if t["aud"] == "connect" {
                    Audience::Connect
                } else {
                    Audience::Publish
                }
            );
            if let Some(jti) = claims["jti"].as_str() {
                mine = mine.with_jti(jti);
            }
            assert_eq!(signer.mint(&mine).unwrap(), token, "{name}: same bytes");
        }
    }
}

#[test]
fn every_fixture_envelope_decrypts_and_encrypting_with_its_nonce_gives_the_same_bytes() {
    let mut ring = Vec::new();
    for name in FIXTURES {
        let f = fixture(name);
        let key = PayloadKey::from_base64(s(&f, "payload_key")).unwrap();
        ring.push(key.clone());
        let cts = f["ciphertexts"].as_array().unwrap();
        assert!(!cts.is_empty(), "{name}");
        for c in cts {
            let (channel, event, data) = (s(c, "channel"), s(c, "event"), s(c, "data"));
            let plaintext = s(c, "plaintext");
            let opened = payload::decrypt_bytes(channel, event, data, &key).unwrap();
            assert_eq!(opened, plaintext.as_bytes(), "{name}: byte for byte");
            // The plaintext is JSON, as every SDK delivers it.
            let _: Value = payload::decrypt(channel, event, data, &key).unwrap();
            let nonce: [u8; 12] = STANDARD.decode(data).unwrap()[..12].try_into().unwrap();
            assert_eq!(
                payload::encrypt_bytes_with_nonce(
                    channel,
                    event,
                    plaintext.as_bytes(),
                    &key,
                    nonce
                ),
                data,
                "{name}: same bytes from the same inputs"
            );
            // Bound to channel and event.
            assert!(payload::decrypt_bytes(channel, "Other", data, &key).is_err());
        }
    }
    // A ring of every implementation's key opens every implementation's envelopes.
    let ring = KeyRing::new(ring).unwrap();
    for name in FIXTURES {
        for c in fixture(name)["ciphertexts"].as_array().unwrap() {
            let got = ring
                .decrypt_bytes(s(c, "channel"), s(c, "event"), s(c, "data"))
                .unwrap();
            assert_eq!(got, s(c, "plaintext").as_bytes());
        }
    }
}
