//! Revocations (`POST /v1/revoke`, PROTOCOL.md 4.3): by `sub` or by `jti`, each until a
//! unix time. Bounded: at most `revocation.max_entries` live entries; expired ones are
//! forgotten by the periodic sweep (and on demand when full).

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

/// The store is full of live revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Live revocations.
#[derive(Debug)]
pub struct Revocations {
    entries: DashMap<(AppId, Target), i64>,
    max_entries: usize,
}

impl Revocations {
    /// An empty store.
    pub fn new(max_entries: usize) -> Self {
        Revocations {
            entries: DashMap::new(),
            max_entries,
        }
    }

    /// Revokes `target` of `app` until `until` (unix seconds). A repeated revocation keeps
    /// the later `until`.
    pub fn revoke(&self, app: &AppId, target: Target, until: i64, now: i64) -> Result<(), Full> {
        let key = (app.clone(), target);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_entries {
            self.sweep(now);
            if self.entries.len() >= self.max_entries {
                return Err(Full);
            }
        }
        self.entries
            .entry(key)
            .and_modify(|u| *u = (*u).max(until))
            .or_insert(until);
        Ok(())
    }

    /// Whether a token of `app` for `sub` with `jti` is revoked at `now`.
    pub fn is_revoked(&self, app: &AppId, sub: &str, jti: Option<&str>, now: i64) -> bool {
        let live = |t: Target| {
            self.entries
                .get(&(app.clone(), t))
                .is_some_and(|u| *u > now)
        };
        live(Target::Sub(sub.to_string())) || jti.is_some_and(|j| live(Target::Jti(j.to_string())))
    }

    /// Forgets expired revocations.
    pub fn sweep(&self, now: i64) {
        self.entries.retain(|_, until| *until > now);
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revokes_until_then_forgets_and_stays_bounded() {
        let r = Revocations::new(2);
        let app = AppId::parse("acme").unwrap();
        r.revoke(&app, Target::Sub("u1".into()), 200, 100).unwrap();
        r.revoke(&app, Target::Jti("j1".into()), 150, 100).unwrap();
        assert!(r.is_revoked(&app, "u1", None, 100));
        assert!(r.is_revoked(&app, "u2", Some("j1"), 100));
        assert!(!r.is_revoked(&app, "u2", Some("j2"), 100));
        assert!(
            !r.is_revoked(&AppId::parse("other").unwrap(), "u1", None, 100),
            "per app"
        );
        assert_eq!(
            r.revoke(&app, Target::Sub("u3".into()), 300, 100),
            Err(Full)
        );
        // Once j1 expired, its place is reusable.
        r.revoke(&app, Target::Sub("u3".into()), 300, 160).unwrap();
        assert!(!r.is_revoked(&app, "x", Some("j1"), 160));
        assert!(!r.is_revoked(&app, "u1", None, 200), "until is exclusive");
        r.sweep(400);
        assert!(r.is_empty());
    }
}
