//! HS512 JWT, compact form: the parts of RFC 7515/7519 that PROTOCOL.md 2 uses, and no
//! more. Written on `hmac` + `sha2` rather than a general JWT crate so that the algorithm
//! is pinned by construction (there is no code path for any other `alg`), the MAC check is
//! `hmac`'s constant-time `verify_slice`, and each refusal has a typed reason for the
//! audit log.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha512;

use super::TokenError;

/// HMAC-SHA512 keyed with one app secret. Keyed once at load; cloned per verification so
/// the key schedule is not recomputed for every token.
pub type HmacSha512 = Hmac<Sha512>;

/// The most bytes a token may have (PROTOCOL.md 2.1).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The JOSE header fields we read.
#[derive(Debug, Deserialize)]
pub(crate) struct Header<'a> {
    pub(crate) alg: &'a str,
    #[serde(default)]
    pub(crate) typ: Option<&'a str>,
    #[serde(default, borrow)]
    pub(crate) kid: Option<std::borrow::Cow<'a, str>>,
    /// Whether the header has `crit` at all (whatever its value).
    #[serde(default, deserialize_with = "present")]
    pub(crate) crit: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// A token split into its parts, base64url-decoded, signature not yet checked.
pub(crate) struct Parsed<'a> {
    pub(crate) header_json: Vec<u8>,
    pub(crate) claims_json: Vec<u8>,
    pub(crate) signature: Vec<u8>,
    pub(crate) signing_input: &'a [u8],
}

/// Splits and decodes. Refuses anything that is not three non-empty unpadded base64url
/// parts within the size limit.
pub(crate) fn split(token: &str) -> Result<Parsed<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if h.is_empty() || c.is_empty() || s.is_empty() {
        return Err(TokenError::Malformed);
    }
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| TokenError::Malformed);
    Ok(Parsed {
        header_json: decode(h)?,
        claims_json: decode(c)?,
        signature: decode(s)?,
        signing_input: &token.as_bytes()[..h.len() + 1 + c.len()],
    })
}

/// Checks the MAC in constant time.
pub(crate) fn mac_matches(key: &HmacSha512, signing_input: &[u8], signature: &[u8]) -> bool {
    let mut mac = key.clone();
    mac.update(signing_input);
    mac.verify_slice(signature).is_ok()
}

#[derive(Serialize)]
struct OutHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

/// Signs `claims` as an HS512 JWT. Used by the CLI, dev mode, tests and benches; apps use
/// their own JWT library.
pub fn sign<C: Serialize>(claims: &C, kid: Option<&str>, secret: &[u8]) -> String {
    let header = serde_json::to_vec(&OutHeader {
        alg: "HS512",
        typ: "JWT",
        kid,
    })
    .unwrap_or_default();
    let body = serde_json::to_vec(claims).unwrap_or_default();
    let mut out = URL_SAFE_NO_PAD.encode(header);
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(body));
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = HmacSha512::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(out.as_bytes());
    let sig = mac.finalize().into_bytes();
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig));
    out
}

/// Signs with an arbitrary header, for tests that need a wrong `alg` or `typ`.
pub fn sign_with_header(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    secret: &[u8],
) -> String {
    let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut mac = HmacSha512::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(out.as_bytes());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    out
}
