//! The recorded session shared by the four implementations (the relay, and the Rust,
//! TypeScript and Python SDKs): `tests/fixtures/interop/session.json`.
//!
//! [`script`] says what a client and a backend do (WebSocket frames sent, HTTP requests made)
//! with a fixed app secret, payload key and clock; the replay below runs it against the real
//! `sealcast` binary and records every reply. In the file, a value that is necessarily live
//! is a named placeholder (`{live:session:a}`, `{live:epoch:gadget-20002}`), bound to the
//! first value the relay gave and required to be the same wherever the recording repeats it;
//! times follow the token clock (see `clock` in the file). Everything else is compared as
//! it is, field by field.
//!
//! - `cargo test --test interop_session` replays the file's client side against the relay
//!   and fails at the first reply that differs from the recording (the relay drifted), or
//!   when the file is not what [`script`] and the relay make (stale).
//! - `SEALCAST_WRITE_FIXTURES=1 cargo test --test interop_session` rewrites the file.
//!
//! The SDKs check the same file: every server frame decodes, every `pub` decrypts to its
//! recorded plaintext, the tokens verify as recorded, and the frames they send for the same
//! actions are the recorded ones (`clients/rust/tests/session.rs`,
//! `clients/js/test/unit/session.test.mjs`, `clients/python/tests/test_session.py`).

mod common;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{WAIT, proc};
use sealcast::auth::{Authenticator, MintClaims, Secret, TokenPolicy, unix_now};
use sealcast::payload;
use sealcast::protocol::AppId;
use sealcast_client::wire::{Client, Incoming, Publisher};
use serde_json::{Value, json};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/interop/session.json"
);
const APP: &str = "acme";
const KID: &str = "k1";
const SECRET: &str = "session-fixture-secret-0123456789abcdef-not-for-production";
/// The fixture's clock: every token is minted at this time (`now` in the file).
const NOW: i64 = 1_700_000_000;
const NS: &str = "ari:cloud:jira::site/7f3c0d2e/dashboard/10001";
const USER: &str = "557058:fixture-user";

fn payload_key() -> Vec<u8> {
    (0u8..32)
        .map(|i| i.wrapping_mul(7).wrapping_add(3))
        .collect()
}

fn ch(topic: &str) -> String {
    format!("{NS}#{topic}")
}

/// Builds the script: steps whose replies (`recv`, `answer`, `close`) are still `null`.
struct Script {
    tokens: Vec<Value>,
    steps: Vec<Value>,
    nonces: u8,
}

impl Script {
    /// A token minted at the fixture's clock; `expect` is what the relay makes of it then:
    /// `valid`, or the label of its refusal.
    fn token(&mut self, name: &str, kid: &str, claims: MintClaims, expect: &str) -> String {
        let token = claims.sign(Some(kid), SECRET.as_bytes());
        self.tokens.push(json!({
            "name": name, "kid": kid, "aud": claims_json(&claims)["aud"], "claims": claims_json(&claims),
            "token": token, "expect": expect,
        }));
        token
    }

    fn send(&mut self, conn: &str, frame: Value) {
        self.steps.push(json!({"conn": conn, "send": frame}));
    }

    /// A frame no SDK sends (a protocol violation or a malformed request), recorded for the
    /// relay's answer; the SDKs skip it when they compare what they send.
    fn send_raw(&mut self, conn: &str, frame: Value) {
        self.steps
            .push(json!({"conn": conn, "send": frame, "sdk": false}));
    }

    fn recv(&mut self, conn: &str, n: usize) {
        for _ in 0..n {
            self.steps.push(json!({"conn": conn, "recv": null}));
        }
    }

    fn close(&mut self, conn: &str) {
        self.steps.push(json!({"conn": conn, "close": null}));
    }

    /// `POST /v1/publish` of real ciphertext of `plaintext`, sealed with a fixed nonce (so
    /// the file is the same on every run) under the fixture's payload key.
    fn publish(&mut self, topic: &str, event: &str, plaintext: &str) {
        self.nonces += 1;
        let channel = ch(topic);
        let nonce: [u8; 12] = std::array::from_fn(|i| self.nonces.wrapping_mul(16) + i as u8);
        let data = payload::encrypt_with_nonce(
            &payload_key(),
            nonce,
            &channel,
            event,
            plaintext.as_bytes(),
        )
        .unwrap();
        let key = format!("session-fixture-{}", self.nonces);
        self.steps.push(json!({
            "http": {"path": "/v1/publish", "token": "publish",
                     "body": {"channel": channel, "event": event, "data": data, "idempotency_key": key}},
            "plaintext": plaintext, "answer": null,
        }));
    }

