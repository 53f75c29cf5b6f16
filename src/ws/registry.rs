//! Live authenticated sessions, so that an operation outside a session (revocation, a key
//! removed on reload) can close the ones it concerns.
//!
//! A session is reached only through its [`SessionHandle`]: a close request goes into the
//! session's outbox, which wakes the session task, which then closes its own socket.
//! Scanning all sessions for a
//! revocation is O(sessions); revocations are rare operator actions, and the scan takes no
//! lock that a publish needs.

use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::hub::{Outbox, SessionId};
use crate::protocol::{AppId, CloseCode};

/// What the registry knows of a session; the session keeps its identity here too, so it
/// is stored once.
#[derive(Debug)]
pub struct SessionHandle {
    /// The token's app.
    pub app: AppId,
    /// The token's `sub`.
    pub sub: String,
    token: Mutex<TokenIds>,
    /// The session's outbound queue, which also carries close requests.
    pub outbox: Arc<Outbox>,
}

/// What the registry keeps of a session's current token.
#[derive(Debug, Clone)]
pub struct TokenIds {
    /// `jti`, for revocation by token id.
    pub jti: Option<String>,
    /// The verifying key's id.
    pub kid: Option<String>,
    /// Fingerprint of the key that verified the token, for reloads.
    pub key: u64,
}

impl SessionHandle {
    /// Asks the session to close with `code` (the first request wins).
    pub fn close(&self, code: CloseCode) {
        self.outbox.request_close(code);
    }

    /// Records the current token's `jti`, verifying `kid` and key fingerprint (after a
    /// refresh).
    pub fn set_token(&self, jti: Option<String>, kid: Option<String>, key: u64) {
        *self.token.lock() = TokenIds { jti, kid, key };
    }

    /// The current token's `jti` and verifying `kid`.
    pub fn token_ids(&self) -> (Option<String>, Option<String>) {
        let t = self.token.lock();
        (t.jti.clone(), t.kid.clone())
    }

    fn jti_is(&self, jti: &str) -> bool {
        self.token.lock().jti.as_deref() == Some(jti)
    }

    fn key(&self) -> u64 {
        self.token.lock().key
    }
}

/// Every authenticated session of the process.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: DashMap<SessionId, Arc<SessionHandle>>,
}

/// Removes the session from the registry when dropped.
#[derive(Debug)]
pub struct Registered<'a> {
    registry: &'a Registry,
    id: SessionId,
    /// The handle.
    pub handle: Arc<SessionHandle>,
}

impl Registered<'_> {
    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.id);
    }
}

impl Registry {
    /// Registers a session whose queue is `outbox`.
    pub fn register(
        &self,
        id: SessionId,
        app: AppId,
        sub: String,
        token: TokenIds,
        outbox: Arc<Outbox>,
    ) -> Registered<'_> {
        let handle = Arc::new(SessionHandle {
            app,
            sub,
            token: Mutex::new(token),
            outbox,
        });
        self.sessions.insert(id, Arc::clone(&handle));
        Registered {
            registry: self,
            id,
            handle,
        }
    }

    /// Every session registered now (for shutdown, which closes them one by one).
    pub fn handles(&self) -> Vec<Arc<SessionHandle>> {
        self.sessions
            .iter()
            .map(|s| Arc::clone(s.value()))
            .collect()
    }

    /// Sessions registered now.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn close_where(&self, code: CloseCode, pred: impl Fn(&SessionHandle) -> bool) -> usize {
        let mut n = 0;
        for s in self.sessions.iter() {
            if pred(s.value()) {
                s.value().close(code);
                n += 1;
            }
        }
        n
    }

    /// Closes the sessions of `app` whose user is `sub`; returns how many.
    pub fn close_sub(&self, app: &AppId, sub: &str, code: CloseCode) -> usize {
        self.close_where(code, |s| &s.app == app && s.sub == sub)
    }

    /// Closes the sessions of `app` whose current token has `jti`; returns how many.
    pub fn close_jti(&self, app: &AppId, jti: &str, code: CloseCode) -> usize {
        self.close_where(code, |s| &s.app == app && s.jti_is(jti))
    }

    /// Closes the sessions whose token was verified by a key (by fingerprint) that
    /// `still_valid` refuses.
    pub fn close_unkeyed(
        &self,
        code: CloseCode,
        still_valid: impl Fn(&AppId, u64) -> bool,
    ) -> usize {
        self.close_where(code, |s| !still_valid(&s.app, s.key()))
    }
}
