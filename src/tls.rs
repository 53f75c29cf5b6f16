//! Native TLS termination (`[tls]`): rustls with the `ring` provider, TLS 1.3 and 1.2, and
//! for TLS 1.2 only ECDHE key exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305);
//! rustls implements no CBC, RC4 or static-RSA suite, and the list below names every suite
//! offered.
//!
//! The certificate and key are reloaded without restart when either file changes (checked
//! every `tls.reload_interval`) or on SIGHUP. A new pair that does not load (unreadable,
//! not PEM, key not matching the certificate) keeps the old one serving and logs an error.
//!
//! Session resumption: stateless tickets (`tls.session_tickets`, rustls' ticketer: an
//! AEAD key made at start, rotated every 6 hours, held only in memory) and a bounded
//! session-ID cache (`tls.session_cache_size` entries) for TLS 1.2 clients without ticket
//! support. Both outlive certificate reloads, so a reload does not force every client
//! back to a full handshake.
//!
//! Key exchange: X25519 (on AWS-LC, [`kx`]), P-256 and P-384, in that order of preference.
//!
//! rustls runs the handshake on its unbuffered API ([`accept`]), then hands the traffic keys
//! over to our own record layer ([`TlsStream`]), so that an idle connection keeps neither
//! a buffer nor rustls' connection state.

mod handshake;
pub mod kx;
mod record;
mod resume;
mod stream;

pub use handshake::{HandshakeError, accept};
pub use resume::{Resumption, SessionCache, TLS13_TICKETS};
pub use stream::{MAX_EMPTY_RECORDS, MAX_HELD_OUT, MAX_KEY_UPDATES, MAX_WRITE, TlsStream};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::ServerConfig;
use rustls::crypto::ring::{cipher_suite, default_provider, kx_group};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;
use crate::telemetry::Metrics;

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("tls.cert_file {path}: {reason}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The key file is unreadable or holds no PEM private key.
    #[error("tls.key_file {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (for example a key that does not match the certificate).
    #[error("tls: certificate and key refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the server configuration from PEM files.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    resumption: &Resumption,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert_file.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert_file.to_owned(),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key {
        path: key_file.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(build_config(certs, key, resumption)?)
}

/// The server configuration for a certificate chain and its key: the versions, suites
/// and ALPN of the module docs, and `resumption`.
pub fn build_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    resumption: &Resumption,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut provider = default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    // X25519 on AWS-LC (see `kx`), then ring's NIST curves.
    provider.kx_groups = vec![kx::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The traffic keys go to the record layer of `stream.rs` once the handshake is done.
    config.enable_secret_extraction = true;
    resumption.apply(&mut config);
    Ok(Arc::new(config))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The serving certificate, replaceable while the relay runs.
#[derive(Debug)]
pub struct TlsReloader {
    cert_file: PathBuf,
    key_file: PathBuf,
    resumption: Resumption,
    current: ArcSwap<ServerConfig>,
    stamps: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl TlsReloader {
    /// Loads the first pair; failing here refuses to start.
    pub fn new(config: &TlsConfig, metrics: Arc<Metrics>) -> Result<TlsReloader, TlsError> {
        let resumption = Resumption::new(config, metrics)?;
        let current = server_config(&config.cert_file, &config.key_file, &resumption)?;
        Ok(TlsReloader {
            resumption,
            stamps: Mutex::new((modified(&config.cert_file), modified(&config.key_file))),
            cert_file: config.cert_file.clone(),
            key_file: config.key_file.clone(),
            current: ArcSwap::new(current),
        })
    }

    /// The current server configuration (certificate, versions, suites).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Loads the pair again; on error the old one keeps serving.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        // Record the stamps first so that a bad pair is reported once, not every tick.
        *self.stamps.lock() = stamps;
        let config = server_config(&self.cert_file, &self.key_file, &self.resumption)?;
        self.current.store(config);
        tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Reloads if either file's modification time changed since the last load.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = (modified(&self.cert_file), modified(&self.key_file));
        if *self.stamps.lock() == now {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }
}
