//! What each app holds in the hub: channels with state and history bytes, with the FIFO of
//! the app's stored entries. This is what keeps tenants from sharing a budget that one of
//! them can exhaust:
//! - a channel is created only within the app's channel quota;
//! - an app over its history budget loses its own oldest entries;
//! - when the relay-wide history budget is exceeded, the app holding the most history
//!   loses its oldest entries first, so a publishing burst of one app does not evict the
//!   history of quieter apps.
//!
//! Because the history TTL is uniform, each app's FIFO front is its oldest entry, so TTL
//! expiry and budget eviction both pop from fronts.
//!
//! Lock order: the usage lock is never held while a channel lock is taken (entries are
//! popped here, then evicted from their channel by the hub), and a channel lock holder may
//! take the usage lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::ChannelSlot;
use crate::protocol::AppId;

/// One stored history entry, by channel and offset.
pub(super) struct IndexEntry {
    pub(super) slot: Arc<ChannelSlot>,
    pub(super) offset: u64,
    pub(super) stored_at: Instant,
}

#[derive(Default)]
struct AppUsage {
    channels: usize,
    bytes: usize,
    index: VecDeque<IndexEntry>,
}

/// Per-app channel counts and history bytes.
#[derive(Default)]
pub(super) struct Usage {
    apps: Mutex<HashMap<AppId, AppUsage>>,
    total_bytes: AtomicUsize,
}

/// Why an entry is popped for eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pressure {
    /// Older than the history TTL.
    Expired,
    /// The app is over its own history budget.
    App,
    /// The relay-wide budget is exceeded and this app holds the most.
    Global,
}

impl Usage {
    /// History bytes over all apps.
    pub(super) fn total_bytes(&self) -> usize {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// History bytes of `app`.
    pub(super) fn app_bytes(&self, app: &AppId) -> usize {
        self.apps.lock().get(app).map_or(0, |u| u.bytes)
    }

    /// Channels with state of `app`.
    pub(super) fn app_channels(&self, app: &AppId) -> usize {
        self.apps.lock().get(app).map_or(0, |u| u.channels)
    }

    /// Takes a place for a new channel of `app`; false at its quota.
    pub(super) fn reserve_channel(&self, app: &AppId, quota: usize) -> bool {
        let mut apps = self.apps.lock();
        let u = apps.entry(app.clone()).or_default();
        if u.channels >= quota {
            return false;
        }
        u.channels += 1;
        true
    }

    /// Gives back a channel's place.
    pub(super) fn release_channel(&self, app: &AppId) {
        let mut apps = self.apps.lock();
        if let Some(u) = apps.get_mut(app) {
            u.channels = u.channels.saturating_sub(1);
            if u.channels == 0 && u.bytes == 0 && u.index.is_empty() {
                apps.remove(app);
            }
        }
    }

    /// Records a stored entry of `app` and the bytes it added and evicted (count bound);
    /// returns the app's history bytes now.
    pub(super) fn stored(
        &self,
        app: &AppId,
        entry: IndexEntry,
        added: usize,
        evicted: usize,
    ) -> usize {
        let mut apps = self.apps.lock();
        let u = apps.entry(app.clone()).or_default();
        u.index.push_back(entry);
        u.bytes = (u.bytes + added).saturating_sub(evicted);
        let app_bytes = u.bytes;
        drop(apps);
        self.total_bytes.fetch_add(added, Ordering::Relaxed);
        self.total_bytes.fetch_sub(evicted, Ordering::Relaxed);
        app_bytes
    }

    /// Records bytes freed from `app`'s history.
    pub(super) fn freed(&self, app: &AppId, bytes: usize) {
        if bytes == 0 {
            return;
        }
        if let Some(u) = self.apps.lock().get_mut(app) {
            u.bytes = u.bytes.saturating_sub(bytes);
        }
        self.total_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Pops the next entry to evict: an expired one first (any app's front), then one of
    /// `app` while it is over `app_budget`, then one of the heaviest app while the total is
    /// over `global_budget`. `None` when nothing needs evicting.
    pub(super) fn pop(
        &self,
        now: Instant,
        ttl: Duration,
        app: Option<(&AppId, usize)>,
        global_budget: usize,
    ) -> Option<(AppId, IndexEntry, Pressure)> {
        let mut apps = self.apps.lock();
        for (id, u) in apps.iter_mut() {
            if u.index.front().is_some_and(|e| e.stored_at + ttl <= now) {
                let e = u.index.pop_front()?;
                return Some((id.clone(), e, Pressure::Expired));
            }
        }
        if let Some((id, budget)) = app {
            if let Some(u) = apps.get_mut(id) {
                if u.bytes > budget {
                    let e = u.index.pop_front()?;
                    return Some((id.clone(), e, Pressure::App));
                }
            }
        }
        if self.total_bytes() > global_budget {
            let (id, u) = apps
                .iter_mut()
                .filter(|(_, u)| !u.index.is_empty())
                .max_by_key(|(_, u)| u.bytes)?;
            let e = u.index.pop_front()?;
            return Some((id.clone(), e, Pressure::Global));
        }
        None
    }
}
