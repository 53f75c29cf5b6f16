//! `wss://` and `https://` to the relay: a fresh certificate for a spawned relay (an
//! ECDSA P-256 CA and a leaf for 127.0.0.1 and localhost, written to the relay's temp
//! dir), and the client side: one rustls client config trusting that CA (or a given one,
//! for an attached relay), an HTTP client for the publisher and the metrics, and the
//! per-client session stores of TLS resumption.
//!
//! The relay's TLS policy (versions, suites, handshake limits, tickets) is the relay's
//! own: the generated `[tls]` table names only the certificate and key.
//!
//! The clients negotiate what browsers get from the relay, so that a storm costs the relay
//! what real gadgets would: they prefer `TLS_AES_128_GCM_SHA256` (Chrome, Firefox and
//! Safari list it first on hardware with AES instructions; rustls' own default lists
//! AES-256/SHA-384 first) and send an X25519 key share (browsers also offer a post-quantum
//! hybrid share, which the relay's provider does not take, so they too end on X25519).
//! They keep the result of a certificate chain verification for the exact same chain and
//! name for a minute ([`CachingVerifier`], as Chrome's caching certificate verifier does),
//! while every handshake checks the server's signature over its transcript, unless
//! [`SignatureSampling`] (`--tls-check-every N`, a relay this tool started only) has the
//! clients check it on one handshake in N: the relay still signs every full handshake,
//! and the clients then require exactly the certificate the tool made for it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use parking_lot::Mutex;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::cipher_suite;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

/// A certificate and key written for a spawned relay, and the CA that signed them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The leaf's PEM chain (`tls.cert_file`).
    pub cert_file: PathBuf,
    /// The leaf's PKCS#8 PEM key (`tls.key_file`), readable by this user only.
    pub key_file: PathBuf,
    /// The CA certificate, PEM: what the clients trust.
    pub ca_pem: Vec<u8>,
    /// The leaf, DER (what `--tls-check-every` pins).
    pub leaf_der: Vec<u8>,
}

/// Generates an ECDSA P-256 CA and a leaf for `127.0.0.1` and `localhost` into `dir`.
pub fn generate(dir: &Path) -> anyhow::Result<TlsFiles> {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "sealcast-load CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "sealcast-load relay");
    let issuer = Issuer::from_params(&ca, &ca_key);
    let cert = leaf.signed_by(&key, &issuer)?;
    let cert_file = dir.join("relay.crt");
    let key_file = dir.join("relay.key");
    std::fs::write(&cert_file, cert.pem())?;
    write_private(&key_file, key.serialize_pem().as_bytes())?;
    Ok(TlsFiles {
        cert_file,
        key_file,
        ca_pem: ca_cert.pem().into_bytes(),
        leaf_der: cert.der().to_vec(),
    })
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// TLS session tickets (or ids) a client keeps; one reconnection needs one.
const SESSIONS_PER_CLIENT: usize = 2;

/// The client side of TLS towards one relay.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    ca_pem: Vec<u8>,
    resume: bool,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts the certificates in `ca_pem` for server name `name` (an IP address or a
    /// DNS name). With `resume`, each client keeps its own sessions and offers one when it
    /// reconnects (TLS 1.3 resumption, as a browser does); without, every handshake is full.
    pub fn new(
        ca_pem: &[u8],
        name: &str,
        resume: bool,
        sampling: Option<SignatureSampling>,
    ) -> anyhow::Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        let mut n = 0;
        for der in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(der.context("the CA file is not PEM")?)?;
            n += 1;
        }
        anyhow::ensure!(n > 0, "no certificate in the CA file");
        let provider = Arc::new(browser_provider());
        let verifier = Arc::new(CachingVerifier::new(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()?,
            sampling,
        ));
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        let name = match name.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(name.to_string())
                .with_context(|| format!("bad TLS server name {name:?}"))?,
        };
        Ok(TlsClient {
            config: Arc::new(config),
            name,
            ca_pem: ca_pem.to_vec(),
            resume,
        })
    }

    /// Whether clients resume their sessions.
    pub fn resume(&self) -> bool {
        self.resume
    }

    /// An HTTP client (publisher, metrics) trusting the CA.
    pub fn http(&self) -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        for der in CertificateDer::pem_slice_iter(&self.ca_pem) {
            b = b.add_root_certificate(reqwest::Certificate::from_der(&der?)?);
        }
        Ok(b.build()?)
    }

    /// The dialer of one client. With resumption each gets a session store of its own:
    /// rustls keeps at most 8 TLS 1.3 tickets per server name in a store, so one store
    /// shared by thousands of clients would let only 8 of them resume.
    pub fn dialer(&self) -> TlsDialer {
        let config = if self.resume {
            let mut c = (*self.config).clone();
            c.resumption = Resumption::in_memory_sessions(SESSIONS_PER_CLIENT);
            Arc::new(c)
        } else {
            Arc::clone(&self.config)
        };
        TlsDialer {
            connector: TlsConnector::from(config),
            name: self.name.clone(),
        }
    }
}

