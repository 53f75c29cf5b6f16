//! TLS record protection once the handshake is done: the AEAD of each record, as RFC 8446
//! 5.2-5.3 (TLS 1.3), RFC 5288 (TLS 1.2 AES-GCM) and RFC 7905 (TLS 1.2 ChaCha20-Poly1305)
//! define it, with `ring`'s AEADs (the provider rustls uses for the handshake).
//!
//! rustls hands over the traffic keys and sequence numbers when its handshake is done
//! (`dangerous_into_kernel_connection`); from then on each direction is a [`Keys`]: the raw
//! key and IV (zeroed on drop) and the next sequence number. The expanded key schedule
//! (`ring`'s `LessSafeKey`, about 540 bytes for AES-GCM) is made by [`Keys::expand`] when
//! records are to be sealed or opened and dropped by the caller when the connection goes
//! quiet, so that an idle connection keeps 56 bytes of key material per direction.
//!
//! Nonces are the IV XOR the sequence number (TLS 1.3, ChaCha20-Poly1305; and for TLS 1.2
//! AES-GCM the explicit nonce sent is the last 8 bytes of that XOR, as rustls does), so a
//! nonce is never reused under one key; a sequence number never wraps.

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;
use zeroize::Zeroize;

/// Record header: content type, legacy version, length.
pub(super) const HEADER: usize = 5;
/// Most plaintext in one record (2^14).
pub(super) const MAX_PLAINTEXT: usize = 16 * 1024;
/// Most ciphertext after the header in a TLS 1.3 record (RFC 8446 5.2).
const MAX_CIPHERTEXT_13: usize = MAX_PLAINTEXT + 256;
/// Most ciphertext after the header in a TLS 1.2 record (RFC 5246 6.2.3).
const MAX_CIPHERTEXT_12: usize = MAX_PLAINTEXT + 2048;
const TAG: usize = 16;
/// TLS 1.2 AES-GCM's explicit nonce, sent before the ciphertext.
const EXPLICIT: usize = 8;

/// Content types (RFC 8446 B.1): an alert.
pub(super) const ALERT: u8 = 21;
/// A handshake message.
pub(super) const HANDSHAKE: u8 = 22;
/// Application data.
pub(super) const APPLICATION_DATA: u8 = 23;

/// Alert descriptions this layer sends or reads (RFC 8446 6).
pub(super) mod alert {
    /// The end of the stream.
    pub(crate) const CLOSE_NOTIFY: u8 = 0;
    /// A record or message out of place.
    pub(crate) const UNEXPECTED_MESSAGE: u8 = 10;
    /// A record that does not decrypt.
    pub(crate) const BAD_RECORD_MAC: u8 = 20;
    /// A record over the maximum length.
    pub(crate) const RECORD_OVERFLOW: u8 = 22;
    /// A message that does not parse.
    pub(crate) const DECODE_ERROR: u8 = 50;
    /// Something failed on our side.
    pub(crate) const INTERNAL_ERROR: u8 = 80;
    /// The peer cancels (TLS 1.3: a warning followed by close_notify).
    pub(crate) const USER_CANCELED: u8 = 90;
}

/// The negotiated version, which decides the record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    /// TLS 1.2: the content type is in the clear, the AAD carries the sequence number.
    Tls12,
    /// TLS 1.3: every record is `application_data` outside, the type is inside.
    Tls13,
}

