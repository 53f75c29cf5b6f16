//! Minting tokens, for the `sealcast token` command, dev mode, tests and the load tool.
//! Apps mint with their own JWT library; this is the same format.

use serde::Serialize;

use super::{Audience, jwt};

/// The claims of a token to mint.
#[derive(Debug, Clone, Serialize)]
pub struct MintClaims {
    /// App id.
    pub iss: String,
    /// Account id (connect tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Namespace (required for connect tokens, optional for publish tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    /// Token kind.
    pub aud: Audience,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expires at, unix seconds.
    pub exp: i64,
    /// Token id, for revocation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl MintClaims {
    /// A connect token's claims valid from `now` for `ttl_secs`.
    pub fn connect(app: &str, ns: &str, sub: &str, now: i64, ttl_secs: i64) -> Self {
        MintClaims {
            iss: app.into(),
            sub: Some(sub.into()),
            ns: Some(ns.into()),
            aud: Audience::Connect,
            iat: now,
            exp: now + ttl_secs,
            jti: None,
        }
    }

    /// A publish token's claims valid from `now` for `ttl_secs`.
    pub fn publish(app: &str, ns: Option<&str>, now: i64, ttl_secs: i64) -> Self {
        MintClaims {
            iss: app.into(),
            sub: None,
            ns: ns.map(Into::into),
            aud: Audience::Publish,
            iat: now,
            exp: now + ttl_secs,
            jti: None,
        }
    }

    /// Signs with HS512.
    pub fn sign(&self, kid: Option<&str>, secret: &[u8]) -> String {
        jwt::sign(self, kid, secret)
    }
}
