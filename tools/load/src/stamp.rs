//! Timestamped payloads: real AES-256-GCM ciphertext (by [`sealcast_client::payload::encrypt_bytes`])
//! whose plaintext starts with the send time, `{"t":<19 digits of unix ns>,"p":"<pad>"}`.
//!
//! Reading the time must not cost a whole decryption per delivery (the load generator,
//! not the relay, would become the bottleneck), so [`Stamp::peek`] uses what GCM is: CTR
//! mode. The first 24 plaintext bytes are the first 24 ciphertext bytes XOR two AES blocks
//! of keystream (counters 2 and 3 after the 12-byte nonce), so the time costs two AES
//! block encryptions and a 48-character base64 decode. A sample of deliveries
//! ([`Stamp::open`]) is decrypted and authenticated in full, and must agree.

use std::time::{SystemTime, UNIX_EPOCH};

use aes_gcm::aes::Aes256;
use aes_gcm::aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use sealcast_client::payload::{self, PayloadKey};

const PREFIX: &[u8] = br#"{"t":"#;
const DIGITS: usize = 19;

/// Unix time in nanoseconds.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Makes and reads timestamped payloads for one key.
#[derive(Clone)]
pub struct Stamp {
    key: PayloadKey,
    block: Aes256,
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stamp")
    }
}

impl Stamp {
    /// For a 32-byte payload key.
    pub fn new(key: [u8; 32]) -> Stamp {
        Stamp {
            key: PayloadKey::from_bytes(&key).expect("32 bytes"),
            block: Aes256::new(GenericArray::from_slice(&key)),
        }
    }

    /// Encrypts a plaintext stamped with `t_ns`, padded so that the base64 `data` is
    /// about `data_len` characters (at least the minimum of 84).
    pub fn seal(&self, channel: &str, event: &str, t_ns: u64, data_len: usize) -> String {
        // data = base64(12 + plaintext + 16); plaintext = {"t":N,"p":"pad"} = 32 + pad.
        let raw = data_len / 4 * 3;
        let pad = raw.saturating_sub(12 + 16 + 32);
        let plaintext = format!(r#"{{"t":{t_ns:019},"p":"{}"}}"#, "x".repeat(pad));
        payload::encrypt_bytes(channel, event, plaintext.as_bytes(), &self.key)
    }

    /// The send time from the first 24 plaintext bytes, without authenticating.
    pub fn peek(&self, data: &[u8]) -> Option<u64> {
        let mut raw = [0u8; 36];
        let n = STANDARD.decode_slice(data.get(..48)?, &mut raw).ok()?;
        if n != 36 {
            return None;
        }
        let mut pt = [0u8; 32];
        for (i, chunk) in pt.chunks_mut(16).enumerate() {
            let mut ctr = [0u8; 16];
            ctr[..12].copy_from_slice(&raw[..12]);
            ctr[12..].copy_from_slice(&(2 + i as u32).to_be_bytes());
            let mut b = GenericArray::from(ctr);
            self.block.encrypt_block(&mut b);
            chunk.copy_from_slice(&b);
        }
        for (p, c) in pt.iter_mut().zip(&raw[12..36]) {
            *p ^= c;
        }
        parse_stamp(&pt[..24])
    }

    /// Decrypts and authenticates in full; the send time if the plaintext is stamped.
    pub fn open(&self, channel: &str, event: &str, data: &[u8]) -> Option<u64> {
        let data = std::str::from_utf8(data).ok()?;
        let plain = payload::decrypt_bytes(channel, event, data, &self.key).ok()?;
        parse_stamp(plain.get(..PREFIX.len() + DIGITS)?)
    }
}

fn parse_stamp(b: &[u8]) -> Option<u64> {
    let digits = b.strip_prefix(PREFIX)?.get(..DIGITS)?;
    let mut t = 0u64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        t = t.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_reads_what_open_authenticates() {
        let s = Stamp::new([9; 32]);
        let t = now_ns();
        let data = s.seal("a/b#c", "E", t, 200);
        assert!((196..=204).contains(&data.len()), "{}", data.len());
        assert_eq!(s.peek(data.as_bytes()), Some(t));
        assert_eq!(s.open("a/b#c", "E", data.as_bytes()), Some(t));
        assert_eq!(s.open("a/b#d", "E", data.as_bytes()), None);
        assert_eq!(Stamp::new([8; 32]).peek(data.as_bytes()), None);
    }
}