/// How one client opens `wss://` connections (its session store included).
#[derive(Clone)]
pub struct TlsDialer {
    /// The connector (rustls client config).
    pub connector: TlsConnector,
    /// The relay's name in its certificate.
    pub name: ServerName<'static>,
}

/// rustls' `ring` provider with the suites in a browser's order of preference, and X25519
/// first among the groups (as browsers) on the relay's AWS-LC implementation, which
/// costs the load tool less CPU than `ring`'s.
fn browser_provider() -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = vec![
        sealcast::tls::kx::X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
        rustls::crypto::ring::kx_group::SECP384R1,
    ];
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    p
}

/// How long a verified chain is taken as verified.
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(60);
/// Verified chains kept (one relay has one; a few cover a reload).
const VERIFIED_CHAINS: usize = 8;

/// Clients check the relay's handshake signature (CertificateVerify) on one handshake in
/// `every` only, and accept no certificate but `leaf`: for a relay this tool started, so
/// that a storm on shared cores spends them on the relay's work (which is unchanged: it
/// signs every full handshake) rather than on 19,000 clients' signature checks, which real
/// clients make on their own CPUs. The sampled checks still fail a run whose relay signs
/// wrongly.
#[derive(Debug)]
pub struct SignatureSampling {
    leaf: Vec<u8>,
    every: u64,
    seen: AtomicU64,
}

impl SignatureSampling {
    /// One check in `every` (at least 1: every one), for the certificate `leaf` (DER).
    pub fn new(leaf: Vec<u8>, every: u64) -> SignatureSampling {
        SignatureSampling {
            leaf,
            every: every.max(1),
            seen: AtomicU64::new(0),
        }
    }

    /// Whether the signature made with `cert` is to be checked this time.
    fn check(&self, cert: &CertificateDer<'_>) -> bool {
        cert.as_ref() != self.leaf.as_slice()
            || self.seen.fetch_add(1, Ordering::Relaxed) % self.every == 0
    }
}

/// A chain verified (its certificates, DER), for a server name, at a time (Unix seconds).
type Verified = (Vec<Vec<u8>>, String, u64);

/// WebPKI verification that remembers, for [`VERIFIED_FOR`], a chain it verified: the
/// same end-entity certificate, intermediates and server name are not verified again.
/// The handshake signatures are checked by the inner verifier's algorithms (all of them,
/// or a sample with [`SignatureSampling`]).
#[derive(Debug)]
pub struct CachingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    verified: Mutex<Vec<Verified>>,
    sampling: Option<SignatureSampling>,
}

impl CachingVerifier {
    /// Wraps `inner`.
    pub fn new(
        inner: Arc<WebPkiServerVerifier>,
        sampling: Option<SignatureSampling>,
    ) -> CachingVerifier {
        CachingVerifier {
            inner,
            verified: Mutex::new(Vec::new()),
            sampling,
        }
    }

    /// Runs `verify` on a handshake signature made with `cert`, unless sampling skips it.
    fn sampled(
        &self,
        cert: &CertificateDer<'_>,
        verify: impl FnOnce() -> Result<HandshakeSignatureValid, rustls::Error>,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match &self.sampling {
            Some(s) if !s.check(cert) => Ok(HandshakeSignatureValid::assertion()),
            _ => verify(),
        }
    }

    fn key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Vec<Vec<u8>> {
        std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.as_ref().to_vec())
            .collect()
    }
}

