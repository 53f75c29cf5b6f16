//! Minting HS512 connect and publish tokens (PROTOCOL.md 2), refusing at mint time what the
//! relay would refuse at verify time, naming the rule.
//!
//! The JSON of the claims is written in a fixed order (`iss`, `sub`, `ns`, `aud`, `iat`,
//! `exp`, `jti`) and the header is `{"alg":"HS512","typ":"JWT","kid":...}`, the same bytes
//! as the relay's CLI and the TypeScript and Python SDKs make, so the golden fixtures match.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha512;
use zeroize::Zeroizing;

use crate::names::{self, NameError};

/// The longest lifetime (`exp - iat`) a relay accepts for a connect token, in seconds
/// (24 h; a relay may set `tokens.max_connect_lifetime` lower).
pub const MAX_CONNECT_TTL_SECONDS: u64 = 86_400;
/// The longest lifetime a relay accepts for a publish token, in seconds (5 min; a relay may
/// set `tokens.max_publish_lifetime` lower).
pub const MAX_PUBLISH_TTL_SECONDS: u64 = 300;
/// The shortest signing secret a relay accepts in its `[[apps.keys]]`, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Which kind of token (`aud`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// A browser session (`connect` frame).
    Connect,
    /// A backend request (`POST /v1/publish`, `/v1/publish/batch`, `/v1/revoke`).
    Publish,
}

impl Audience {
    /// `connect` or `publish`.
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Connect => "connect",
            Audience::Publish => "publish",
        }
    }
}

/// Why a token was not minted. Each message names the rule the relay would apply, and for
/// a lifetime the relay setting that bounds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The app id (`iss`) or the namespace (`ns`) breaks the name rules.
    #[error("{0}")]
    Name(#[from] NameError),
    /// A `kid` outside 1 to 64 bytes (the relay's config refuses such a key id).
    #[error("kid must be 1 to 64 bytes")]
    Kid,
    /// The signing secret is shorter than [`MIN_SECRET_BYTES`].
    #[error(
        "a signing secret must be at least 32 bytes (the relay refuses shorter [[apps.keys]] secrets)"
    )]
    SecretTooShort,
    /// A connect token without `sub` or `ns`.
    #[error("a connect token needs {0}")]
    Missing(&'static str),
    /// `sub` or `jti` outside 1 to 128 bytes.
    #[error("{0} must be 1 to 128 bytes")]
    Length(&'static str),
    /// `exp` not after `iat`.
    #[error("the lifetime must be at least one second")]
    NotPositive,
    /// `exp - iat` above the kind's maximum.
    #[error(
        "a {aud} token may live at most {max}s ({key}), and this one would live {lifetime}s: the relay would refuse it (lifetime_too_long)"
    )]
    Lifetime {
        /// `connect` or `publish`.
        aud: &'static str,
        /// The requested lifetime in seconds.
        lifetime: i64,
        /// The most allowed, in seconds.
        max: u64,
        /// The relay setting of the maximum.
        key: &'static str,
    },
}

/// The claims of a token to mint (the issuer is the [`Signer`]'s app).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Token kind.
    pub aud: Audience,
    /// The user's account id (connect tokens: required; audit and revocation only).
    pub sub: Option<String>,
    /// The namespace granted (connect: required; publish: optional restriction).
    pub ns: Option<String>,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expires at, unix seconds.
    pub exp: i64,
    /// Token id, for revocation by `jti`.
    pub jti: Option<String>,
}

impl Claims {
    /// A connect token for `sub` in `ns`, valid from `iat` for `ttl_seconds`.
    pub fn connect(ns: &str, sub: &str, iat: i64, ttl_seconds: u64) -> Claims {
        Claims {
            aud: Audience::Connect,
            sub: Some(sub.into()),
            ns: Some(ns.into()),
            iat,
            exp: iat.saturating_add(i64::try_from(ttl_seconds).unwrap_or(i64::MAX)),
            jti: None,
        }
    }

    /// A publish token (limited to `ns` when given), valid from `iat` for `ttl_seconds`.
    pub fn publish(ns: Option<&str>, iat: i64, ttl_seconds: u64) -> Claims {
        Claims {
            aud: Audience::Publish,
            sub: None,
            ns: ns.map(Into::into),
            iat,
            exp: iat.saturating_add(i64::try_from(ttl_seconds).unwrap_or(i64::MAX)),
            jti: None,
        }
    }

