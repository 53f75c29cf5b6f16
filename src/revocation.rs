//! Revocations (`POST /v1/revoke`, PROTOCOL.md 4.3): by `sub` or by `jti`, each until a
//! unix time. Bounded per app (`limits.max_revocations_per_app`, so one app at its quota
//! never stops another from revoking) and relay-wide (`revocation.max_entries`); expired
//! entries are forgotten by the periodic sweep (and on demand when full).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::protocol::AppId;

/// What is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every token of this user.
    Sub(String),
    /// The token with this id.
    Jti(String),
}

/// Why a revocation was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The app holds its quota of live revocations.
    App,
    /// The relay holds `revocation.max_entries` live revocations.
    Relay,
}

/// Live revocations, per app.
#[derive(Debug)]
pub struct Revocations {
    apps: DashMap<AppId, HashMap<Target, i64>>,
    len: AtomicUsize,
    max_entries: usize,
}

impl Revocations {
    /// An empty store.
    pub fn new(max_entries: usize) -> Self {
        Revocations {
            apps: DashMap::new(),
            len: AtomicUsize::new(0),
            max_entries,
        }
    }

    /// Revokes `target` of `app` until `until` (unix seconds), within the app's quota
    /// `max_for_app`. A repeated revocation keeps the later `until` and takes no new place.
    pub fn revoke(
        &self,
        app: &AppId,
        target: Target,
        until: i64,
        now: i64,
        max_for_app: usize,
    ) -> Result<(), Full> {
        let mut entries = self.apps.entry(app.clone()).or_default();
        if let Some(u) = entries.get_mut(&target) {
            *u = (*u).max(until);
            return Ok(());
        }
        if entries.len() >= max_for_app {
            let before = entries.len();
            entries.retain(|_, u| *u > now);
            self.len
                .fetch_sub(before - entries.len(), Ordering::Relaxed);
            if entries.len() >= max_for_app {
                return Err(Full::App);
            }
        }
        if self.len.load(Ordering::Relaxed) >= self.max_entries {
            drop(entries);
            self.sweep(now);
            if self.len.load(Ordering::Relaxed) >= self.max_entries {
                return Err(Full::Relay);
            }
            entries = self.apps.entry(app.clone()).or_default();
        }
        if entries.insert(target, until).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether a token of `app` for `sub` with `jti` is revoked at `now`.
    pub fn is_revoked(&self, app: &AppId, sub: &str, jti: Option<&str>, now: i64) -> bool {
        let Some(entries) = self.apps.get(app) else {
            return false;
        };
        let live = |t: Target| entries.get(&t).is_some_and(|u| *u > now);
        live(Target::Sub(sub.to_string())) || jti.is_some_and(|j| live(Target::Jti(j.to_string())))
    }

    /// Forgets expired revocations.
    pub fn sweep(&self, now: i64) {
        self.apps.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|_, until| *until > now);
            self.len
                .fetch_sub(before - entries.len(), Ordering::Relaxed);
            !entries.is_empty()
        });
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Live entries of `app`.
    pub fn app_len(&self, app: &AppId) -> usize {
        self.apps.get(app).map_or(0, |e| e.len())
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revokes_until_then_forgets_and_stays_bounded() {
        let r = Revocations::new(2);
        let app = AppId::parse("acme").unwrap();
        r.revoke(&app, Target::Sub("u1".into()), 200, 100, 10)
            .unwrap();
        r.revoke(&app, Target::Jti("j1".into()), 150, 100, 10)
            .unwrap();
        assert!(r.is_revoked(&app, "u1", None, 100));
        assert!(r.is_revoked(&app, "u2", Some("j1"), 100));
        assert!(!r.is_revoked(&app, "u2", Some("j2"), 100));
        assert!(
            !r.is_revoked(&AppId::parse("other").unwrap(), "u1", None, 100),
            "per app"
        );
        assert_eq!(
            r.revoke(&app, Target::Sub("u3".into()), 300, 100, 10),
            Err(Full::Relay)
        );
        // Once j1 expired, its place is reusable.
        r.revoke(&app, Target::Sub("u3".into()), 300, 160, 10)
            .unwrap();
        assert!(!r.is_revoked(&app, "x", Some("j1"), 160));
        assert!(!r.is_revoked(&app, "u1", None, 200), "until is exclusive");
        r.sweep(400);
        assert!(r.is_empty());
    }

    #[test]
    fn an_app_at_its_quota_never_stops_another() {
        let r = Revocations::new(100);
        let (a, b) = (AppId::parse("a").unwrap(), AppId::parse("b").unwrap());
        for i in 0..3 {
            r.revoke(&a, Target::Sub(format!("u{i}")), 200, 100, 3)
                .unwrap();
        }
        assert_eq!(
            r.revoke(&a, Target::Sub("u3".into()), 200, 100, 3),
            Err(Full::App)
        );
        // A repeat takes no new place.
        r.revoke(&a, Target::Sub("u0".into()), 300, 100, 3).unwrap();
        r.revoke(&b, Target::Sub("u0".into()), 200, 100, 3).unwrap();
        assert_eq!((r.app_len(&a), r.app_len(&b), r.len()), (3, 1, 4));
    }
}
