//! X25519 key exchange on AWS-LC (`aws-lc-rs`), in place of the `ring` provider's.
//!
//! A full TLS 1.3 handshake costs the relay one ephemeral X25519 key pair and one shared
//! secret, and on this workload that was the largest single cost of a connect (a quarter
//! of the relay's CPU in a reconnect storm). `ring` derives the public key on a generic,
//! masked path; AWS-LC's (s2n-bignum's X25519, formally verified) takes about half the
//! time for the key pair and ~40% less for both steps together (`benches/core.rs`,
//! `tls_kx`: 42-52 µs against 71-86 µs on the CI machine). Everything else in the provider stays `ring`'s: the other groups, the
//! suites, signatures and the record layer.
//!
//! Like `ring`'s, each key pair is made for one handshake and dropped after it (forward
//! secrecy), a peer share that is not 32 bytes is refused before use, and an all-zero
//! shared secret (a small-order peer point, RFC 7748 section 6.1) is an error.

use aws_lc_rs::agreement::{self, EphemeralPrivateKey, PublicKey, UnparsedPublicKey};
use aws_lc_rs::rand::SystemRandom;
use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved};

/// X25519 (RFC 7748) on AWS-LC.
pub static X25519: &dyn SupportedKxGroup = &AwsLcX25519;

#[derive(Debug)]
struct AwsLcX25519;

impl SupportedKxGroup for AwsLcX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let private = EphemeralPrivateKey::generate(&agreement::X25519, &SystemRandom::new())
            .map_err(|_| Error::FailedToGetRandomBytes)?;
        let public = private
            .compute_public_key()
            .map_err(|_| Error::FailedToGetRandomBytes)?;
        Ok(Box::new(KeyExchange { private, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// One handshake's key pair.
struct KeyExchange {
    private: EphemeralPrivateKey,
    public: PublicKey,
}

impl ActiveKeyExchange for KeyExchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, Error> {
        if peer.len() != 32 {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        agreement::agree_ephemeral(
            self.private,
            UnparsedPublicKey::new(&agreement::X25519, peer),
            Error::from(PeerMisbehaved::InvalidKeyShare),
            |secret| Ok(SharedSecret::from(secret)),
        )
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_ref()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_interoperate_with_ring() {
        let a = X25519.start().unwrap();
        let b = X25519.start().unwrap();
        let (pa, pb) = (a.pub_key().to_vec(), b.pub_key().to_vec());
        assert_eq!(pa.len(), 32);
        let sa = a.complete(&pb).unwrap();
        let sb = b.complete(&pa).unwrap();
        assert_eq!(sa.secret_bytes(), sb.secret_bytes());
        // Against ring's X25519, as a client on the other provider would be.
        let ring = rustls::crypto::ring::kx_group::X25519.start().unwrap();
        let ours = X25519.start().unwrap();
        let (pr, po) = (ring.pub_key().to_vec(), ours.pub_key().to_vec());
        assert_eq!(
            ring.complete(&po).unwrap().secret_bytes(),
            ours.complete(&pr).unwrap().secret_bytes()
        );
    }

    #[test]
    fn bad_peer_shares_are_refused() {
        for peer in [&[9u8; 31][..], &[9u8; 33], &[], &[0u8; 32]] {
            let e = X25519.start().unwrap().complete(peer).err();
            assert_eq!(e, Some(PeerMisbehaved::InvalidKeyShare.into()), "{peer:?}");
        }
        // A small-order point (order 8 on curve25519) gives an all-zero secret.
        let mut small = [0u8; 32];
        small[0] = 1;
        assert!(X25519.start().unwrap().complete(&small).is_err());
    }

    #[test]
    fn each_start_makes_a_new_key() {
        let a = X25519.start().unwrap();
        let b = X25519.start().unwrap();
        assert_ne!(a.pub_key(), b.pub_key());
    }
}
