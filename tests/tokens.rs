//! Every token rule of PROTOCOL.md 2, over real sockets: the WebSocket close code and the
//! HTTP status each bad token gets.

mod common;

use common::*;
use sealcast::auth::{MintClaims, sign_with_header, unix_now};
use sealcast_client::wire::{Client, Incoming};
use serde_json::{Value, json};

fn claims(aud: &str) -> Value {
    let now = unix_now();
    json!({"iss":"acme","sub":"user-1","ns":NS,"aud":aud,"iat":now,"exp":now + 600})
}

fn hs512(c: &Value, secret: &[u8]) -> String {
    sign_with_header(&json!({"alg":"HS512","typ":"JWT","kid":"k1"}), c, secret)
}

/// The bad tokens of the issue for audience `aud`, with the close code each must get on
/// a socket (over HTTP every one is a 401).
fn bad_tokens(aud: &str) -> Vec<(&'static str, String, u16)> {
    let now = unix_now();
    let other_aud = if aud == "connect" {
        "publish"
    } else {
        "connect"
    };
    let max_life = if aud == "connect" { 86_400 } else { 300 };
    let claims = |_: &str| claims(aud);
    let good = hs512(&claims("connect"), ACME_K1);
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    let mut forged = claims("connect");
    forged["ns"] = json!(format!("{NS}0"));
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        forged.to_string(),
    );
    let tampered = parts.join(".");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("connect");
        f(&mut c);
        hs512(&c, ACME_K1)
    };
    let mut big = claims("connect");
    big["pad"] = json!("x".repeat(5000));
    vec![
        (
            "hs256",
            sign_with_header(
                &json!({"alg":"HS256","typ":"JWT"}),
                &claims("connect"),
                ACME_K1,
            ),
            4001,
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                b64(&claims("connect").to_string())
            ),
            4001,
        ),
        (
            "alg none signed",
            sign_with_header(&json!({"alg":"none"}), &claims("connect"), ACME_K1),
            4001,
        ),
        ("tampered payload", tampered, 4001),
        ("wrong key", hs512(&claims("connect"), ACME_K2), 4001),
        ("unknown app", with(&|c| c["iss"] = json!("nobody")), 4001),
        (
            "other app's key",
            sign_with_header(
                &json!({"alg":"HS512","kid":"k1"}),
                &claims("connect"),
                OTHER_K1,
            ),
            4001,
        ),
        (
            "unknown kid",
            sign_with_header(
                &json!({"alg":"HS512","kid":"k9"}),
                &claims("connect"),
                ACME_K1,
            ),
            4001,
        ),
        (
            "expired",
            with(&|c| {
                c["iat"] = json!(now - 3600);
                c["exp"] = json!(now - 60);
            }),
            4002,
        ),
        (
            "lifetime over the maximum",
            with(&|c| {
                c["iat"] = json!(now);
                c["exp"] = json!(now + max_life + 1);
            }),
            4001,
        ),
        (
            "iat in the future",
            with(&|c| {
                c["iat"] = json!(now + 120);
                c["exp"] = json!(now + 600);
            }),
            4001,
        ),
        (
            "other audience",
            with(&|c| c["aud"] = json!(other_aud)),
            4001,
        ),
        (
            "missing exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            4001,
        ),
        (
            "missing iat",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            4001,
        ),
        (
            "missing aud",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            4001,
        ),
        ("oversized", hs512(&big, ACME_K1), 4001),
        ("garbage", "not a token at all".into(), 4001),
        ("empty", String::new(), 4001),
    ]
}

fn b64(s: &str) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s)
}

#[tokio::test]
async fn each_bad_connect_token_gets_its_close_code() {
    let relay = Relay::start().await;
    let mut cases = bad_tokens("connect");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("connect");
        f(&mut c);
        hs512(&c, ACME_K1)
    };
    cases.push((
        "missing sub",
        with(&|c| {
            c.as_object_mut().unwrap().remove("sub");
        }),
        4001,
    ));
    cases.push((
        "missing ns",
        with(&|c| {
            c.as_object_mut().unwrap().remove("ns");
        }),
        4001,
    ));
    cases.push(("ns with a space", with(&|c| c["ns"] = json!("a b")), 4001));
    for (name, token, code) in cases {
        let mut c = Client::open(&relay.ws_url()).await.unwrap();
        c.send(&json!({"type":"connect","token":token}))
            .await
            .unwrap();
        assert_eq!(
            c.next(WAIT).await.unwrap(),
            Incoming::Closed(Some(code)),
            "{name}"
        );
    }
    // Every reason is registered at 0 from the start: sum over them.
    let rejected: f64 = relay
        .state
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("sealcast_token_rejections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(rejected > 0.0, "{rejected}");
    // And a good one, with either key, with or without kid, is accepted.
    let now = unix_now();
    for (kid, secret) in [
        (Some("k1"), ACME_K1),
        (Some("k2"), ACME_K2),
        (None, ACME_K2),
    ] {
        let t = MintClaims::connect("acme", NS, "u", now, 600).sign(kid, secret);
        let (_, connected) = Client::connect(&relay.ws_url(), &t).await.unwrap();
        assert_eq!(connected["ns"], NS);
        assert_eq!(connected["expires_at"], now + 600);
        assert!(connected["session"].as_str().is_some_and(|s| !s.is_empty()));
    }
    relay.stop().await;
}