    fn revoke(&mut self, sub: &str, until: i64) {
        self.steps.push(json!({
            "http": {"path": "/v1/revoke", "token": "revoke", "body": {"sub": sub, "until": until}},
            "answer": null,
        }));
    }
}

fn claims_json(c: &MintClaims) -> Value {
    serde_json::to_value(c).unwrap()
}

/// What a client and a backend do, in order. Connections are named `a`, `b`, ...; each
/// opens at its first frame.
fn script() -> Script {
    let mut s = Script {
        tokens: Vec::new(),
        steps: Vec::new(),
        nonces: 0,
    };
    let user = |sub: &str, iat: i64, ttl: i64| MintClaims::connect(APP, NS, sub, iat, ttl);
    let connect = s.token("connect", KID, user(USER, NOW, 3600), "valid");
    let refresh = s.token("refresh", KID, user(USER, NOW, 7200), "valid");
    let other = user("557058:someone-else", NOW, 3600);
    let other_user = s.token("refresh_other_user", KID, other, "valid");
    let publish = MintClaims::publish(APP, Some(NS), NOW, 300);
    s.token("publish", KID, publish, "valid");
    s.token(
        "revoke",
        KID,
        MintClaims::publish(APP, None, NOW, 300),
        "valid",
    );
    let stranger = user("557058:stranger", NOW, 3600);
    let unknown_kid = s.token("unknown_kid", "k9", stranger, "unknown_key");
    let late = user("557058:latecomer", NOW - 7200, 3600);
    let expired = s.token("expired", KID, late, "expired");

    // a: connect, subscribe without `since`, live publications, a second channel, a
    // channel of another namespace, unsubscribe, refresh (accepted, then refused), then
    // a malformed request and a protocol violation.
    s.send("a", json!({"type": "connect", "token": connect}));
    s.recv("a", 1);
    s.send(
        "a",
        json!({"type": "subscribe", "id": 1, "channel": ch("gadget-20002")}),
    );
    s.recv("a", 1);
    s.publish(
        "gadget-20002",
        "AddAbsence",
        r#"{"who":"ana","days":["2026-12-01","2026-12-02"],"note":"Größe: ✓"}"#,
    );
    s.recv("a", 1);
    s.publish(
        "gadget-20002",
        "RemoveAbsence",
        r#"{"who":"bo","day":"2026-12-03","nested":{"list":[1,2.5,null,true],"empty":{}}}"#,
    );
    s.recv("a", 1);
    s.send(
        "a",
        json!({"type": "subscribe", "id": 2, "channel": ch("rotation")}),
    );
    s.recv("a", 1);
    // Namespaces are compared for equality, never by prefix.
    s.send(
        "a",
        json!({"type": "subscribe", "id": 3, "channel": format!("{NS}0#gadget-20002")}),
    );
    s.recv("a", 1);
    s.send(
        "a",
        json!({"type": "unsubscribe", "id": 4, "channel": ch("gadget-20002")}),
    );
    s.recv("a", 1);
    // Published after the unsubscribe: only the rotation's publication reaches `a`.
    s.publish("gadget-20002", "AddAbsence", r#"{"who":"cy","days":[]}"#);
    s.publish(
        "rotation",
        "Rotate",
        r#"{"on_call":"dee","since":"2026-12-04T08:00:00Z"}"#,
    );
    s.recv("a", 1);
    s.send("a", json!({"type": "refresh", "id": 5, "token": refresh}));
    s.recv("a", 1);
    s.send(
        "a",
        json!({"type": "refresh", "id": 6, "token": other_user}),
    );
    s.recv("a", 1);
    s.send_raw("a", json!({"type": "subscribe", "channel": "no-separator"}));
    s.recv("a", 1);
    s.send_raw("a", json!({"type": "connect", "token": connect}));
    s.close("a");

    // b: the same user again, recovering both channels: one from a position the relay
    // still has (replayed, recovered:true), one from an epoch it never gave
    // (recovered:false); a live publication; then the user is revoked.
    s.send("b", json!({"type": "connect", "token": connect}));
    s.recv("b", 1);
    s.send(
        "b",
        json!({"type": "subscribe", "id": 1, "channel": ch("gadget-20002"),
               "since": {"epoch": "{live:epoch:gadget-20002}", "offset": 1}}),
    );
    s.recv("b", 3);
    s.send(
        "b",
        json!({"type": "subscribe", "id": 2, "channel": ch("rotation"),
               "since": {"epoch": "0123456789abcdef", "offset": 7}}),
    );
    s.recv("b", 1);
    s.publish(
        "gadget-20002",
        "AddAbsence",
        r#"{"who":"ed","days":["2026-12-24"]}"#,
    );
    s.recv("b", 1);
    s.revoke(USER, NOW + 600);
    s.close("b");

    // c and d: tokens the relay refuses.
    s.send("c", json!({"type": "connect", "token": unknown_kid}));
    s.close("c");
    s.send("d", json!({"type": "connect", "token": expired}));
    s.close("d");
    s
}

/// Runs steps against a relay, recording each reply as the file writes it.
struct Replay {
    ws_url: String,
    http: Publisher,
    /// Live time minus the fixture's: every token is minted this much later.
    shift: i64,
    tokens: Vec<Value>,
    conns: BTreeMap<String, Client>,
    /// Placeholder name -> the live value it stands for.
    live: BTreeMap<String, String>,
}

impl Replay {
    /// The live token for a fixture token (same claims and key id, times shifted).
    fn live_token(&self, entry: &Value) -> String {
        let c = &entry["claims"];
        let s = |k: &str| c[k].as_str().map(String::from);
        let mut claims = match c["aud"].as_str().unwrap() {
            "connect" => MintClaims::connect(APP, &s("ns").unwrap(), &s("sub").unwrap(), 0, 0),
            _ => MintClaims::publish(APP, s("ns").as_deref(), 0, 0),
        };
        claims.iss = s("iss").unwrap();
        claims.iat = c["iat"].as_i64().unwrap() + self.shift;
        claims.exp = c["exp"].as_i64().unwrap() + self.shift;
        claims.jti = s("jti");
        claims.sign(entry["kid"].as_str(), SECRET.as_bytes())
    }

    fn token_named(&self, name: &str) -> String {
        let e = self.tokens.iter().find(|t| t["name"] == name).unwrap();
        self.live_token(e)
    }

    /// A recorded client frame made live: its token re-minted, placeholders filled.
    fn live_frame(&self, v: &Value, key: Option<&str>) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), self.live_frame(v, Some(k))))
                    .collect(),
            ),
            Value::String(s) if key == Some("token") => {
                let e = self
                    .tokens
                    .iter()
                    .find(|t| t["token"] == *s)
                    .unwrap_or_else(|| panic!("a token not in the fixture's table: {s}"));
                json!(self.live_token(e))
            }
            Value::String(s) if s.starts_with("{live:") => {
                let name = &s[6..s.len() - 1];
                json!(
                    self.live
                        .get(name)
                        .unwrap_or_else(|| panic!("{s} is used before the relay gave it"))
                )
            }
            other => other.clone(),
        }
    }

    /// The placeholder for a live value: bound the first time, the same value after.
    fn bind(&mut self, name: String, value: &Value) -> Value {
        let Some(v) = value.as_str().filter(|v| !v.is_empty()) else {
            return value.clone(); // not a non-empty string: left as is, so it shows
        };
        match self.live.get(&name) {
            Some(bound) if bound != v => return value.clone(),
            Some(_) => {}
            None => {
                // Two sessions never share an id.
                if name.starts_with("session:")
                    && self
                        .live
                        .iter()
                        .any(|(n, b)| n.starts_with("session:") && b == v)
                {
                    return value.clone();
                }
                self.live.insert(name.clone(), v.to_string());
            }
        }
        json!(format!("{{live:{name}}}"))
    }

    fn unshift(&self, v: &Value) -> Value {
        v.as_i64().map_or(v.clone(), |t| json!(t - self.shift))
    }

    /// A relay frame as the file records it.
    fn recorded(&mut self, conn: &str, mut f: Value) -> Value {
        match f["type"].as_str() {
            Some("connected") => {
                f["session"] = self.bind(format!("session:{conn}"), &f["session"]);
                f["expires_at"] = self.unshift(&f["expires_at"]);
            }
            Some("subscribed") => {
                let name = format!("epoch:{}", topic(&f["channel"]));
                f["epoch"] = self.bind(name, &f["epoch"]);
            }
            Some("refreshed") => f["expires_at"] = self.unshift(&f["expires_at"]),
            _ => {}
        }
        f
    }

    fn conn(&mut self, name: &str) -> &mut Client {
        self.conns.get_mut(name).expect("the connection is open")
    }

    /// Runs one step; returns it with its reply recorded.
    async fn step(&mut self, step: &Value) -> Value {
        let mut out = step.clone();
        let conn = step["conn"].as_str().unwrap_or_default().to_string();
        if let Some(frame) = step.get("send") {
            if !self.conns.contains_key(&conn) {
                let c = Client::open(&self.ws_url).await.expect("open a WebSocket");
                self.conns.insert(conn.clone(), c);
            }
            let live = self.live_frame(frame, None);
            // The relay may have closed already; the next reply says so.
            let _ = self.conn(&conn).send(&live).await;
        } else if step.get("recv").is_some() {
            match self.conn(&conn).next(WAIT).await {
                Ok(Incoming::Frame(f)) => {
                    let f = self.recorded(&conn, f);
                    if f["type"] == "pub" {
                        let opened = payload::decrypt(
                            &payload_key(),
                            f["channel"].as_str().unwrap(),
                            f["event"].as_str().unwrap(),
                            f["data"].as_str().unwrap(),
                        )
                        .expect("a pub decrypts with the fixture's key");
                        out["plaintext"] = json!(String::from_utf8(opened).unwrap());
                    }
                    out["recv"] = f;
                }
                other => out["recv"] = json!({"instead": format!("{other:?}")}),
            }
        } else if step.get("close").is_some() {
            out["close"] = match self.conn(&conn).next(WAIT).await {
                Ok(Incoming::Closed(code)) => json!(code),
                other => json!({"instead": format!("{other:?}")}),
            };
        } else if let Some(req) = step.get("http") {
            let path = req["path"].as_str().unwrap();
            let token = self.token_named(req["token"].as_str().unwrap());
            let mut body = self.live_frame(&req["body"], None);
            if path == "/v1/revoke" {
                body["until"] = json!(body["until"].as_i64().unwrap() + self.shift);
            }
            let a = self.http.post(path, &token, &body).await.expect("HTTP");
            let mut answer = a.body;
            if answer.get("epoch").is_some() {
                let name = format!("epoch:{}", topic(&req["body"]["channel"]));
                answer["epoch"] = self.bind(name, &answer["epoch"]);
            }
            if path == "/v1/revoke" && answer.get("until").is_some() {
                answer["until"] = self.unshift(&answer["until"]);
            }
            out["answer"] = json!({"status": a.status, "body": answer});
        } else {
            panic!("a step of no known kind: {step}");
        }
        out
    }
}