    /// The same claims with a token id.
    pub fn with_jti(mut self, jti: &str) -> Claims {
        self.jti = Some(jti.into());
        self
    }
}

/// The lifetime maxima of the relay the tokens are for (its `[tokens]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// `tokens.max_connect_lifetime`, in seconds.
    pub max_connect_seconds: u64,
    /// `tokens.max_publish_lifetime`, in seconds.
    pub max_publish_seconds: u64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            max_connect_seconds: MAX_CONNECT_TTL_SECONDS,
            max_publish_seconds: MAX_PUBLISH_TTL_SECONDS,
        }
    }
}

/// One app key: mints tokens signed with it.
///
/// ```
/// use sealcast_client::token::Signer;
/// let secret = "an-app-secret-of-at-least-32-bytes-0123";
/// let signer = Signer::new("acme", Some("k1"), secret)?;
/// let connect = signer.connect_token("site/1/dashboard/7", "user-42", 3600)?;
/// let publish = signer.publish_token(None, 60)?;
/// assert_eq!(connect.split('.').count(), 3);
/// // What the relay would refuse is refused here, naming the rule:
/// let err = signer.connect_token("site/1", "user-42", 48 * 3600).unwrap_err();
/// assert!(err.to_string().contains("tokens.max_connect_lifetime"));
/// # let _ = publish;
/// # Ok::<(), sealcast_client::token::MintError>(())
/// ```
#[derive(Clone)]
pub struct Signer {
    app: String,
    kid: Option<String>,
    secret: Zeroizing<Vec<u8>>,
    lifetimes: Lifetimes,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("app", &self.app)
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

#[derive(Serialize)]
struct Body<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ns: Option<&'a str>,
    aud: Audience,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
}

impl Signer {
    /// A signer for `app` with key `kid` (the relay's `[[apps.keys]]`), whose secret is
    /// `secret` (its bytes; at least 32). Refuses an app id, kid or secret the relay would.
    pub fn new(
        app: &str,
        kid: Option<&str>,
        secret: impl AsRef<[u8]>,
    ) -> Result<Signer, MintError> {
        names::check_app(app)?;
        if kid.is_some_and(|k| k.is_empty() || k.len() > 64) {
            return Err(MintError::Kid);
        }
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(MintError::SecretTooShort);
        }
        Ok(Signer {
            app: app.into(),
            kid: kid.map(Into::into),
            secret: Zeroizing::new(secret.to_vec()),
            lifetimes: Lifetimes::default(),
        })
    }

    /// The same signer checking lifetimes against a relay configured with lower maxima.
    pub fn with_lifetimes(mut self, lifetimes: Lifetimes) -> Signer {
        self.lifetimes = lifetimes;
        self
    }

    /// The app id (`iss`).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// A connect token for `sub` in `ns`, valid from now for `ttl_seconds`.
    pub fn connect_token(
        &self,
        ns: &str,
        sub: &str,
        ttl_seconds: u64,
    ) -> Result<String, MintError> {
        self.mint(&Claims::connect(ns, sub, unix_now(), ttl_seconds))
    }

    /// A publish token (limited to `ns` when given), valid from now for `ttl_seconds`.
    pub fn publish_token(&self, ns: Option<&str>, ttl_seconds: u64) -> Result<String, MintError> {
        self.mint(&Claims::publish(ns, unix_now(), ttl_seconds))
    }

    /// Checks `claims` against the relay's rules, then signs them.
    pub fn mint(&self, claims: &Claims) -> Result<String, MintError> {
        self.check(claims)?;
        let header = serde_json::to_vec(&Header {
            alg: "HS512",
            typ: "JWT",
            kid: self.kid.as_deref(),
        })
        .expect("a header serializes");
        let body = serde_json::to_vec(&Body {
            iss: &self.app,
            sub: claims.sub.as_deref(),
            ns: claims.ns.as_deref(),
            aud: claims.aud,
            iat: claims.iat,
            exp: claims.exp,
            jti: claims.jti.as_deref(),
        })
        .expect("claims serialize");
        let mut out = URL_SAFE_NO_PAD.encode(header);
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(body));
        let mut mac =
            Hmac::<Sha512>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
        Ok(out)
    }

    fn check(&self, c: &Claims) -> Result<(), MintError> {
        match (&c.ns, c.aud) {
            (Some(ns), _) => names::check_namespace(ns)?,
            (None, Audience::Connect) => return Err(MintError::Missing("ns")),
            (None, Audience::Publish) => {}
        }
        match (&c.sub, c.aud) {
            (Some(sub), _) if sub.is_empty() || sub.len() > 128 => {
                return Err(MintError::Length("sub"));
            }
            (None, Audience::Connect) => return Err(MintError::Missing("sub")),
            _ => {}
        }
        if c.jti
            .as_ref()
            .is_some_and(|j| j.is_empty() || j.len() > 128)
        {
            return Err(MintError::Length("jti"));
        }
        let lifetime = c.exp.saturating_sub(c.iat);
        if lifetime <= 0 {
            return Err(MintError::NotPositive);
        }
        let (max, key) = match c.aud {
            Audience::Connect => (
                self.lifetimes.max_connect_seconds,
                "tokens.max_connect_lifetime",
            ),
            Audience::Publish => (
                self.lifetimes.max_publish_seconds,
                "tokens.max_publish_lifetime",
            ),
        };
        if lifetime.unsigned_abs() > max {
            return Err(MintError::Lifetime {
                aud: c.aud.as_str(),
                lifetime,
                max,
                key,
            });
        }
        Ok(())
    }
}

