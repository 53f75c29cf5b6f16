//! # sealcast-client
//!
//! The Rust SDK of the sealcast relay: what an app backend needs to
//! mint tokens, encrypt payloads and publish them, and a subscriber that keeps a WebSocket
//! open, recovers what it missed and decrypts what arrives.
//!
//! - [`token`]: HS512 connect and publish tokens ([`Signer`]), refused at mint time when the
//!   relay would refuse them, naming the rule.
//! - [`payload`]: the AES-256-GCM envelope bound to `channel + "\n" + event` ([`PayloadKey`],
//!   [`KeyRing`] for rotation).
//! - [`publish`]: `POST /v1/publish`, `/v1/publish/batch` and `/v1/revoke` with idempotent
//!   retries, full-jitter backoff and `Retry-After` ([`Publisher`]).
//! - [`subscriber`]: reconnect with backoff per close code, `since` recovery with no gap
//!   and no duplicate, `recovered:false` callback, in-band refresh ([`Subscriber`]).
//! - [`frames`]: the WebSocket frames of the protocol as types ([`frames::ClientFrame`],
//!   [`frames::ServerFrame`]).
//! - [`names`]: the name rules of channels, namespaces, events and app ids.
//! - [`wire`]: the protocol frame by frame, without retries or decryption, for tests of a
//!   relay and for tools (the relay's black-box tests and its load generator use it).
//!
//! ```
//! use sealcast_client::{PayloadKey, Signer, payload};
//! let signer = Signer::new("acme", Some("k1"), "an-app-secret-of-at-least-32-bytes-0123")?;
//! let token = signer.connect_token("site/1/dashboard/7", "user-42", 3600)?;
//! let key = PayloadKey::generate();
//! let data = payload::encrypt("site/1/dashboard/7#absences", "AddAbsence", &serde_json::json!({"who": "ana"}), &key)?;
//! # let _ = (token, data);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod frames;
pub mod names;
pub mod payload;
pub mod publish;
pub mod subscriber;
pub mod token;
pub mod wire;

pub use payload::{KeyRing, PayloadError, PayloadKey};
pub use publish::{Error, PublishResult, Publisher, RetryPolicy};
pub use subscriber::{Event, Subscriber, Subscription};
pub use token::{MintError, Signer};