fn topic(channel: &Value) -> String {
    let c = channel.as_str().unwrap_or_default();
    c.split_once('#').map_or(c, |(_, t)| t).to_string()
}

/// The replies a step records (empty for a `send`).
fn reply(step: &Value) -> Value {
    let mut r = serde_json::Map::new();
    for k in ["recv", "close", "answer", "plaintext"] {
        if let Some(v) = step.get(k) {
            r.insert(k.into(), v.clone());
        }
    }
    Value::Object(r)
}

/// A step without its replies: what the script says.
fn request(step: &Value) -> Value {
    let mut s = step.clone();
    for k in ["recv", "close", "answer"] {
        if let Some(v) = s.get_mut(k) {
            *v = Value::Null;
        }
    }
    if s.get("send").is_none() && s.get("http").is_none() {
        s.as_object_mut().unwrap().remove("plaintext");
    }
    s
}

fn start_relay() -> proc::Proc {
    let dir = proc::temp_dir("interop-session");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sealcast.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n[[apps]]\nid = \"{APP}\"\n\
             [[apps.keys]]\nkid = \"{KID}\"\nsecret_env = \"SESSION_FIXTURE_KEY\"\n"
        ),
    )
    .unwrap();
    proc::spawn(
        &["serve", "--config", config.to_str().unwrap()],
        &[("SESSION_FIXTURE_KEY", SECRET)],
    )
}

