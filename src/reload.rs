//! Reloading without restart: SIGHUP re-reads the config file's apps and keys (key
//! rotation) and the TLS certificate; the certificate is also reloaded when its files
//! change. Everything else in the config needs a restart, and a reload says so when it
//! sees another change.
//!
//! Key rotation: add the new key, reload, move the app's minting to it, then remove the
//! old key and reload again. Sessions whose token was verified by a key that was removed
//! or whose secret was replaced under the same kid (a leaked secret), or whose app was
//! removed, are closed with 4002: their client fetches a token minted with a current key
//! and recovers. The others keep running.

use std::sync::Arc;

use crate::config::Config;
use crate::protocol::CloseCode;
use crate::{AppState, authenticator};

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Apps now configured.
    pub apps: usize,
    /// Sessions closed because their key or app is gone.
    pub sessions_closed: usize,
    /// Whether the TLS certificate was reloaded.
    pub tls: bool,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The relay was not started from a file.
    #[error("no config file to reload (dev mode or built in code)")]
    NoSource,
    /// The file no longer loads; the running config stays.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A key names an environment variable this process does not have.
    #[error(
        "{0}; a running process cannot gain a new environment variable: give keys that you \
         rotate with SIGHUP as secret_file (or set the variable and restart)"
    )]
    MissingEnv(crate::config::ConfigError),
}

impl ReloadError {
    /// Tells a missing `secret_env` variable apart, to say why SIGHUP cannot fix it.
    fn from_config(e: crate::config::ConfigError) -> ReloadError {
        match &e {
            crate::config::ConfigError::Invalid { key, .. } if key.ends_with(".secret_env") => {
                ReloadError::MissingEnv(e)
            }
            _ => ReloadError::Config(e),
        }
    }
}

/// Reloads apps and keys from the config file, then the TLS certificate. On any error the
/// running configuration stays in force.
pub fn reload(state: &AppState) -> Result<Reloaded, ReloadError> {
    let path = state.config.source.as_ref().ok_or(ReloadError::NoSource)?;
    let fresh = Config::load(path).map_err(ReloadError::from_config)?;
    let auth = Arc::new(authenticator(&fresh));
    state.auth.store(Arc::clone(&auth));
    state.quotas.reload(&fresh);
    let closed = state
        .registry
        .close_unkeyed(CloseCode::TokenExpired, |app, key| auth.still_has(app, key));
    let tls = match &state.tls {
        Some(t) => match t.reload() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; the previous certificate keeps serving");
                false
            }
        },
        None => false,
    };
    let r = Reloaded {
        apps: fresh.apps.len(),
        sessions_closed: closed,
        tls,
    };
    tracing::info!(
        target: "audit",
        event = "config_reloaded",
        apps = r.apps,
        sessions_closed = r.sessions_closed,
        tls = r.tls,
        "apps and keys reloaded (other settings need a restart)"
    );
    Ok(r)
}

/// Reloads on every SIGHUP until the process ends.
pub fn on_sighup(state: Arc<AppState>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot listen for SIGHUP; reloads are off");
            return;
        };
        while hup.recv().await.is_some() {
            if let Err(e) = reload(&state) {
                tracing::error!(error = %e, "reload refused; the running configuration stays");
            }
        }
    });
}

/// Polls the certificate files every `tls.reload_interval` and reloads on change.
pub async fn tls_watch(state: Arc<AppState>) {
    let (Some(tls), Some(cfg)) = (state.tls.clone(), state.config.tls.clone()) else {
        return;
    };
    let mut tick = tokio::time::interval(cfg.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = tls.reload_if_changed() {
            tracing::error!(error = %e, "TLS reload failed; the previous certificate keeps serving");
        }
    }
}
