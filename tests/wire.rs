//! `tests/fixtures/wire.json` is what the relay speaks: every client frame of it parses, the
//! relay sends a frame of the same shape as each server frame of it, and each HTTP example
//! gets its status and a body of its shape. `scripts/check-spec` checks the same file
//! against `docs/asyncapi.yaml` and `docs/openapi.yaml`, so the published spec, the fixture
//! and the code cannot drift apart.

mod common;

use common::*;
use sealcast::auth::unix_now;
use sealcast::protocol::ClientFrame;
use sealcast_client::wire::Client;
use serde_json::{Value, json};

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wire.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Fields whose values are fixed by the request (so compared as they are); every other
/// value (session ids, epochs, times, offsets) is compared by its JSON type only.
const EXACT: [&str; 7] = ["type", "code", "message", "channel", "event", "data", "ns"];

/// The value with every leaf outside [`EXACT`] replaced by the name of its JSON type.
fn skeleton(v: &Value, key: Option<&str>) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), skeleton(v, Some(k))))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| skeleton(v, None)).collect()),
        leaf if key.is_some_and(|k| EXACT.contains(&k)) => leaf.clone(),
        Value::String(_) => json!("<string>"),
        Value::Number(n) if n.is_u64() => json!("<unsigned>"),
        Value::Number(_) => json!("<number>"),
        Value::Bool(_) => json!("<bool>"),
        Value::Null => Value::Null,
    }
}

fn kind(f: &ClientFrame) -> &'static str {
    match f {
        ClientFrame::Connect { .. } => "connect",
        ClientFrame::Subscribe { .. } => "subscribe",
        ClientFrame::Unsubscribe { .. } => "unsubscribe",
        ClientFrame::Refresh { .. } => "refresh",
    }
}

#[test]
fn every_client_frame_of_the_fixture_parses_as_its_type() {
    let fx = fixture();
    let frames = fx["websocket"]["client"].as_array().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for f in frames {
        let parsed = ClientFrame::parse(&f.to_string())
            .unwrap_or_else(|e| panic!("{f} does not parse: {e:?}"));
        assert_eq!(kind(&parsed), f["type"], "{f}");
        seen.insert(kind(&parsed));
    }
    assert_eq!(seen.len(), 4, "an example of each client frame: {seen:?}");
}

#[tokio::test]
async fn the_relay_sends_a_frame_of_each_shape_of_the_fixture() {
    let fx = fixture();
    let relay = Relay::start().await;
    let (mut c, connected) = Client::connect(&relay.ws_url(), &connect_token(NS, "user-1", 600))
        .await
        .unwrap();
    let mut got = vec![connected];
    // The fixture's client frames after `connect`, in order, with live tokens; each gets
    // exactly one reply (no channel has history yet, so nothing is replayed).
    for f in &fx["websocket"]["client"].as_array().unwrap()[1..] {
        let mut f = f.clone();
        if f.get("token").is_some() {
            f["token"] = json!(connect_token(NS, "user-1", 900));
        }
        c.send(&f).await.unwrap();
        got.push(c.frame(WAIT).await.unwrap());
    }
    // A publication on a subscribed channel, with the fixture's own ciphertext.
    let pub_example = fx["websocket"]["server"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["type"] == "pub")
        .unwrap()
        .clone();
    let a = relay
        .publisher()
        .publish(
            &publish_token(None),
            pub_example["channel"].as_str().unwrap(),
            pub_example["event"].as_str().unwrap(),
            pub_example["data"].as_str().unwrap(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{:?}", a.body);
    got.push(c.frame(WAIT).await.unwrap());
    // Two refused requests: outside the namespace (with an id), and an id that is not one.
    c.send(&json!({"type":"subscribe","id":5,"channel":format!("{NS}0#g")}))
        .await
        .unwrap();
    got.push(c.frame(WAIT).await.unwrap());
    c.send(&json!({"type":"subscribe","id":-1,"channel":"a#b"}))
        .await
        .unwrap();
    got.push(c.frame(WAIT).await.unwrap());

    let got: Vec<Value> = got.iter().map(|f| skeleton(f, None)).collect();
    for example in fx["websocket"]["server"].as_array().unwrap() {
        let want = skeleton(example, None);
        assert!(
            got.contains(&want),
            "the relay sent no frame shaped like the fixture's\n{want:#}\nit sent:\n{got:#?}"
        );
    }
    // And the relay sent nothing the fixture does not show.
    let shown: Vec<Value> = fx["websocket"]["server"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| skeleton(f, None))
        .collect();
    for g in &got {
        assert!(shown.contains(g), "not in tests/fixtures/wire.json: {g:#}");
    }
    relay.stop().await;
}

#[tokio::test]
async fn the_http_api_answers_each_example_of_the_fixture() {
    let fx = fixture();
    let relay = Relay::start().await;
    let p = relay.publisher();
    for ex in fx["http"].as_array().unwrap() {
        let path = match ex["operation"].as_str().unwrap() {
            "publish" => "/v1/publish",
            "publishBatch" => "/v1/publish/batch",
            "revoke" => "/v1/revoke",
            other => panic!("unknown operation {other}"),
        };
        let token = publish_token(ex["publish_token_ns"].as_str());
        let mut body = ex["request"].clone();
        // A fixed `until` would fall out of the accepted window (within a year) with time.
        if body.get("until").is_some() {
            body["until"] = json!(unix_now() + 3600);
        }
        let a = p.post(path, &token, &body).await.unwrap();
        assert_eq!(a.status, ex["status"], "{ex}: {:?}", a.body);
        assert_eq!(
            skeleton(&a.body, None),
            skeleton(&ex["response"], None),
            "{ex}"
        );
    }
    relay.stop().await;
}