fn document(s: &Script, steps: Vec<Value>, live: &BTreeMap<String, String>) -> Value {
    let placeholders: BTreeMap<String, &str> = live
        .keys()
        .map(|name| {
            let what = if name.starts_with("session:") {
                "the session id the relay gave this connection in `connected` (any non-empty string; two connections never share one)"
            } else {
                "the epoch the relay gave this channel (any non-empty string; the same wherever it is repeated, in frames and HTTP answers, and sent back in `since`)"
            };
            (format!("{{live:{name}}}"), what)
        })
        .collect();
    json!({
        "about": "A recorded sealcast session, shared by the relay (tests/interop_session.rs replays the client side against the real binary and compares every reply) and the Rust, TypeScript and Python SDKs (each decodes every relay frame, decrypts every pub to its plaintext, verifies the tokens, and compares the frames it sends for the same actions). Steps run in order: `send` is a client frame on connection `conn` (opened at its first frame; `sdk: false` marks one no SDK sends), `recv` the next relay frame there (`plaintext`: what its data decrypts to), `close` the close code that ends it, `http` a request to the relay with the named token, `answer` its status and body. `tokens` lists every token used, minted at `now`, with `expect`: what the relay makes of it at `now` (`valid`, or the label of its refusal).",
        "regenerate": "SEALCAST_WRITE_FIXTURES=1 cargo test --test interop_session",
        "app": APP,
        "kid": KID,
        "secret": SECRET,
        "payload_key": STANDARD.encode(payload_key()),
        "ns": NS,
        "now": NOW,
        "clock": "Tokens are minted at `now` (their `iat` and `exp` as in `tokens`). A replay mints each token with the same claims moved to the live clock (iat and exp plus the same shift) and moves back by that shift the times that follow from it: `expires_at` of `connected` and `refreshed`, and `until` of /v1/revoke (sent shifted, answered shifted).",
        "live": placeholders,
        "tokens": s.tokens,
        "steps": steps,
    })
}

