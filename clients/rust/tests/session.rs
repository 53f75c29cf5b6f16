//! The recorded session shared by the four implementations
//! (`tests/fixtures/interop/session.json` at the workspace root, recorded from the real relay
//! by `tests/interop_session.rs`, which also replays it there): this SDK decodes every relay
//! frame of it with [`ServerFrame`] and encodes it back unchanged, decrypts every `pub` to the
//! recorded plaintext, verifies and re-mints the recorded tokens, seals the recorded
//! publications to the same bytes, and sends for the same actions the frames the recording
//! shows ([`ClientFrame`], which the subscriber sends).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sealcast_client::frames::{ClientFrame, ServerFrame};
use sealcast_client::payload::{self, PayloadKey};
use sealcast_client::subscriber::{Position, Retry, close_policy};
use sealcast_client::token::{Claims, Signer};
use serde_json::Value;
use sha2::Sha512;

fn session() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/interop/session.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn steps(f: &Value) -> &Vec<Value> {
    f["steps"].as_array().unwrap()
}

#[test]
fn every_relay_frame_decodes_and_encodes_back_to_the_recorded_json() {
    let f = session();
    let mut kinds = std::collections::BTreeSet::new();
    for step in steps(&f) {
        let Some(recorded) = step.get("recv") else {
            continue;
        };
        let frame = ServerFrame::parse(&recorded.to_string())
            .unwrap_or_else(|e| panic!("{recorded} does not decode: {e}"));
        assert_eq!(
            &serde_json::to_value(&frame).unwrap(),
            recorded,
            "nothing lost or added"
        );
        kinds.insert(s(recorded, "type").to_string());
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "connected",
            "error",
            "pub",
            "refreshed",
            "subscribed",
            "unsubscribed"
        ],
        "the recording has every kind of relay frame"
    );
}

#[test]
fn every_pub_decrypts_to_its_recorded_plaintext_and_every_publication_seals_to_the_same_bytes() {
    let f = session();
    let key = PayloadKey::from_base64(s(&f, "payload_key")).unwrap();
    let mut pubs = 0;
    for step in steps(&f) {
        if let Some(ServerFrame::Pub {
            channel,
            event,
            data,
            ..
        }) = step
            .get("recv")
            .map(|r| ServerFrame::parse(&r.to_string()).unwrap())
        {
            let opened = payload::decrypt_bytes(&channel, &event, &data, &key).unwrap();
            assert_eq!(opened, s(step, "plaintext").as_bytes(), "byte for byte");
            let _: Value = payload::decrypt(&channel, &event, &data, &key).unwrap();
            pubs += 1;
        }
        if step["http"]["path"] == "/v1/publish" {
            let body = &step["http"]["body"];
            let data = s(body, "data");
            let nonce: [u8; 12] = STANDARD.decode(data).unwrap()[..12].try_into().unwrap();
            assert_eq!(
                payload::encrypt_bytes_with_nonce(
                    s(body, "channel"),
                    s(body, "event"),
                    s(step, "plaintext").as_bytes(),
                    &key,
                    nonce
                ),
                data,
                "this SDK seals the same publication to the same bytes"
            );
        }
    }
    assert!(pubs >= 5, "{pubs} pubs");
}

#[test]
fn the_recorded_tokens_verify_and_mint_to_the_same_bytes() {
    let f = session();
    let secret = s(&f, "secret");
    let now = f["now"].as_i64().unwrap();
    for t in f["tokens"].as_array().unwrap() {
        let token = s(t, "token");
        let parts: Vec<&str> = token.split('.').collect();
        let mut mac = Hmac::<Sha512>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .expect("HS512 under the app secret");
        let json = |p: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
        };
        let (header, claims) = (json(parts[0]), json(parts[1]));
        assert_eq!(header["alg"], "HS512");
        assert_eq!(header["kid"], t["kid"]);
        assert_eq!(claims, t["claims"]);
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        // What the relay made of each (its answers are in the steps): the app's key ids
        // verify, an unknown one never does, and an expired token is expired.
        match s(t, "expect") {
            "valid" => assert!(header["kid"] == f["kid"] && iat <= now && now < exp),
            "unknown_key" => assert_ne!(header["kid"], f["kid"]),
            "expired" => assert!(exp <= now),
            other => panic!("expect {other}"),
        }
        let ttl = u64::try_from(exp - iat).unwrap();
        let mine = if t["aud"] == "connect" {
            Claims::connect(s(&claims, "ns"), s(&claims, "sub"), iat, ttl)
        } else {
            Claims::publish(claims["ns"].as_str(), iat, ttl)
        };
        let signer = Signer::new(s(&f, "app"), Some(s(t, "kid")), secret).unwrap();
        assert_eq!(signer.mint(&mine).unwrap(), token, "same bytes");
    }
}

#[test]
fn the_frames_this_sdk_sends_for_the_recorded_actions_are_the_recorded_ones() {
    let f = session();
    let mut sent = 0;
    for step in steps(&f) {
        let Some(recorded) = step.get("send") else {
            continue;
        };
        if step["sdk"] == false {
            continue; // a protocol violation, recorded for the relay's answer
        }
        let id = recorded["id"].as_u64();
        let channel = recorded["channel"].as_str().unwrap_or_default();
        let token = recorded["token"].as_str().unwrap_or_default();
        let mine = match s(recorded, "type") {
            "connect" => ClientFrame::connect(token),
            "subscribe" => {
                let since = recorded.get("since").map(|p| Position {
                    epoch: s(p, "epoch").into(),
                    offset: p["offset"].as_u64().unwrap(),
                });
                ClientFrame::subscribe(id.unwrap(), channel, since)
            }
            "unsubscribe" => ClientFrame::unsubscribe(id.unwrap(), channel),
            "refresh" => ClientFrame::refresh(id.unwrap(), token),
            other => panic!("a client frame of type {other}"),
        };
        let mine: Value = serde_json::from_str(&mine.to_json()).unwrap();
        assert_eq!(&mine, recorded);
        sent += 1;
    }
    assert!(sent >= 8, "{sent} frames");
}

#[test]
fn every_recorded_close_code_is_one_this_sdk_knows_with_the_rule_the_protocol_gives() {
    let f = session();
    let codes: Vec<u16> = steps(&f)
        .iter()
        .filter_map(|st| st.get("close"))
        .map(|c| u16::try_from(c.as_u64().unwrap()).unwrap())
        .collect();
    assert_eq!(codes, [1008, 4003, 4001, 4002]);
    for code in codes {
        let (retry, name) = close_policy(code);
        assert_ne!(name, "transient", "{code}");
        assert_eq!(
            retry,
            if code == 4002 {
                Retry::NewToken
            } else {
                Retry::Never
            },
            "{code}"
        );
    }
}
