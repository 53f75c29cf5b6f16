//! One subscriber of the cross-SDK matrix (`clients/js/test/interop/matrix.test.mjs` drives
//! it): subscribes with this SDK's [`Subscriber`] to every channel of the plan, prints
//! `{"ready":true}` once each is live, then collects as many publications per channel as the
//! plan has payloads for it and prints them, decrypted, as one JSON line:
//! `{"received":{"<channel>":[{"offset":..,"event":..,"plaintext_b64":..}, ...]}}`.
//! Gives up (exit 1, printing what it got) after the plan's `timeout_ms`.
//!
//! ```text
//! cargo run -p sealcast-client --example interop_sub -- <plan.json>
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sealcast_client::subscriber::{Options, SubscribeOptions};
use sealcast_client::{Event, PayloadKey, Signer, Subscriber};
use serde_json::{Value, json};

fn text<'a>(v: &'a Value, k: &str) -> Result<&'a str, String> {
    v[k].as_str().ok_or_else(|| format!("plan: {k} missing"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, plan] = args.as_slice() else {
        return Err("usage: interop_sub <plan.json>".into());
    };
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(plan)?)?;
    let signer = Signer::new(
        text(&plan, "app")?,
        Some(text(&plan, "kid")?),
        text(&plan, "secret")?,
    )?;
    let ns = text(&plan, "ns")?.to_string();
    let key = PayloadKey::from_base64(text(&plan, "payload_key")?)?;
    let timeout = Duration::from_millis(plan["timeout_ms"].as_u64().unwrap_or(30_000));
    let sub = Subscriber::start(Options::new(text(&plan, "ws")?, key, move || {
        let token = signer.connect_token(&ns, "matrix-rust-subscriber", 600);
        async move { token }
    }));

    // channel -> (publications expected, its subscription)
    let mut subs = Vec::new();
    for (name, channel) in plan["channels"].as_object().ok_or("plan: channels")? {
        let channel = channel.as_str().ok_or("plan: a channel")?;
        let want = plan["payloads"][name].as_array().map_or(0, Vec::len);
        subs.push((want, sub.subscribe(channel, SubscribeOptions::default())?));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for (_, s) in &mut subs {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(Event::Subscribed { .. })) => {}
            other => return Err(format!("{}: not subscribed: {other:?}", s.channel()).into()),
        }
    }
    println!("{}", json!({"ready": true}));

    let mut received: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut complete = true;
    for (want, s) in &mut subs {
        let got = received.entry(s.channel().to_string()).or_default();
        while got.len() < *want {
            match tokio::time::timeout_at(deadline, s.next()).await {
                Ok(Some(Event::Publication(p))) => got.push(json!({
                    "offset": p.offset, "event": p.event, "plaintext_b64": STANDARD.encode(&p.plaintext),
                })),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    complete = false;
                    break;
                }
            }
        }
    }
    println!("{}", json!({"received": received}));
    sub.close().await;
    if complete {
        Ok(())
    } else {
        Err("timed out before every publication arrived".into())
    }
}
