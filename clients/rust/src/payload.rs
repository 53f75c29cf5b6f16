//! Payload encryption (PROTOCOL.md 3): AES-256-GCM with a fresh 12-byte nonce,
//! `data = base64(nonce || ciphertext || tag)`, associated data the UTF-8 bytes of
//! `channel + "\n" + event`, so a ciphertext cannot be replayed on another channel or as
//! another event. The relay never holds the key.
//!
//! ```
//! use sealcast_client::payload::{PayloadKey, encrypt, decrypt};
//! let key = PayloadKey::generate();
//! let data = encrypt("site/1#absences", "AddAbsence", &serde_json::json!({"who": "ana"}), &key)?;
//! let back: serde_json::Value = decrypt("site/1#absences", "AddAbsence", &data, &key)?;
//! assert_eq!(back["who"], "ana");
//! // Bound to its channel and event:
//! assert!(decrypt::<serde_json::Value>("site/1#other", "AddAbsence", &data, &key).is_err());
//! # Ok::<(), sealcast_client::payload::PayloadError>(())
//! ```

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// A payload key is 32 bytes.
pub const KEY_BYTES: usize = 32;
/// The nonce that starts every `data`.
pub const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

/// Why a payload could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The key is not 32 bytes (or not standard base64 of 32 bytes).
    #[error("a payload key must be 32 bytes (or their standard base64)")]
    BadKey,
    /// A key ring without any key.
    #[error("a key ring needs at least one key")]
    EmptyRing,
    /// `data` is not standard base64, or shorter than nonce and tag.
    #[error("data is not base64 of nonce, ciphertext and tag")]
    Malformed,
    /// The tag did not verify with any key: wrong key, channel or event, or tampered data.
    #[error("payload failed authentication")]
    Authentication,
    /// The payload could not be written as JSON, or the plaintext is not the JSON expected.
    #[error("payload JSON: {0}")]
    Json(String),
}

/// A 32-byte AES-256-GCM payload key: zeroized on drop, never printed.
#[derive(Clone)]
pub struct PayloadKey(Zeroizing<[u8; KEY_BYTES]>);

impl fmt::Debug for PayloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PayloadKey(<redacted>)")
    }
}

impl PayloadKey {
    /// The key of these 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<PayloadKey, PayloadError> {
        let raw: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| PayloadError::BadKey)?;
        Ok(PayloadKey(Zeroizing::new(raw)))
    }

    /// The key whose standard base64 (as `sealcast keygen` prints it) is `b64`.
    pub fn from_base64(b64: &str) -> Result<PayloadKey, PayloadError> {
        let raw = Zeroizing::new(
            STANDARD
                .decode(b64.trim())
                .map_err(|_| PayloadError::BadKey)?,
        );
        PayloadKey::from_bytes(&raw)
    }

    /// A fresh random key.
    pub fn generate() -> PayloadKey {
        PayloadKey(Zeroizing::new(rand::random()))
    }

    /// The key's bytes (for storing it; keep them secret).
    pub fn expose(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&self.0[..]).expect("32-byte key")
    }
}

fn aad(channel: &str, event: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(channel.len() + 1 + event.len());
    a.extend_from_slice(channel.as_bytes());
    a.push(b'\n');
    a.extend_from_slice(event.as_bytes());
    a
}

/// Encrypts `payload` (any JSON value) for `channel` and `event`: the `data` to publish.
pub fn encrypt<T: Serialize + ?Sized>(
    channel: &str,
    event: &str,
    payload: &T,
    key: &PayloadKey,
) -> Result<String, PayloadError> {
    let text =
        Zeroizing::new(serde_json::to_vec(payload).map_err(|e| PayloadError::Json(e.to_string()))?);
    Ok(encrypt_bytes(channel, event, &text, key))
}

/// Encrypts plaintext bytes (normally UTF-8 JSON) with a fresh random nonce.
pub fn encrypt_bytes(channel: &str, event: &str, plaintext: &[u8], key: &PayloadKey) -> String {
    encrypt_bytes_with_nonce(channel, event, plaintext, key, rand::random())
}

/// Encrypts with a given nonce: only for test vectors. Never use a nonce twice with a key.
pub fn encrypt_bytes_with_nonce(
    channel: &str,
    event: &str,
    plaintext: &[u8],
    key: &PayloadKey,
    nonce: [u8; NONCE_BYTES],
) -> String {
    let aad = aad(channel, event);
    let sealed = key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("AES-GCM seals any message under 64 GiB");
    let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    STANDARD.encode(out)
}

/// Decrypts and authenticates `data`, returning the plaintext bytes.
pub fn decrypt_bytes(
    channel: &str,
    event: &str,
    data: &str,
    key: &PayloadKey,
) -> Result<Vec<u8>, PayloadError> {
    let raw = STANDARD.decode(data).map_err(|_| PayloadError::Malformed)?;
    open(&raw, &aad(channel, event), key)
}

