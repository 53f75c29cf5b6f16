//! Token verification (PROTOCOL.md 2): HS512 JWTs into typed claims.
//!
//! The [`Authenticator`] holds each app's keys, keyed once at start. Verification order
//! matters: the header and the `iss` claim are read first (to find the key), the MAC is
//! checked next, and only a token whose MAC is good has its time and audience claims
//! judged, so an unsigned token never learns which claim would have failed.

pub mod jwt;
pub mod mint;
pub mod secret;

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use hmac::Mac;
use serde::{Deserialize, Serialize};

use crate::protocol::{AppId, Namespace};
pub use jwt::{HmacSha512, MAX_TOKEN_BYTES, sign, sign_with_header};
pub use mint::MintClaims;
pub use secret::Secret;

/// Which kind of token a request needs (`aud`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// A browser session.
    Connect,
    /// A backend publish request.
    Publish,
}

impl Audience {
    /// The `aud` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Connect => "connect",
            Audience::Publish => "publish",
        }
    }
}

/// Why a token was refused. Each variant maps to close code 4001 (or 4002 for
/// [`TokenError::Expired`]) on a socket and to 401 over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// More than 4096 bytes.
    #[error("token too large")]
    TooLarge,
    /// Not three base64url parts of JSON.
    #[error("token malformed")]
    Malformed,
    /// `alg` other than HS512.
    #[error("token algorithm not accepted")]
    UnsupportedAlgorithm,
    /// `typ` other than JWT.
    #[error("token type not accepted")]
    BadType,
    /// `iss` is no configured app.
    #[error("unknown app")]
    UnknownApp,
    /// `kid` is not a key of the app.
    #[error("unknown key id")]
    UnknownKey,
    /// The MAC does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is absent.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// A claim has a wrong value or shape.
    #[error("invalid claim {0}")]
    InvalidClaim(&'static str),
    /// `aud` is not the kind this request needs.
    #[error("wrong audience")]
    WrongAudience,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp - iat` exceeds the kind's maximum lifetime.
    #[error("token lifetime too long")]
    LifetimeTooLong,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// The header has `crit`: it names extensions this relay does not implement.
    #[error("token header has crit")]
    CriticalHeader,
}

impl TokenError {
    /// A stable label for metrics and audit records.
    pub fn label(self) -> &'static str {
        match self {
            TokenError::TooLarge => "too_large",
            TokenError::Malformed => "malformed",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::BadType => "bad_type",
            TokenError::UnknownApp => "unknown_app",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::InvalidClaim(_) => "invalid_claim",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Expired => "expired",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::LifetimeTooLong => "lifetime_too_long",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::CriticalHeader => "critical_header",
        }
    }
}

/// A refusal with what could be learnt about the token, for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub reason: TokenError,
    /// The app, when `iss` named a configured one.
    pub app: Option<AppId>,
    /// The `kid` of the header, when the app had it.
    pub kid: Option<String>,
}

impl From<TokenError> for Rejection {
    fn from(reason: TokenError) -> Self {
        Rejection {
            reason,
            app: None,
            kid: None,
        }
    }
}

/// A verified connect token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectClaims {
    /// `iss`.
    pub app: AppId,
    /// `sub`: the user's account id, for audit only.
    pub sub: String,
    /// `ns`: the one namespace granted.
    pub ns: Namespace,
    /// `iat`.
    pub iat: i64,
    /// `exp`.
    pub exp: i64,
    /// `jti`, if any.
    pub jti: Option<String>,
    /// The key id that verified it (named by the header, or found by trying each key).
    pub kid: Option<String>,
    /// A fingerprint of the key that verified it (its id and secret): a reload that removes
    /// that key or replaces its secret closes the session ([`Authenticator::still_has`]).
    pub key_fingerprint: u64,
}

/// A verified publish token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishClaims {
    /// `iss`.
    pub app: AppId,
    /// `ns`, if the token is limited to one namespace.
    pub ns: Option<Namespace>,
    /// `exp`.
    pub exp: i64,
    /// `jti`, if any.
    pub jti: Option<String>,
}

/// Time rules for tokens (PROTOCOL.md 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Clock-skew allowance on `exp` and `iat` (at most 30 s).
    pub leeway: Duration,
    /// Longest `exp - iat` of a connect token (at most 24 h).
    pub max_connect_lifetime: Duration,
    /// Longest `exp - iat` of a publish token (at most 300 s).
    pub max_publish_lifetime: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            leeway: Duration::from_secs(30),
            max_connect_lifetime: Duration::from_secs(24 * 3600),
            max_publish_lifetime: Duration::from_secs(300),
        }
    }
}

/// One signing key of an app.
struct Key {
    kid: Option<String>,
    mac: HmacSha512,
    fingerprint: u64,
}

/// A fingerprint of a key: the first 8 bytes of SHA-256 over a domain label, the key id and
/// the secret. It identifies a key across reloads; it is never logged or sent.
fn fingerprint(kid: Option<&str>, secret: &Secret) -> u64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"sealcast key fingerprint\0");
    h.update(kid.unwrap_or("").as_bytes());
    h.update([0]);
    h.update(secret.expose());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Verifies tokens against the configured apps.
pub struct Authenticator {
    apps: HashMap<AppId, Vec<Key>>,
    policy: TokenPolicy,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("apps", &self.apps.keys().collect::<Vec<_>>())
            .field("policy", &self.policy)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawClaims<'a> {
    #[serde(default, borrow)]
    iss: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    sub: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    ns: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    aud: Option<Cow<'a, str>>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default, borrow)]
    jti: Option<Cow<'a, str>>,
    #[serde(default)]
    nbf: Option<i64>,
}

/// The verified parts common to both token kinds.
struct Verified {
    app: AppId,
    kid: Option<String>,
    fingerprint: u64,
    sub: Option<String>,
    ns: Option<String>,
    iat: i64,
    exp: i64,
    jti: Option<String>,
}

impl Authenticator {
    /// Builds from `(app, [(kid, secret)])`. Keys are keyed once here.
    pub fn new<'a>(
        apps: impl IntoIterator<Item = (AppId, Vec<(Option<String>, &'a Secret)>)>,
        policy: TokenPolicy,
    ) -> Self {
        let apps = apps
            .into_iter()
            .map(|(id, keys)| {
                let keys = keys
                    .into_iter()
                    .map(|(kid, secret)| Key {
                        fingerprint: fingerprint(kid.as_deref(), secret),
                        kid,
                        mac: HmacSha512::new_from_slice(secret.expose())
                            .expect("HMAC takes any key length"),
                    })
                    .collect();
                (id, keys)
            })
            .collect();
        Authenticator { apps, policy }
    }

    /// Whether `app` still has the key with this fingerprint: the same id and the same
    /// secret. False once the key was removed or its secret replaced.
    pub fn still_has(&self, app: &AppId, key_fingerprint: u64) -> bool {
        self.apps
            .get(app)
            .is_some_and(|keys| keys.iter().any(|k| k.fingerprint == key_fingerprint))
    }

    /// Verifies a connect token at unix time `now`.
    pub fn verify_connect(&self, token: &str, now: i64) -> Result<ConnectClaims, Rejection> {
        let v = self.verify(token, Audience::Connect, now)?;
        let reject = |reason| Rejection {
            reason,
            app: Some(v.app.clone()),
            kid: v.kid.clone(),
        };
        let sub = v
            .sub
            .clone()
            .ok_or_else(|| reject(TokenError::MissingClaim("sub")))?;
        if sub.is_empty() || sub.len() > 128 {
            return Err(reject(TokenError::InvalidClaim("sub")));
        }
        let ns =
            v.ns.as_deref()
                .ok_or_else(|| reject(TokenError::MissingClaim("ns")))?;
        let ns = Namespace::parse(ns).map_err(|_| reject(TokenError::InvalidClaim("ns")))?;
        Ok(ConnectClaims {
            app: v.app,
            sub,
            ns,
            iat: v.iat,
            exp: v.exp,
            jti: v.jti,
            kid: v.kid,
            key_fingerprint: v.fingerprint,
        })
    }

    /// Verifies a publish token at unix time `now`.
    pub fn verify_publish(&self, token: &str, now: i64) -> Result<PublishClaims, Rejection> {
        let v = self.verify(token, Audience::Publish, now)?;
        let ns = match v.ns.as_deref() {
            None => None,
            Some(ns) => Some(Namespace::parse(ns).map_err(|_| Rejection {
                reason: TokenError::InvalidClaim("ns"),
                app: Some(v.app.clone()),
                kid: v.kid.clone(),
            })?),
        };
        Ok(PublishClaims {
            app: v.app,
            ns,
            exp: v.exp,
            jti: v.jti,
        })
    }

    fn verify(&self, token: &str, aud: Audience, now: i64) -> Result<Verified, Rejection> {
        let parsed = jwt::split(token)?;
        let header: jwt::Header<'_> =
            serde_json::from_slice(&parsed.header_json).map_err(|_| TokenError::Malformed)?;
        if header.alg != "HS512" {
            return Err(TokenError::UnsupportedAlgorithm.into());
        }
        if header.typ.is_some_and(|t| t != "JWT") {
            return Err(TokenError::BadType.into());
        }
        // RFC 7515 4.1.11: a recipient that does not understand a critical extension must
        // refuse the token; this relay implements none.
        if header.crit {
            return Err(TokenError::CriticalHeader.into());
        }
        let claims: RawClaims<'_> =
            serde_json::from_slice(&parsed.claims_json).map_err(|_| TokenError::Malformed)?;
        let iss = claims
            .iss
            .as_deref()
            .ok_or(TokenError::MissingClaim("iss"))?;
        let (app, keys) = AppId::parse(iss)
            .ok()
            .and_then(|a| self.apps.get_key_value(&a))
            .ok_or(TokenError::UnknownApp)?;
        let reject = |reason, kid: Option<String>| Rejection {
            reason,
            app: Some(app.clone()),
            kid,
        };
        let kid = header.kid.map(Cow::into_owned);
        let mut matched_kid = None;
        let verified_by = match &kid {
            Some(k) => {
                let key = keys
                    .iter()
                    .find(|key| key.kid.as_deref() == Some(k.as_str()))
                    .ok_or_else(|| reject(TokenError::UnknownKey, None))?;
                jwt::mac_matches(&key.mac, parsed.signing_input, &parsed.signature)
                    .then_some(key.fingerprint)
            }
            // Without a kid every active key is tried; each comparison is constant-time.
            None => keys
                .iter()
                .find(|key| jwt::mac_matches(&key.mac, parsed.signing_input, &parsed.signature))
                .map(|key| {
                    // Remember which key verified it, for key removal on reload.
                    matched_kid = key.kid.clone();
                    key.fingerprint
                }),
        };
        let Some(fingerprint) = verified_by else {
            return Err(reject(TokenError::BadSignature, kid));
        };
        let kid = kid.or(matched_kid);
        let fail = |reason| reject(reason, kid.clone());
        match claims.aud.as_deref() {
            None => return Err(fail(TokenError::MissingClaim("aud"))),
            Some(a) if a != aud.as_str() => return Err(fail(TokenError::WrongAudience)),
            Some(_) => {}
        }
        let exp = claims
            .exp
            .ok_or_else(|| fail(TokenError::MissingClaim("exp")))?;
        let iat = claims
            .iat
            .ok_or_else(|| fail(TokenError::MissingClaim("iat")))?;
        if exp <= iat {
            return Err(fail(TokenError::InvalidClaim("exp")));
        }
        let max = match aud {
            Audience::Connect => self.policy.max_connect_lifetime,
            Audience::Publish => self.policy.max_publish_lifetime,
        };
        if exp.saturating_sub(iat) > secs(max) {
            return Err(fail(TokenError::LifetimeTooLong));
        }
        let leeway = secs(self.policy.leeway);
        if now >= exp.saturating_add(leeway) {
            return Err(fail(TokenError::Expired));
        }
        if iat > now.saturating_add(leeway) {
            return Err(fail(TokenError::IssuedInFuture));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            return Err(fail(TokenError::NotYetValid));
        }
        if claims
            .jti
            .as_ref()
            .is_some_and(|j| j.is_empty() || j.len() > 128)
        {
            return Err(fail(TokenError::InvalidClaim("jti")));
        }
        Ok(Verified {
            app: app.clone(),
            kid,
            fingerprint,
            sub: claims.sub.map(Cow::into_owned),
            ns: claims.ns.map(Cow::into_owned),
            iat,
            exp,
            jti: claims.jti.map(Cow::into_owned),
        })
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The current unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(secs)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
