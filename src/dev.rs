//! `sealcast serve --dev`: one app with a secret that is random for this run, and a
//! banner with everything needed to try the relay in five minutes.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::auth::{MintClaims, Secret, unix_now};
use crate::config::{AppConfig, Config, KeyConfig};
use crate::payload;
use crate::protocol::AppId;

/// The dev app's id.
pub const DEV_APP: &str = "dev";
/// The dev key's id.
pub const DEV_KID: &str = "dev";
/// The namespace of the printed connect token.
pub const DEV_NS: &str = "dev/dashboard-1";
/// The channel of the printed sample.
pub const DEV_CHANNEL: &str = "dev/dashboard-1#gadget-1";

/// Dev mode's secrets, random per run.
#[derive(Debug)]
pub struct DevSecrets {
    /// The dev app's signing secret.
    pub app_secret: Secret,
    /// The payload key the sample is encrypted with (the relay never sees it in real use).
    pub payload_key: [u8; 32],
}

/// A fresh secret as printable text (64 base64url characters from 48 random bytes).
pub fn fresh_secret_text() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 48]>())
}

/// The dev configuration and its secrets.
pub fn config(listen: SocketAddr) -> (Config, DevSecrets) {
    let app_secret = Secret::new(fresh_secret_text().into_bytes());
    let app = AppConfig {
        id: AppId::parse(DEV_APP).expect("valid app id"),
        keys: vec![KeyConfig {
            kid: DEV_KID.into(),
            secret: app_secret.clone(),
        }],
        quota: Default::default(),
    };
    let secrets = DevSecrets {
        app_secret,
        payload_key: payload::generate_key(),
    };
    let mut config = Config::with_apps(listen, vec![app]);
    config.dev = true;
    // Dev mode has one local app and no admin listener: show the metrics where they are
    // easy to find.
    config.http.public_metrics = true;
    (config, secrets)
}

/// The banner printed once the dev relay listens.
pub fn banner(addr: SocketAddr, s: &DevSecrets) -> String {
    let now = unix_now();
    let secret = s.app_secret.expose();
    let connect =
        MintClaims::connect(DEV_APP, DEV_NS, "dev-user", now, 3600).sign(Some(DEV_KID), secret);
    let publish = MintClaims::publish(DEV_APP, None, now, 300).sign(Some(DEV_KID), secret);
    let plaintext = br#"{"hello":"from the dev backend"}"#;
    let data =
        payload::encrypt(&s.payload_key, DEV_CHANNEL, "Hello", plaintext).unwrap_or_default();
    let key_b64 = STANDARD.encode(s.payload_key);
    let secret_text = String::from_utf8_lossy(secret);
    format!(
        "\
sealcast dev mode: one app {DEV_APP:?} (kid {DEV_KID:?}) whose secret is random for this run.
Dev mode is for trying things out; never expose it.

1. Connect a WebSocket client to ws://{addr}/v1/ws and send, as the first frame:
   {{\"type\":\"connect\",\"token\":\"{connect}\"}}
   then:
   {{\"type\":\"subscribe\",\"id\":1,\"channel\":\"{DEV_CHANNEL}\"}}
   (connect token: namespace {DEV_NS:?}, user \"dev-user\", valid 1 h)

2. Publish an encrypted sample (publish token valid 5 min):
   curl -sS -X POST http://{addr}/v1/publish \\
     -H 'Authorization: Bearer {publish}' \\
     -H 'Content-Type: application/json' \\
     -d '{{\"channel\":\"{DEV_CHANNEL}\",\"event\":\"Hello\",\"data\":\"{data}\"}}'

3. Decrypt what the subscriber receives (AES-256-GCM, associated data = channel + \"\\n\" + event):
   export SEALCAST_PAYLOAD_KEY={key_b64}
   sealcast decrypt --key-env SEALCAST_PAYLOAD_KEY --channel '{DEV_CHANNEL}' --event Hello '<data>'

Mint more tokens with:
   export SEALCAST_DEV_SECRET='{secret_text}'
   sealcast token publish --app {DEV_APP} --kid {DEV_KID} --ttl 300s --secret-env SEALCAST_DEV_SECRET
   sealcast token connect --app {DEV_APP} --kid {DEV_KID} --ns {DEV_NS} --sub dev-user --ttl 1h --secret-env SEALCAST_DEV_SECRET
"
    )
}
