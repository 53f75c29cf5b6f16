//! `wss://` and `https://` to the relay: a fresh certificate for a spawned relay (an
//! ECDSA P-256 CA and a leaf for 127.0.0.1 and localhost, written to the relay's temp
//! dir), and the client side: one rustls client config trusting that CA (or a given one,
//! for an attached relay), an HTTP client for the publisher and the metrics, and the
//! per-client session stores of TLS resumption.
//!
//! The relay's TLS policy (versions, suites, handshake limits, tickets) is the relay's
//! own: the generated `[tls]` table names only the certificate and key.
//!
//! The clients behave as browsers do, so that a storm costs the relay what real gadgets
//! would: they prefer `TLS_AES_128_GCM_SHA256` (Chrome, Firefox and Safari list it first on
//! hardware with AES instructions; rustls' own default lists AES-256/SHA-384 first) and
//! they keep the result of a certificate chain verification for the exact same chain
//! and name for a minute ([`CachingVerifier`], as Chrome's caching certificate verifier
//! does), while every handshake still checks the server's signature over its transcript.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use parking_lot::Mutex;
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
    pub fn new(ca_pem: &[u8], name: &str, resume: bool) -> anyhow::Result<TlsClient> {
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

/// rustls' `ring` provider with the suites in a browser's order of preference (key
/// exchange groups as rustls has them: X25519 first, as browsers).
fn browser_provider() -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
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

/// WebPKI verification that remembers, for [`VERIFIED_FOR`], a chain it verified: the
/// same end-entity certificate, intermediates and server name are not verified again.
/// The handshake signatures are always checked (by the inner verifier's algorithms).
#[derive(Debug)]
pub struct CachingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    verified: Mutex<Vec<(Vec<Vec<u8>>, String, u64)>>,
}

impl CachingVerifier {
    /// Wraps `inner`.
    pub fn new(inner: Arc<WebPkiServerVerifier>) -> CachingVerifier {
        CachingVerifier {
            inner,
            verified: Mutex::new(Vec::new()),
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
        let name = server_name.to_str();
        let fresh = |at: u64| now.as_secs() < at.saturating_add(VERIFIED_FOR.as_secs());
        let same = |(chain, n, at): &(Vec<Vec<u8>>, String, u64)| {
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
        v.push((Self::key(end_entity, intermediates), name.into_owned(), now.as_secs()));
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