fn open(raw: &[u8], aad: &[u8], key: &PayloadKey) -> Result<Vec<u8>, PayloadError> {
    if raw.len() < NONCE_BYTES + TAG_BYTES {
        return Err(PayloadError::Malformed);
    }
    let (nonce, sealed) = raw.split_at(NONCE_BYTES);
    key.cipher()
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map_err(|_| PayloadError::Authentication)
}

/// Decrypts `data` and parses its plaintext as JSON into `T`.
pub fn decrypt<T: DeserializeOwned>(
    channel: &str,
    event: &str,
    data: &str,
    key: &PayloadKey,
) -> Result<T, PayloadError> {
    let text = Zeroizing::new(decrypt_bytes(channel, event, data, key)?);
    serde_json::from_slice(&text).map_err(|e| PayloadError::Json(e.to_string()))
}

/// Payload keys tried in order (key rotation: the new key first, the old one while
/// publications made with it may still arrive). The first key encrypts.
///
/// ```
/// use sealcast_client::payload::{KeyRing, PayloadKey, encrypt_bytes};
/// let (old, new) = (PayloadKey::generate(), PayloadKey::generate());
/// let data = encrypt_bytes("ns#t", "Ev", b"{}", &old);
/// let ring = KeyRing::new([new, old])?;
/// assert_eq!(ring.decrypt_bytes("ns#t", "Ev", &data)?, b"{}");
/// # Ok::<(), sealcast_client::payload::PayloadError>(())
/// ```
#[derive(Debug, Clone)]
pub struct KeyRing(Vec<PayloadKey>);

impl KeyRing {
    /// A ring of at least one key.
    pub fn new(keys: impl IntoIterator<Item = PayloadKey>) -> Result<KeyRing, PayloadError> {
        let keys: Vec<_> = keys.into_iter().collect();
        if keys.is_empty() {
            return Err(PayloadError::EmptyRing);
        }
        Ok(KeyRing(keys))
    }

    /// The key that encrypts: the first.
    pub fn primary(&self) -> &PayloadKey {
        &self.0[0]
    }

    /// Decrypts with the first key that authenticates `data`.
    pub fn decrypt_bytes(
        &self,
        channel: &str,
        event: &str,
        data: &str,
    ) -> Result<Vec<u8>, PayloadError> {
        let raw = STANDARD.decode(data).map_err(|_| PayloadError::Malformed)?;
        let aad = aad(channel, event);
        let mut last = PayloadError::Authentication;
        for key in &self.0 {
            match open(&raw, &aad, key) {
                Ok(p) => return Ok(p),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl From<PayloadKey> for KeyRing {
    fn from(key: PayloadKey) -> Self {
        KeyRing(vec![key])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_bound_to_channel_and_event() {
        let key = PayloadKey::generate();
        let data = encrypt_bytes("ns#t", "Ev", br#"{"a":1}"#, &key);
        assert_eq!(
            decrypt_bytes("ns#t", "Ev", &data, &key).unwrap(),
            br#"{"a":1}"#
        );
        for (c, e) in [("ns#u", "Ev"), ("ns#t", "Ew"), ("ns#t\nEv", "")] {
            assert_eq!(
                decrypt_bytes(c, e, &data, &key),
                Err(PayloadError::Authentication)
            );
        }
        assert_eq!(
            decrypt_bytes("ns#t", "Ev", &data, &PayloadKey::generate()),
            Err(PayloadError::Authentication)
        );
        assert_eq!(
            decrypt_bytes("ns#t", "Ev", "AAAA", &key),
            Err(PayloadError::Malformed)
        );
        assert_eq!(
            decrypt_bytes("ns#t", "Ev", "not base64!", &key),
            Err(PayloadError::Malformed)
        );
        assert!(matches!(
            decrypt::<u32>("ns#t", "Ev", &data, &key),
            Err(PayloadError::Json(_))
        ));
    }

    #[test]
    fn keys_are_32_bytes_and_never_printed() {
        assert_eq!(
            PayloadKey::from_bytes(&[1; 16]).unwrap_err(),
            PayloadError::BadKey
        );
        assert_eq!(
            PayloadKey::from_base64("AAAA").unwrap_err(),
            PayloadError::BadKey
        );
        let k = PayloadKey::from_bytes(&[9; 32]).unwrap();
        assert_eq!(
            PayloadKey::from_base64(&STANDARD.encode([9u8; 32]))
                .unwrap()
                .expose(),
            k.expose()
        );
        assert!(!format!("{k:?}").contains('9'));
        assert_eq!(
            KeyRing::new(Vec::new()).unwrap_err(),
            PayloadError::EmptyRing
        );
    }

    #[test]
    fn a_ring_tries_every_key() {
        let (a, b) = (PayloadKey::generate(), PayloadKey::generate());
        let data = encrypt_bytes("n#t", "E", b"x", &b);
        let ring = KeyRing::new([a.clone(), b]).unwrap();
        assert_eq!(ring.decrypt_bytes("n#t", "E", &data).unwrap(), b"x");
        assert_eq!(
            KeyRing::from(a).decrypt_bytes("n#t", "E", &data),
            Err(PayloadError::Authentication)
        );
    }
}
