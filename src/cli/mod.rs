//! Parts of the `sealcast` command beyond serving: error reports, `token verify`, the
//! output formats of `keygen`. The command's tree itself is in `main.rs`.

pub(crate) mod report;
pub(crate) mod verify;

use clap::ValueEnum;
use serde_json::json;

/// How `keygen` prints what it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeyFormat {
    /// Two labelled lines for a person.
    Text,
    /// `NAME=value` lines for an env file or `eval`.
    Env,
    /// One JSON object.
    Json,
}

/// What `keygen` prints: an app secret (for `secret_env` / `secret_file`) and a payload key
/// (for the app and its clients, never the relay).
pub(crate) fn keygen_output(format: KeyFormat, app_secret: &str, payload_key: &str) -> String {
    match format {
        KeyFormat::Text => format!(
            "app secret (for secret_env / secret_file): {app_secret}\n\
             payload key (base64, 32 bytes; give it to your app and its clients, never to the relay): {payload_key}"
        ),
        KeyFormat::Env => {
            format!("SEALCAST_APP_SECRET={app_secret}\nSEALCAST_PAYLOAD_KEY={payload_key}")
        }
        KeyFormat::Json => {
            json!({ "app_secret": app_secret, "payload_key": payload_key }).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_formats_carry_both_values() {
        let env = keygen_output(KeyFormat::Env, "s3cr3t", "a2V5");
        assert_eq!(env, "SEALCAST_APP_SECRET=s3cr3t\nSEALCAST_PAYLOAD_KEY=a2V5");
        let j: serde_json::Value =
            serde_json::from_str(&keygen_output(KeyFormat::Json, "s3cr3t", "a2V5")).unwrap();
        assert_eq!(j, json!({"app_secret": "s3cr3t", "payload_key": "a2V5"}));
        assert!(keygen_output(KeyFormat::Text, "s3cr3t", "a2V5").contains("never to the relay"));
    }
}