impl Version {
    /// The largest length a record header may announce.
    pub(super) fn max_ciphertext(self) -> usize {
        match self {
            Version::Tls12 => MAX_CIPHERTEXT_12,
            Version::Tls13 => MAX_CIPHERTEXT_13,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// One direction's traffic key, IV and next sequence number.
pub(super) struct Keys {
    alg: Alg,
    key: [u8; 32],
    iv: [u8; aead::NONCE_LEN],
    /// The sequence number of the next record.
    pub(super) seq: u64,
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("alg", &self.alg)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// Why a record could not be opened: the alert to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refused(pub(super) u8);

impl Keys {
    /// From the secrets rustls extracted (or derived at a key update) and the next
    /// sequence number. `None` for an AEAD this layer does not implement (rustls offers
    /// no other with our suites).
    pub(super) fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Option<Keys> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Alg::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Alg::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Alg::Chacha20Poly1305, key, iv)
            }
            _ => return None,
        };
        let mut k = Keys {
            alg,
            key: [0; 32],
            iv: [0; aead::NONCE_LEN],
            seq,
        };
        let len = k.key_len();
        if key.as_ref().len() != len || iv.as_ref().len() != aead::NONCE_LEN {
            return None;
        }
        k.key[..len].copy_from_slice(key.as_ref());
        k.iv.copy_from_slice(iv.as_ref());
        Some(k)
    }

    fn key_len(&self) -> usize {
        match self.alg {
            Alg::Aes128Gcm => 16,
            Alg::Aes256Gcm | Alg::Chacha20Poly1305 => 32,
        }
    }

    /// The expanded key, to seal or open records with until the connection goes quiet.
    pub(super) fn expand(&self) -> Box<LessSafeKey> {
        let alg = match self.alg {
            Alg::Aes128Gcm => &aead::AES_128_GCM,
            Alg::Aes256Gcm => &aead::AES_256_GCM,
            Alg::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        // The length matches the algorithm by construction.
        let unbound = UnboundKey::new(alg, &self.key[..self.key_len()])
            .unwrap_or_else(|_| unreachable!("key length fixed by the algorithm"));
        Box::new(LessSafeKey::new(unbound))
    }

    fn nonce(&self, seq: u64) -> [u8; aead::NONCE_LEN] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    /// Takes the next sequence number; `None` once they are used up (never wraps).
    fn next_seq(&mut self) -> Option<u64> {
        let seq = self.seq;
        self.seq = seq.checked_add(1)?;
        Some(seq)
    }

    fn explicit_nonce(&self) -> bool {
        self.alg != Alg::Chacha20Poly1305
    }
}

fn tls12_aad(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9] = 3;
    aad[10] = 3;
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

/// Seals one record of content type `typ` holding `payload` (at most [`MAX_PLAINTEXT`])
/// onto the end of `out`. `None` if the sequence numbers are used up.
pub(super) fn seal(
    version: Version,
    keys: &mut Keys,
    key: &LessSafeKey,
    typ: u8,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Option<()> {
    debug_assert!(payload.len() <= MAX_PLAINTEXT);
    let seq = keys.next_seq()?;
    let nonce = keys.nonce(seq);
    match version {
        Version::Tls13 => {
            let len = payload.len() + 1 + TAG;
            let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
            out.reserve(HEADER + len);
            out.extend_from_slice(&header);
            let start = out.len();
            out.extend_from_slice(payload);
            out.push(typ);
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(header),
                    &mut out[start..],
                )
                .ok()?;
            out.extend_from_slice(tag.as_ref());
        }
        Version::Tls12 => {
            let explicit = if keys.explicit_nonce() { EXPLICIT } else { 0 };
            let len = explicit + payload.len() + TAG;
            out.reserve(HEADER + len);
            out.extend_from_slice(&[typ, 3, 3, (len >> 8) as u8, len as u8]);
            out.extend_from_slice(&nonce[aead::NONCE_LEN - explicit..]);
            let start = out.len();
            out.extend_from_slice(payload);
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(tls12_aad(seq, typ, payload.len())),
                    &mut out[start..],
                )
                .ok()?;
            out.extend_from_slice(tag.as_ref());
        }
    }
    Some(())
}

/// The length a record header announces, checked: `Err` with `record_overflow` past the
/// version's maximum.
pub(super) fn announced(version: Version, header: &[u8; HEADER]) -> Result<usize, Refused> {
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > version.max_ciphertext() {
        return Err(Refused(alert::RECORD_OVERFLOW));
    }
    Ok(len)
}