/// `iat` and `exp` of a token, read without verifying it (to time a refresh).
pub(crate) fn lifetime_seconds(token: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct Times {
        iat: i64,
        exp: i64,
    }
    let part = token.split('.').nth(1)?;
    let t: Times = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()?;
    (t.exp > t.iat).then(|| t.exp - t.iat)
}

/// The current unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "unit-test-secret-0123456789abcdef-0123";
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn refuses_what_the_relay_refuses_naming_the_rule() {
        let s = Signer::new("acme", Some("k1"), SECRET).unwrap();
        assert!(s.mint(&Claims::connect("site/1", "u", NOW, 86_400)).is_ok());
        assert!(s.mint(&Claims::publish(None, NOW, 300)).is_ok());
        let e = s
            .mint(&Claims::connect("site/1", "u", NOW, 86_401))
            .unwrap_err();
        assert!(
            e.to_string().contains("tokens.max_connect_lifetime")
                && e.to_string().contains("86401s"),
            "{e}"
        );
        let e = s.mint(&Claims::publish(None, NOW, 301)).unwrap_err();
        assert!(e.to_string().contains("tokens.max_publish_lifetime"), "{e}");
        let e = s
            .mint(&Claims::connect("site/1#x", "u", NOW, 60))
            .unwrap_err();
        assert!(e.to_string().contains("namespace"), "{e}");
        assert!(matches!(
            s.mint(&Claims::publish(Some("a b"), NOW, 60)),
            Err(MintError::Name(_))
        ));
        assert_eq!(
            s.mint(&Claims::connect("ns", "", NOW, 60)),
            Err(MintError::Length("sub"))
        );
        assert_eq!(
            s.mint(&Claims::connect("ns", &"u".repeat(129), NOW, 60)),
            Err(MintError::Length("sub"))
        );
        assert_eq!(
            s.mint(&Claims::connect("ns", "u", NOW, 60).with_jti(&"j".repeat(129))),
            Err(MintError::Length("jti"))
        );
        assert_eq!(
            s.mint(&Claims::connect("ns", "u", NOW, 0)),
            Err(MintError::NotPositive)
        );
        let mut no_ns = Claims::connect("ns", "u", NOW, 60);
        no_ns.ns = None;
        assert_eq!(s.mint(&no_ns), Err(MintError::Missing("ns")));
        assert!(matches!(
            Signer::new("ac me", None, SECRET),
            Err(MintError::Name(_))
        ));
        assert_eq!(
            Signer::new("acme", Some(""), SECRET).unwrap_err(),
            MintError::Kid
        );
        assert_eq!(
            Signer::new("acme", None, "short").unwrap_err(),
            MintError::SecretTooShort
        );
        let strict = s.clone().with_lifetimes(Lifetimes {
            max_connect_seconds: 600,
            ..Lifetimes::default()
        });
        assert!(strict.mint(&Claims::connect("ns", "u", NOW, 601)).is_err());
        assert!(!format!("{strict:?}").contains("unit-test-secret"));
    }

    #[test]
    fn lifetime_is_read_back_from_the_token() {
        let s = Signer::new("acme", None, SECRET).unwrap();
        let t = s.mint(&Claims::connect("ns", "u", NOW, 90)).unwrap();
        assert_eq!(lifetime_seconds(&t), Some(90));
        assert_eq!(lifetime_seconds("not.a-token"), None);
    }
}
