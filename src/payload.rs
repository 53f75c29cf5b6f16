//! Payload encryption of PROTOCOL.md 5, as the apps and the SDK do it. The relay never
//! calls this on its data path; it exists for dev mode, the CLI and tests (apps use an
//! SDK: `clients/rust`, `clients/js`, `clients/python`).
//!
//! `data = base64(nonce(12) || ciphertext || tag(16))`, AES-256-GCM, associated data the
//! UTF-8 bytes of `channel + "\n" + event`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A payload key is 32 bytes.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// Why a payload could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The key is not 32 bytes.
    #[error("payload key must be 32 bytes")]
    BadKey,
    /// Not standard base64, or shorter than nonce and tag.
    #[error("data is not base64 of nonce, ciphertext and tag")]
    Malformed,
    /// The tag did not verify: wrong key, channel, event, or tampered data.
    #[error("payload failed authentication")]
    Authentication,
}

fn aad(channel: &str, event: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(channel.len() + 1 + event.len());
    a.extend_from_slice(channel.as_bytes());
    a.push(b'\n');
    a.extend_from_slice(event.as_bytes());
    a
}

/// Encrypts with a fresh random nonce.
pub fn encrypt(
    key: &[u8],
    channel: &str,
    event: &str,
    plaintext: &[u8],
) -> Result<String, PayloadError> {
    encrypt_with_nonce(
        key,
        rand::random::<[u8; NONCE_BYTES]>(),
        channel,
        event,
        plaintext,
    )
}

/// Encrypts with a given nonce: for test vectors only. Never reuse a nonce with a key.
pub fn encrypt_with_nonce(
    key: &[u8],
    nonce: [u8; NONCE_BYTES],
    channel: &str,
    event: &str,
    plaintext: &[u8],
) -> Result<String, PayloadError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| PayloadError::BadKey)?;
    let aad = aad(channel, event);
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| PayloadError::Malformed)?;
    let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(STANDARD.encode(out))
}

/// Decrypts and authenticates.
pub fn decrypt(
    key: &[u8],
    channel: &str,
    event: &str,
    data: &str,
) -> Result<Vec<u8>, PayloadError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| PayloadError::BadKey)?;
    let raw = STANDARD.decode(data).map_err(|_| PayloadError::Malformed)?;
    if raw.len() < NONCE_BYTES + 16 {
        return Err(PayloadError::Malformed);
    }
    let (nonce, sealed) = raw.split_at(NONCE_BYTES);
    let aad = aad(channel, event);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &aad,
            },
        )
        .map_err(|_| PayloadError::Authentication)
}

/// A fresh random payload key.
pub fn generate_key() -> [u8; KEY_BYTES] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding_to_channel_and_event() {
        let key = generate_key();
        let data = encrypt(&key, "ns#t", "Ev", br#"{"a":1}"#).unwrap();
        assert_eq!(decrypt(&key, "ns#t", "Ev", &data).unwrap(), br#"{"a":1}"#);
        assert_eq!(
            decrypt(&key, "ns#u", "Ev", &data),
            Err(PayloadError::Authentication)
        );
        assert_eq!(
            decrypt(&key, "ns#t", "Ew", &data),
            Err(PayloadError::Authentication)
        );
        assert_eq!(
            decrypt(&generate_key(), "ns#t", "Ev", &data),
            Err(PayloadError::Authentication)
        );
        assert_eq!(
            decrypt(&key, "ns#t", "Ev", "AAAA"),
            Err(PayloadError::Malformed)
        );
        assert_eq!(
            encrypt(&key[..16], "a#b", "e", b"x"),
            Err(PayloadError::BadKey)
        );
    }
}