/// Opens one whole record (header included) in place. Returns its content type and where
/// its plaintext lies in `record`.
pub(super) fn open(
    version: Version,
    keys: &mut Keys,
    key: &LessSafeKey,
    record: &mut [u8],
) -> Result<(u8, Range<usize>), Refused> {
    let bad_mac = Refused(alert::BAD_RECORD_MAC);
    let mut header = [0u8; HEADER];
    header.copy_from_slice(&record[..HEADER]);
    let outer = header[0];
    let body = record.len() - HEADER;
    match version {
        Version::Tls13 => {
            // Every protected record is `application_data` outside; a change_cipher_spec
            // (only ever in the clear, during the handshake) or anything else is out of
            // place.
            if outer != APPLICATION_DATA {
                return Err(Refused(alert::UNEXPECTED_MESSAGE));
            }
            if body < TAG + 1 {
                return Err(bad_mac);
            }
            let seq = keys.next_seq().ok_or(bad_mac)?;
            let nonce = keys.nonce(seq);
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(header),
                    &mut record[HEADER..],
                )
                .map_err(|_| bad_mac)?;
            // The real type is the last non-zero byte; zeros after it are padding.
            let Some(end) = plain.iter().rposition(|b| *b != 0) else {
                return Err(Refused(alert::UNEXPECTED_MESSAGE));
            };
            if end > MAX_PLAINTEXT {
                return Err(Refused(alert::RECORD_OVERFLOW));
            }
            Ok((plain[end], HEADER..HEADER + end))
        }
        Version::Tls12 => {
            let explicit = if keys.explicit_nonce() { EXPLICIT } else { 0 };
            if body < explicit + TAG {
                return Err(bad_mac);
            }
            let len = body - explicit - TAG;
            if len > MAX_PLAINTEXT {
                return Err(Refused(alert::RECORD_OVERFLOW));
            }
            let seq = keys.next_seq().ok_or(bad_mac)?;
            let mut nonce = keys.nonce(seq);
            if explicit > 0 {
                nonce[aead::NONCE_LEN - EXPLICIT..]
                    .copy_from_slice(&record[HEADER..HEADER + EXPLICIT]);
            }
            let start = HEADER + explicit;
            key.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(tls12_aad(seq, outer, len)),
                &mut record[start..],
            )
            .map_err(|_| bad_mac)?;
            Ok((outer, start..start + len))
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::cipher::{AeadKey, Iv};

    use super::*;

    fn keys(alg: Alg, seq: u64) -> Keys {
        Keys {
            alg,
            key: [9; 32],
            iv: [7; 12],
            seq,
        }
    }

    fn chacha() -> ConnectionTrafficSecrets {
        ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::from([3; 32]),
            iv: Iv::new([5; 12]),
        }
    }

    #[test]
    fn keys_come_from_rustls_secrets() {
        let k = Keys::new(5, &chacha()).unwrap();
        assert_eq!(
            (k.alg, k.key, k.iv, k.seq),
            (Alg::Chacha20Poly1305, [3; 32], [5; 12], 5)
        );
        let aes = ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([1; 32]),
            iv: Iv::new([2; 12]),
        };
        assert_eq!(Keys::new(0, &aes).unwrap().alg, Alg::Aes256Gcm);
        // A 32-byte key named AES-128 does not fit.
        let wrong = ConnectionTrafficSecrets::Aes128Gcm {
            key: AeadKey::from([1; 32]),
            iv: Iv::new([2; 12]),
        };
        assert!(Keys::new(0, &wrong).is_none());
    }

    #[test]
    fn records_round_trip_in_every_format_and_a_flipped_bit_is_refused() {
        for version in [Version::Tls12, Version::Tls13] {
            for alg in [Alg::Aes128Gcm, Alg::Aes256Gcm, Alg::Chacha20Poly1305] {
                let (mut tx, mut rx) = (keys(alg, 0), keys(alg, 0));
                let (ek, dk) = (tx.expand(), rx.expand());
                let mut out = Vec::new();
                for (i, msg) in [&b"first"[..], &[], &[0u8; MAX_PLAINTEXT]]
                    .iter()
                    .enumerate()
                {
                    let start = out.len();
                    seal(version, &mut tx, &ek, APPLICATION_DATA, msg, &mut out).unwrap();
                    let header: [u8; HEADER] = out[start..start + HEADER].try_into().unwrap();
                    let len = announced(version, &header).unwrap();
                    assert_eq!(out.len(), start + HEADER + len);
                    let mut record = out[start..].to_vec();
                    let (typ, range) = open(version, &mut rx, &dk, &mut record).unwrap();
                    assert_eq!(typ, APPLICATION_DATA);
                    assert_eq!(&record[range], *msg);
                    assert_eq!((tx.seq, rx.seq), (i as u64 + 1, i as u64 + 1));
                }
                // Tampered, replayed (wrong sequence number) or cut: refused.
                let mut fresh = Vec::new();
                seal(version, &mut tx, &ek, ALERT, &[1, 0], &mut fresh).unwrap();
                let mut flipped = fresh.clone();
                *flipped.last_mut().unwrap() ^= 1;
                let mut rx2 = keys(alg, rx.seq);
                assert_eq!(
                    open(version, &mut rx2, &dk, &mut flipped),
                    Err(Refused(alert::BAD_RECORD_MAC))
                );
                let mut replay = out[..HEADER + 5 + 64].to_vec();
                let mut rx3 = keys(alg, rx.seq);
                assert!(open(version, &mut rx3, &dk, &mut replay).is_err());
                let (typ, range) = open(version, &mut rx, &dk, &mut fresh).unwrap();
                assert_eq!((typ, &fresh[range]), (ALERT, &[1u8, 0][..]));
                let mut short = fresh[..HEADER + 3].to_vec();
                assert!(open(version, &mut rx, &dk, &mut short).is_err());
            }
        }
    }

    #[test]
    fn an_oversized_header_is_a_record_overflow() {
        assert_eq!(
            announced(Version::Tls13, &[23, 3, 3, 0xff, 0xff]),
            Err(Refused(alert::RECORD_OVERFLOW))
        );
        assert_eq!(
            announced(Version::Tls13, &[23, 3, 3, 0x41, 0x00]),
            Ok(MAX_PLAINTEXT + 256)
        );
        assert!(announced(Version::Tls12, &[23, 3, 3, 0x48, 0x01]).is_err());
    }

    #[test]
    fn tls13_reads_the_inner_type_and_refuses_an_outer_one() {
        let (mut tx, mut rx) = (
            keys(Alg::Chacha20Poly1305, 0),
            keys(Alg::Chacha20Poly1305, 0),
        );
        let (ek, dk) = (tx.expand(), rx.expand());
        let mut out = Vec::new();
        seal(
            Version::Tls13,
            &mut tx,
            &ek,
            HANDSHAKE,
            &[24, 0, 0, 1, 0],
            &mut out,
        )
        .unwrap();
        assert_eq!(out[0], APPLICATION_DATA, "the type is hidden");
        let mut ccs = out.clone();
        ccs[0] = 20; // change_cipher_spec
        assert_eq!(
            open(
                Version::Tls13,
                &mut keys(Alg::Chacha20Poly1305, 0),
                &dk,
                &mut ccs
            ),
            Err(Refused(alert::UNEXPECTED_MESSAGE))
        );
        let (typ, range) = open(Version::Tls13, &mut rx, &dk, &mut out).unwrap();
        assert_eq!((typ, &out[range]), (HANDSHAKE, &[24u8, 0, 0, 1, 0][..]));
    }

    #[test]
    fn sequence_numbers_never_wrap() {
        let mut tx = Keys::new(u64::MAX, &chacha()).unwrap();
        let ek = tx.expand();
        assert!(
            seal(
                Version::Tls13,
                &mut tx,
                &ek,
                APPLICATION_DATA,
                b"x",
                &mut Vec::new()
            )
            .is_none()
        );
    }
}
