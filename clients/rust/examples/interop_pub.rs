//! One publisher of the cross-SDK matrix (`clients/js/test/interop/matrix.test.mjs` drives
//! it): publishes the plan's payloads for one publisher name, each plaintext byte for byte
//! (a [`RawValue`] is encrypted as it is written), with this SDK's [`Publisher`].
//!
//! ```text
//! cargo run -p sealcast-client --example interop_pub -- <plan.json> <publisher-name>
//! ```
//!
//! Prints one JSON line per publication: `{"offset":..,"epoch":..}`.

use std::error::Error;

use sealcast_client::{PayloadKey, Publisher, Signer};
use serde_json::Value;
use serde_json::value::RawValue;

fn text<'a>(v: &'a Value, k: &str) -> Result<&'a str, String> {
    v[k].as_str().ok_or_else(|| format!("plan: {k} missing"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, plan, name] = args.as_slice() else {
        return Err("usage: interop_pub <plan.json> <publisher-name>".into());
    };
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(plan)?)?;
    let signer = Signer::new(
        text(&plan, "app")?,
        Some(text(&plan, "kid")?),
        text(&plan, "secret")?,
    )?;
    let key = PayloadKey::from_base64(text(&plan, "payload_key")?)?;
    let publisher = Publisher::with_token_options(
        text(&plan, "http")?,
        signer,
        key,
        Some(text(&plan, "ns")?),
        60,
    );
    let channel = text(&plan["channels"], name)?;
    let payloads = plan["payloads"][name.as_str()]
        .as_array()
        .ok_or("plan: no payloads for this publisher")?;
    for (i, p) in payloads.iter().enumerate() {
        let raw = RawValue::from_string(text(p, "text")?.to_string())?;
        let idempotency_key = format!("matrix-{name}-{i}");
        let at = publisher
            .publish_with_key(channel, text(p, "event")?, &*raw, Some(&idempotency_key))
            .await?;
        println!(
            "{}",
            serde_json::json!({"offset": at.offset, "epoch": at.epoch})
        );
    }
    Ok(())
}
