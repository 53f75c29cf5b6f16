//! Minting tokens, for the `sealcast token` command, dev mode, tests and the load tool.
//! Apps mint with their own JWT library; this is the same format.

use serde::Serialize;

use super::{Audience, TokenPolicy, jwt};
use crate::protocol::{AppId, NameError, Namespace};

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

    /// Checks the claims against the rules a relay with `policy` verifies them by, so that
    /// a token is refused when it is minted rather than when a client first uses it.
    pub fn check(&self, kid: Option<&str>, policy: &TokenPolicy) -> Result<(), MintError> {
        AppId::parse(&self.iss).map_err(MintError::Name)?;
        if kid.is_some_and(|k| k.is_empty() || k.len() > 64) {
            return Err(MintError::Kid);
        }
        match (&self.ns, self.aud) {
            (Some(ns), _) => drop(Namespace::parse(ns).map_err(MintError::Name)?),
            (None, Audience::Connect) => return Err(MintError::Missing("ns")),
            (None, Audience::Publish) => {}
        }
        match (&self.sub, self.aud) {
            (Some(sub), _) if sub.is_empty() || sub.len() > 128 => {
                return Err(MintError::Length("sub"));
            }
            (None, Audience::Connect) => return Err(MintError::Missing("sub")),
            _ => {}
        }
        if self
            .jti
            .as_ref()
            .is_some_and(|j| j.is_empty() || j.len() > 128)
        {
            return Err(MintError::Length("jti"));
        }
        let lifetime = self.exp.saturating_sub(self.iat);
        if lifetime <= 0 {
            return Err(MintError::NotPositive);
        }
        let (max, key) = match self.aud {
            Audience::Connect => (policy.max_connect_lifetime, "tokens.max_connect_lifetime"),
            Audience::Publish => (policy.max_publish_lifetime, "tokens.max_publish_lifetime"),
        };
        let max_secs = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        if lifetime > max_secs {
            return Err(MintError::Lifetime {
                aud: self.aud.as_str(),
                lifetime: short_duration(lifetime.unsigned_abs()),
                max: short_duration(max.as_secs()),
                key,
            });
        }
        Ok(())
    }
}

/// `90s`, `5m`, `24h`: the units of the config file, in the largest that is exact.
fn short_duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Why claims would be refused by the relay. Each message names the rule and, for the
/// lifetime, the config key that sets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// `iss` or `ns` breaks the name rules.
    #[error("{0}")]
    Name(NameError),
    /// A required claim is missing.
    #[error("a connect token needs {0}")]
    Missing(&'static str),
    /// `sub` or `jti` outside 1 to 128 bytes.
    #[error("{0} must be 1 to 128 bytes")]
    Length(&'static str),
    /// A `kid` outside 1 to 64 bytes (the relay's config refuses such a key id).
    #[error("kid must be 1 to 64 bytes")]
    Kid,
    /// `exp` not after `iat`.
    #[error("the lifetime must be at least one second")]
    NotPositive,
    /// `exp - iat` above the kind's maximum.
    #[error(
        "a {aud} token may live at most {max} ({key}), and this one would live {lifetime}: the relay would refuse it (lifetime_too_long)"
    )]
    Lifetime {
        /// `connect` or `publish`.
        aud: &'static str,
        /// The requested lifetime.
        lifetime: String,
        /// The most allowed.
        max: String,
        /// The config key of the maximum.
        key: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn claims_the_relay_would_refuse_are_refused_at_mint_time() {
        let p = TokenPolicy::default();
        assert_eq!(
            MintClaims::connect("acme", "site/1", "u", NOW, 3600).check(Some("k1"), &p),
            Ok(())
        );
        assert_eq!(
            MintClaims::publish("acme", None, NOW, 300).check(None, &p),
            Ok(())
        );
        let long = MintClaims::connect("acme", "site/1", "u", NOW, 48 * 3600).check(None, &p);
        let msg = long.unwrap_err().to_string();
        assert!(
            msg.contains("24h")
                && msg.contains("tokens.max_connect_lifetime")
                && msg.contains("48h"),
            "{msg}"
        );
        let msg = MintClaims::publish("acme", None, NOW, 3600)
            .check(None, &p)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("5m") && msg.contains("tokens.max_publish_lifetime"),
            "{msg}"
        );
        let bad_ns = MintClaims::connect("acme", "site/1#x", "u", NOW, 60).check(None, &p);
        assert!(bad_ns.unwrap_err().to_string().contains("namespace"));
        let bad_app = MintClaims::publish("ac me", None, NOW, 60).check(None, &p);
        assert!(bad_app.unwrap_err().to_string().contains("app id"));
        let bad_pub_ns = MintClaims::publish("acme", Some("a b"), NOW, 60).check(None, &p);
        assert!(matches!(bad_pub_ns, Err(MintError::Name(_))));
        let empty_sub = MintClaims::connect("acme", "ns", "", NOW, 60).check(None, &p);
        assert_eq!(empty_sub, Err(MintError::Length("sub")));
        let mut jti = MintClaims::connect("acme", "ns", "u", NOW, 60);
        jti.jti = Some("j".repeat(129));
        assert_eq!(jti.check(None, &p), Err(MintError::Length("jti")));
        assert_eq!(
            MintClaims::connect("acme", "ns", "u", NOW, 60).check(Some(""), &p),
            Err(MintError::Kid)
        );
        assert_eq!(
            MintClaims::connect("acme", "ns", "u", NOW, 0).check(None, &p),
            Err(MintError::NotPositive)
        );
        // A lower configured maximum is honoured too.
        let strict = TokenPolicy {
            max_connect_lifetime: Duration::from_secs(600),
            ..p
        };
        assert_eq!(short_duration(90), "90s");
        assert!(
            MintClaims::connect("acme", "ns", "u", NOW, 601)
                .check(None, &strict)
                .is_err()
        );
    }
}