#[test]
fn each_recorded_token_is_judged_by_the_relays_rules_as_the_file_says() {
    let s = script();
    let secret = Secret::new(SECRET.as_bytes().to_vec());
    let auth = Authenticator::new(
        [(
            AppId::parse(APP).unwrap(),
            vec![(Some(KID.to_string()), &secret)],
        )],
        TokenPolicy::default(),
    );
    for t in &s.tokens {
        let token = t["token"].as_str().unwrap();
        let verdict = if t["aud"] == "connect" {
            auth.verify_connect(token, NOW).map(|_| ())
        } else {
            auth.verify_publish(token, NOW).map(|_| ())
        };
        let label = verdict.map_or_else(|r| r.reason.label(), |()| "valid");
        assert_eq!(label, t["expect"], "{}", t["name"]);
    }
}

#[tokio::test]
async fn the_relay_replies_to_the_recorded_session_as_recorded() {
    let s = script();
    let write = std::env::var_os("SEALCAST_WRITE_FIXTURES").is_some();
    let file: Option<Value> = if write {
        None
    } else {
        let text = std::fs::read_to_string(PATH)
            .unwrap_or_else(|e| panic!("{PATH}: {e} (SEALCAST_WRITE_FIXTURES=1 makes it)"));
        Some(serde_json::from_str(&text).unwrap())
    };
    // The file's client side is the script's: otherwise it is stale.
    let steps: Vec<Value> = match &file {
        None => s.steps.clone(),
        Some(f) => {
            let recorded = f["steps"].as_array().unwrap();
            let asked: Vec<Value> = recorded.iter().map(request).collect();
            assert_eq!(
                asked, s.steps,
                "the script changed: rerun with SEALCAST_WRITE_FIXTURES=1"
            );
            recorded.clone()
        }
    };

    let relay = start_relay();
    let mut r = Replay {
        ws_url: format!("ws://{}/v1/ws", relay.addr),
        http: Publisher::new(&format!("http://{}", relay.addr)),
        shift: unix_now() - NOW,
        tokens: s.tokens.clone(),
        conns: BTreeMap::new(),
        live: BTreeMap::new(),
    };
    let mut done = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let got = r.step(step).await;
        if file.is_some() {
            assert_eq!(
                reply(&got),
                reply(step),
                "step {i} ({}): the relay's reply differs from the recording (left: now, right: recorded)\nrelay stderr:\n{}",
                request(step),
                relay.stderr.lock().unwrap()
            );
        } else {
            let r = reply(&got);
            assert!(
                !r.to_string().contains("\"instead\""),
                "step {i}: {step} got {r}"
            );
        }
        done.push(got);
    }
    let made = document(&s, done, &r.live);
    let text = serde_json::to_string_pretty(&made).unwrap() + "\n";
    if write {
        std::fs::write(PATH, &text).unwrap();
    } else {
        assert_eq!(
            std::fs::read_to_string(PATH).unwrap(),
            text,
            "stale: rerun with SEALCAST_WRITE_FIXTURES=1"
        );
    }
}