impl ServerCertVerifier for CachingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(s) = &self.sampling
            && end_entity.as_ref() != s.leaf.as_slice()
        {
            return Err(rustls::Error::General(
                "not the certificate made for the relay this tool started".into(),
            ));
        }
        let name = server_name.to_str();
        let fresh = |at: u64| now.as_secs() < at.saturating_add(VERIFIED_FOR.as_secs());
        let same = |(chain, n, at): &Verified| {
            fresh(*at)
                && *n == name
                && chain.len() == intermediates.len() + 1
                && std::iter::once(end_entity)
                    .chain(intermediates)
                    .zip(chain)
                    .all(|(c, k)| c.as_ref() == k.as_slice())
        };
        if self.verified.lock().iter().any(same) {
            return Ok(ServerCertVerified::assertion());
        }
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let mut v = self.verified.lock();
        v.retain(|(_, _, at)| fresh(*at));
        if v.len() >= VERIFIED_CHAINS {
            v.remove(0);
        }
        v.push((
            Self::key(end_entity, intermediates),
            name.into_owned(),
            now.as_secs(),
        ));
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sampled(cert, || {
            self.inner.verify_tls12_signature(message, cert, dss)
        })
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sampled(cert, || {
            self.inner.verify_tls13_signature(message, cert, dss)
        })
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;

    fn files(tag: &str) -> TlsFiles {
        let dir =
            std::env::temp_dir().join(format!("sealcast-load-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        generate(&dir).unwrap()
    }

    fn verifier(f: &TlsFiles, sampling: Option<SignatureSampling>) -> CachingVerifier {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&f.ca_pem) {
            roots.add(der.unwrap()).unwrap();
        }
        let inner = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(browser_provider()),
        )
        .build()
        .unwrap();
        CachingVerifier::new(inner, sampling)
    }

    /// A TLS 1.3 signature by the relay's key over `msg`.
    fn signed(f: &TlsFiles, msg: &[u8]) -> DigitallySignedStruct {
        let key = PrivateKeyDer::from_pem_file(&f.key_file).unwrap();
        let key = rustls::crypto::ring::sign::any_ecdsa_type(&key).unwrap();
        let signer = key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        let sig = signer.sign(msg).unwrap();
        // The struct as it travels: the scheme, then the signature with a u16 length.
        let mut wire = u16::from(signer.scheme()).to_be_bytes().to_vec();
        wire.extend_from_slice(&u16::try_from(sig.len()).unwrap().to_be_bytes());
        wire.extend_from_slice(&sig);
        <DigitallySignedStruct as rustls::internal::msgs::codec::Codec>::read_bytes(&wire).unwrap()
    }

    #[test]
    fn a_verified_chain_is_remembered_only_for_the_same_chain_and_name() {
        let (a, b) = (files("a"), files("b"));
        let v = verifier(&a, None);
        let leaf = CertificateDer::from(a.leaf_der.clone());
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        let now = UnixTime::now();
        v.verify_server_cert(&leaf, &[], &ip, &[], now).unwrap();
        v.verify_server_cert(&leaf, &[], &ip, &[], now).unwrap();
        // Another name, another CA's leaf: verified afresh, and refused.
        let other = ServerName::try_from("example.com").unwrap();
        assert!(v.verify_server_cert(&leaf, &[], &other, &[], now).is_err());
        let foreign = CertificateDer::from(b.leaf_der.clone());
        assert!(v.verify_server_cert(&foreign, &[], &ip, &[], now).is_err());
        // Past the minute, the chain is verified again (and still good).
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now.as_secs() + VERIFIED_FOR.as_secs() + 1,
        ));
        v.verify_server_cert(&leaf, &[], &ip, &[], later).unwrap();
        assert_eq!(v.verified.lock().len(), 1);
    }

    #[test]
    fn every_signature_is_checked_unless_sampled_and_then_one_in_n() {
        let f = files("sig");
        let leaf = CertificateDer::from(f.leaf_der.clone());
        let good = signed(&f, b"transcript");
        let forged = signed(&f, b"another transcript");
        let all = verifier(&f, None);
        for _ in 0..3 {
            all.verify_tls13_signature(b"transcript", &leaf, &good)
                .unwrap();
            assert!(
                all.verify_tls13_signature(b"transcript", &leaf, &forged)
                    .is_err()
            );
        }
        let sampled = verifier(&f, Some(SignatureSampling::new(f.leaf_der.clone(), 4)));
        let caught: Vec<bool> = (0..8)
            .map(|_| {
                sampled
                    .verify_tls13_signature(b"transcript", &leaf, &forged)
                    .is_err()
            })
            .collect();
        assert_eq!(
            caught,
            [true, false, false, false, true, false, false, false]
        );
        // Only the started relay's certificate is accepted in sampling mode.
        let b = files("sig-other");
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        let pinned = verifier(&b, Some(SignatureSampling::new(f.leaf_der.clone(), 4)));
        let other = CertificateDer::from(b.leaf_der.clone());
        assert!(
            pinned
                .verify_server_cert(&other, &[], &ip, &[], UnixTime::now())
                .is_err(),
            "a leaf of the trusted CA that is not the pinned one"
        );
    }
}
