//! TLS session resumption: what lets a reconnecting client skip the certificate signature
//! and the key exchange's public-key work.
//!
//! - Stateless tickets (`tls.session_tickets`): rustls' ticketer from the `ring` provider,
//!   an AEAD key made at start and rotated every 6 hours, never written anywhere. The
//!   session travels inside the ticket, so the relay keeps nothing per client. TLS 1.3
//!   resumption still runs an ECDHE exchange (rustls offers only `psk_dhe_ke`), so a
//!   stolen ticket key does not open recorded TLS 1.3 traffic; a TLS 1.2 ticket carries
//!   the session's master secret, which the ticket key protects.
//! - A session cache by ID ([`SessionCache`], `tls.session_cache_size` entries, oldest
//!   forgotten first) for TLS 1.2 clients that do not take tickets, and for TLS 1.3
//!   when tickets are off.
//!
//! Both are made once and kept across certificate reloads.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::ServerConfig;
use rustls::crypto::ring::Ticketer;
use rustls::server::{NoServerSessionStorage, ProducesTickets, StoresServerSessions};

use crate::config::TlsConfig;
use crate::telemetry::Metrics;

/// TLS 1.3 tickets sent after each handshake, full or resumed (rustls' default). Tickets
/// are single-use; the second lets a client whose resumption attempt failed (refused at
/// `tls.max_handshakes` in a storm, a dropped network) still resume on its next try.
pub const TLS13_TICKETS: usize = 2;

/// What resumes sessions, applied to every server configuration built.
#[derive(Debug, Clone)]
pub struct Resumption {
    /// Makes and opens session tickets; `None` when `tls.session_tickets` is off.
    ticketer: Option<Arc<dyn ProducesTickets>>,
    /// Sessions by ID; `None` when `tls.session_cache_size` is 0.
    cache: Option<Arc<SessionCache>>,
}

impl Resumption {
    /// From `tls.session_tickets` and `tls.session_cache_size`.
    pub fn new(config: &TlsConfig, metrics: Arc<Metrics>) -> Result<Resumption, rustls::Error> {
        metrics.set_ceiling("tls_session_cache", config.session_cache_size);
        let ticketer = if config.session_tickets {
            Some(Ticketer::new()?)
        } else {
            None
        };
        let cache = (config.session_cache_size > 0)
            .then(|| Arc::new(SessionCache::new(config.session_cache_size, metrics)));
        Ok(Resumption { ticketer, cache })
    }

    /// Sets the ticketer and the session store of `config`.
    pub fn apply(&self, config: &mut ServerConfig) {
        config.session_storage = match &self.cache {
            Some(c) => Arc::clone(c) as Arc<dyn StoresServerSessions>,
            None => Arc::new(NoServerSessionStorage {}),
        };
        config.send_tls13_tickets = TLS13_TICKETS;
        match (&self.ticketer, &self.cache) {
            (Some(t), _) => config.ticketer = Arc::clone(t),
            // TLS 1.3 tickets would be keys into the cache, which keeps nothing.
            (None, None) => config.send_tls13_tickets = 0,
            (None, Some(_)) => {}
        }
    }
}

/// Sessions by ID, at most `max`; the oldest is forgotten first (counted as
/// `sealcast_limit_hits_total{limit="tls_session_cache"}`), and
/// `sealcast_tls_session_cache_entries` shows how many are held.
#[derive(Debug)]
pub struct SessionCache {
    max: usize,
    inner: Mutex<Entries>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Entries {
    by_id: HashMap<Vec<u8>, Vec<u8>>,
    /// IDs in the order they were stored; may still name sessions taken since (skipped
    /// when evicting, dropped when it grows to twice the entries).
    order: VecDeque<Vec<u8>>,
}

impl SessionCache {
    /// An empty cache of at most `max` sessions.
    pub fn new(max: usize, metrics: Arc<Metrics>) -> SessionCache {
        SessionCache {
            max,
            inner: Mutex::new(Entries::default()),
            metrics,
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn held(&self, entries: &Entries) {
        self.metrics
            .tls_session_cache_entries
            .set(i64::try_from(entries.by_id.len()).unwrap_or(i64::MAX));
    }
}

impl StoresServerSessions for SessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut e = self.inner.lock();
        if e.by_id.insert(key.clone(), value).is_none() {
            e.order.push_back(key);
        }
        let mut evicted = 0;
        while e.by_id.len() > self.max {
            let Some(oldest) = e.order.pop_front() else {
                break;
            };
            if e.by_id.remove(&oldest).is_some() {
                evicted += 1;
            }
        }
        if e.order.len() > 2 * self.max + 16 {
            let Entries { by_id, order } = &mut *e;
            order.retain(|k| by_id.contains_key(k));
        }
        self.held(&e);
        drop(e);
        if evicted > 0 {
            self.metrics.limit_hits("tls_session_cache", evicted);
        }
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.lock().by_id.get(key).cloned()
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut e = self.inner.lock();
        let v = e.by_id.remove(key);
        self.held(&e);
        v
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_at_most_its_size_and_forgets_the_oldest_first() {
        let metrics = Arc::new(Metrics::default());
        let cache = SessionCache::new(3, Arc::clone(&metrics));
        for i in 0u8..5 {
            assert!(cache.put(vec![i], vec![i; 8]));
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&[0]), None);
        assert_eq!(cache.get(&[1]), None);
        assert_eq!(cache.get(&[4]), Some(vec![4; 8]));
        assert_eq!(metrics.tls_session_cache_entries.get(), 3);
        let hits = metrics
            .limits
            .get_or_create(&crate::telemetry::LimitLabel {
                limit: "tls_session_cache".into(),
            })
            .get();
        assert_eq!(hits, 2);
        // A session taken is gone; its stale place in the order is skipped later.
        assert_eq!(cache.take(&[2]), Some(vec![2; 8]));
        assert_eq!(cache.take(&[2]), None);
        assert_eq!(cache.len(), 2);
        for i in 10u8..100 {
            cache.put(vec![i], vec![i]);
            assert!(cache.len() <= 3);
            assert!(cache.inner.lock().order.len() <= 2 * 3 + 16 + 1);
        }
        assert_eq!(cache.get(&[99]), Some(vec![99]));
    }

    #[test]
    fn a_stored_session_replaced_keeps_one_entry() {
        let cache = SessionCache::new(2, Arc::new(Metrics::default()));
        cache.put(b"a".to_vec(), b"1".to_vec());
        cache.put(b"a".to_vec(), b"2".to_vec());
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(b"a"), Some(b"2".to_vec()));
    }
}