#[tokio::test]
async fn each_bad_publish_token_gets_401() {
    let relay = Relay::start().await;
    let p = relay.publisher();
    let ch = channel("g");
    let data = sealed(&ch, "Ev", "{}");
    let now = unix_now();
    let mut cases: Vec<(&str, String)> = bad_tokens("publish")
        .into_iter()
        .map(|(n, t, _)| (n, t))
        .collect();
    cases.push((
        "minted connect token",
        MintClaims::connect("acme", NS, "u", now, 60).sign(Some("k1"), ACME_K1),
    ));
    for (name, token) in cases {
        let a = p.publish(&token, &ch, "Ev", &data, None).await.unwrap();
        assert_eq!(a.status, 401, "{name}: {:?}", a.body);
        assert_eq!(a.body["error"]["code"], "unauthorized", "{name}");
    }
    // No Authorization header at all.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/publish", relay.base()))
        .json(&json!({"channel":ch,"event":"Ev","data":data}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Nothing was published by any of them.
    assert_eq!(relay.metric("sealcast_publications_total"), 0.0);
    let ok = p
        .publish(&publish_token(None), &ch, "Ev", &data, None)
        .await
        .unwrap();
    assert_eq!((ok.status, ok.body["offset"].as_u64()), (200, Some(1)));
    relay.stop().await;
}

#[tokio::test]
async fn namespace_limited_publish_token_cannot_reach_other_namespaces() {
    let relay = Relay::start().await;
    let p = relay.publisher();
    let token = publish_token(Some(NS));
    for other in [
        format!("{NS}0#g"),
        "ari:cloud:jira::site/7f3c0d2e#g".to_string(),
        format!("x{NS}#g"),
    ] {
        let a = p
            .publish(&token, &other, "Ev", &sealed(&other, "Ev", "{}"), None)
            .await
            .unwrap();
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{other}"
        );
    }
    let ch = channel("g");
    let a = p
        .publish(&token, &ch, "Ev", &sealed(&ch, "Ev", "{}"), None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    relay.stop().await;
}

/// Outside dev mode a refused token learns only the close code's name and a generic 401;
/// in dev mode (`serve --dev`) both name the exact reason, for whoever is trying things out.
#[tokio::test]
async fn dev_mode_names_the_refusal_reason_and_production_does_not() {
    let forged = MintClaims::connect("acme", NS, "u", unix_now(), 600)
        .sign(Some("k1"), b"not-the-secret-0123456789abcdef-0123456789");
    let long =
        MintClaims::connect("acme", NS, "u", unix_now(), 2 * 86_400).sign(Some("k1"), ACME_K1);
    let long_publish =
        MintClaims::publish("acme", None, unix_now(), 3600).sign(Some("k1"), ACME_K1);
    for dev in [false, true] {
        let relay = Relay::start_with(|c| c.dev = dev).await;
        for (token, reason) in [
            (&forged, "unauthorized: bad signature"),
            (&long, "unauthorized: token lifetime too long"),
        ] {
            let mut raw = common::raw::RawWs::open(relay.addr).await;
            raw.send_text(&json!({"type":"connect","token":token}).to_string())
                .await;
            let (opcode, payload) = tokio::time::timeout(WAIT, raw.read_frame())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(opcode, 0x8);
            assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4001);
            let said = String::from_utf8_lossy(&payload[2..]).into_owned();
            assert_eq!(said, if dev { reason } else { "unauthorized" });
        }
        // A refused refresh says why in dev mode too.
        let mut c = relay.client().await;
        let e = c
            .request(json!({"type":"refresh","token":forged}))
            .await
            .unwrap();
        assert_eq!(e["code"], "unauthorized");
        if dev {
            assert_eq!(
                e["message"],
                "refresh token refused: bad signature (dev mode)"
            );
        } else {
            assert_eq!(e["message"], "refresh token refused");
        }
        let ch = channel("g");
        let a = relay
            .publisher()
            .publish(&long_publish, &ch, "Ev", &sealed(&ch, "Ev", "{}"), None)
            .await
            .unwrap();
        assert_eq!(a.status, 401);
        let message = a.body["error"]["message"].as_str().unwrap();
        if dev {
            assert!(message.contains("token lifetime too long"), "{message}");
        } else {
            assert_eq!(message, "publish token refused");
        }
        relay.stop().await;
    }
}
