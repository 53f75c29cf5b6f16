//! The routing core: channels, their subscribers and their history, with no I/O.
//!
//! Channels live in a sharded concurrent map; each channel has one mutex over its
//! history and its subscriber set. That single lock is the ordering argument of the
//! relay:
//! - a publish takes it to assign the next offset, append to history and push the shared
//!   frame into every subscriber's outbox, so live frames leave in offset order;
//! - a subscribe takes it to register the session's outbox *and* snapshot the replay, so
//!   every publication is either in the snapshot (offset <= the snapshot's last) or
//!   pushed live afterwards (offset > it): no gap, and the session drops anything at or
//!   below the last offset it sent, so no duplicate.
//!
//! No `.await` happens under a channel lock. The work under it is proportional to the
//! channel's subscriber count and is one `Arc` clone plus an uncontended outbox push per
//! subscriber; a batch relayed from a shared broker ([`Hub::relay_batch`]) is one push of
//! the whole run per subscriber.
//!
//! History is bounded four ways: a TTL and a per-channel count (enforced by
//! [`ChannelHistory`]), a per-app byte budget and a relay-wide one, enforced through a FIFO
//! of each app's stored entries ([`usage`]). Channels are bounded relay-wide and per app.
//!
//! A channel that was never published holds no state beyond its subscriptions: it is
//! forgotten as soon as its last subscriber leaves. Its position is answered lazily and
//! stays the same across that: a channel created by this hub gets the epoch
//! `<hub epoch>-<bucket>`, where the bucket is the creation time divided by the
//! channel-state TTL. A channel forgotten by the sweeper was idle for a whole TTL after its
//! creation, so its next incarnation falls in a later bucket and has another epoch (a
//! client that recovers across it gets `recovered:false`), while a never-published channel
//! recreated within the bucket keeps its epoch at offset 0, which is exactly right: nothing
//! was ever published on it.

pub mod outbox;
mod relay;
mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use indexmap::IndexMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::history::{ChannelHistory, Publication, Recovery};
use crate::protocol::{AppId, Channel, EventName};
use crate::quota::{AppQuota, Quotas};
use crate::telemetry::Metrics;
pub use outbox::{Outbox, OutboxLimits, Push, Stop};
use usage::{IndexEntry, Pressure, Usage};

/// A channel of an app: the unit of routing. Channels of different apps never meet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    /// The app.
    pub app: AppId,
    /// The channel.
    pub channel: Channel,
}

/// A session's id, unique within the process.
pub type SessionId = u64;

/// Bounds and timings of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubConfig {
    /// How long a publication stays in history.
    pub history_ttl: Duration,
    /// Most publications kept per channel.
    pub max_per_channel: usize,
    /// Most history bytes kept over all channels.
    pub max_history_bytes: usize,
    /// Most channels (with state) at once.
    pub max_channels: usize,
    /// How long an idle channel's epoch and last offset are kept after its history and
    /// subscribers are gone.
    pub channel_state_ttl: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history_ttl: Duration::from_secs(120),
            max_per_channel: 1000,
            max_history_bytes: 256 << 20,
            max_channels: 1_000_000,
            channel_state_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// A refused hub operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The channel would be new and the relay-wide channel limit is reached.
    #[error("channel limit reached")]
    TooManyChannels,
    /// The channel would be new and its app's channel quota is reached.
    #[error("the app's channel quota is reached (limits.max_channels_per_app)")]
    AppChannelQuota,
}

/// The result of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The offset given (or first given, for a repeated idempotency key).
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// Whether this was a repeat of an idempotency key, and nothing was published.
    pub duplicate: bool,
    /// Subscribers whose outbox overflowed on this publish.
    pub overflowed: usize,
}

/// One publication that a shared broker ordered and stored, relayed to this node's
/// subscribers ([`Hub::relay_batch`]).
#[derive(Debug, Clone)]
pub struct Relayed<'a> {
    /// The channel's epoch in the shared store.
    pub epoch: &'a str,
    /// Its offset there.
    pub offset: u64,
    /// The event name.
    pub event: EventName,
    /// The ciphertext (base64).
    pub data: &'a str,
}

/// A live subscription, as the session needs it.
#[derive(Debug)]
pub struct Subscribed {
    /// The hub's id of the channel, as carried by its publications.
    pub channel_id: u64,
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// The last offset the client will have once `replay` is sent.
    pub offset: u64,
    /// `Some(true/false)` when recovery was asked for.
    pub recovered: Option<bool>,
    /// The publications to send before any live one, in offset order.
    pub replay: Vec<Arc<Publication>>,
}

struct ChannelState {
    history: ChannelHistory,
    subscribers: IndexMap<SessionId, Arc<Outbox>>,
    last_active: Instant,
    /// Set when the sweeper removed this channel from the map; a holder of a stale `Arc`
    /// must look the channel up again.
    removed: bool,
    /// With a shared broker: the epoch of the channel's stream as last relayed or read
    /// here; a publication of another epoch ends the live subscriptions (see [`Hub::relay_batch`]).
    relay_epoch: Option<Arc<str>>,
}

struct ChannelSlot {
    id: u64,
    state: Mutex<ChannelState>,
}

/// The registry of channels, subscribers and history.
pub struct Hub {
    channels: DashMap<ChannelKey, Arc<ChannelSlot>>,
    /// Per-app channels and history, for quotas, TTL expiry and the byte budgets.
    usage: Usage,
    quotas: Arc<Quotas>,
    next_channel_id: AtomicU64,
    /// Random per hub: the first part of every epoch this hub gives.
    epoch_base: String,
    started: Instant,
    config: HubConfig,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("channels", &self.channels.len())
            .field("history_bytes", &self.usage.total_bytes())
            .finish()
    }
}

impl Hub {
    /// An empty hub whose per-app quotas are the relay-wide bounds.
    pub fn new(config: HubConfig, metrics: Arc<Metrics>) -> Self {
        let quotas = Quotas::uniform(AppQuota {
            max_channels: config.max_channels,
            max_history_bytes: config.max_history_bytes,
            max_revocations: usize::MAX,
        });
        Hub::with_quotas(config, metrics, quotas)
    }

    /// An empty hub with per-app quotas.
    pub fn with_quotas(config: HubConfig, metrics: Arc<Metrics>, quotas: Arc<Quotas>) -> Self {
        Hub {
            channels: DashMap::new(),
            usage: Usage::default(),
            quotas,
            next_channel_id: AtomicU64::new(1),
            epoch_base: hex::encode(rand::random::<[u8; 6]>()),
            started: Instant::now(),
            config,
            metrics,
        }
    }

    /// The epoch of a channel created now (see the module docs).
    fn fresh_epoch(&self, now: Instant) -> Arc<str> {
        let ttl = self.config.channel_state_ttl.as_millis().max(1);
        let bucket = now.saturating_duration_since(self.started).as_millis() / ttl;
        format!("{}-{bucket:x}", self.epoch_base).into()
    }

    /// `app`'s quotas.
    pub fn app_quota(&self, app: &AppId) -> AppQuota {
        self.quotas.of(app)
    }

    /// Channels with state of `app`.
    pub fn app_channel_count(&self, app: &AppId) -> usize {
        self.usage.app_channels(app)
    }

    /// History bytes held for `app`.
    pub fn app_history_bytes(&self, app: &AppId) -> usize {
        self.usage.app_bytes(app)
    }

    /// Channels with state.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// History bytes held over all channels.
    pub fn history_bytes(&self) -> usize {
        self.usage.total_bytes()
    }

    fn slot(&self, key: &ChannelKey, now: Instant) -> Result<Arc<ChannelSlot>, HubError> {
        if let Some(s) = self.channels.get(key) {
            return Ok(Arc::clone(&s));
        }
        if self.channels.len() >= self.config.max_channels {
            self.metrics.limit_hit("channels");
            return Err(HubError::TooManyChannels);
        }
        let quota = self.quotas.of(&key.app).max_channels;
        if !self.usage.reserve_channel(&key.app, quota) {
            self.metrics.limit_hit("channels_per_app");
            return Err(HubError::AppChannelQuota);
        }
        let mut created = false;
        let slot = self
            .channels
            .entry(key.clone())
            .or_insert_with(|| {
                created = true;
                self.metrics.channels.inc();
                Arc::new(ChannelSlot {
                    id: self.next_channel_id.fetch_add(1, Ordering::Relaxed),
                    state: Mutex::new(ChannelState {
                        history: ChannelHistory::new(self.fresh_epoch(now)),
                        subscribers: IndexMap::new(),
                        last_active: now,
                        removed: false,
                        relay_epoch: None,
                    }),
                })
            })
            .clone();
        if !created {
            // Another caller created it in between: its place is the one counted.
            self.usage.release_channel(&key.app);
        }
        Ok(slot)
    }

    /// Publishes: gives the next offset, stores the publication in history and queues its
    /// frame for every subscriber. A repeated `idempotency_key` still in the history
    /// returns the first result and publishes nothing.
    pub fn publish(
        &self,
        key: &ChannelKey,
        event: &EventName,
        data: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Published, HubError> {
        let mut out = self.publish_run(key, &[(event, data, idempotency_key)])?;
        Ok(out.remove(0))
    }

    /// Publishes a run of publications to one channel, in order, exactly as
    /// [`Hub::publish`] would one by one (offsets, idempotency keys, history and quotas),
    /// under one lock: each subscriber's outbox gets the run's frames in one push and at
    /// most one wake-up, so the run costs a session one write. One result per item, in
    /// order; a subscriber that overflowed is counted on the run's last new publication.
    /// History over its budget is evicted after the run (a run is at most `http.max_batch`
    /// items).
    pub fn publish_run(
        &self,
        key: &ChannelKey,
        items: &[(&EventName, &str, Option<&str>)],
    ) -> Result<Vec<Published>, HubError> {
        let now = Instant::now();
        let mut over_budget = false;
        let mut results = Vec::with_capacity(items.len());
        loop {
            let slot = self.slot(key, now)?;
            let mut st = slot.state.lock();
            if st.removed {
                continue;
            }
            let mut run: Vec<Arc<Publication>> = Vec::with_capacity(items.len());
            let mut last_new = None;
            for &(event, data, idempotency_key) in items {
                if let Some(offset) = idempotency_key.and_then(|k| st.history.idempotent_offset(k))
                {
                    self.metrics.idempotent_repeats.inc();
                    results.push(Published {
                        offset,
                        epoch: Arc::clone(st.history.epoch()),
                        duplicate: true,
                        overflowed: 0,
                    });
                    continue;
                }
                let offset = st.history.next_offset();
                let publication = Publication::encode(
                    slot.id,
                    key.channel.as_str(),
                    event.as_str(),
                    data,
                    offset,
                );
                let (added, evicted) = st.history.append(
                    Arc::clone(&publication),
                    idempotency_key,
                    now,
                    self.config.max_per_channel,
                );
                let entry = IndexEntry {
                    slot: Arc::clone(&slot),
                    offset,
                    stored_at: now,
                };
                let app_bytes = self.usage.stored(&key.app, entry, added, evicted);
                over_budget |= app_bytes > self.quotas.of(&key.app).max_history_bytes
                    || self.history_bytes() > self.config.max_history_bytes;
                run.push(publication);
                last_new = Some(results.len());
                results.push(Published {
                    offset,
                    epoch: Arc::clone(st.history.epoch()),
                    duplicate: false,
                    overflowed: 0,
                });
            }
            if let Some(i) = last_new {
                self.metrics.history_bytes.set(self.history_bytes() as i64);
                st.last_active = now;
                results[i].overflowed = self.fan_out_many(&st.subscribers, &run).1;
                self.metrics.publications.inc_by(run.len() as u64);
            }
            break;
        }
        // Expiry is the sweep's work; a publish evicts only under budget pressure, so the
        // usual publish takes the per-app accounting lock once.
        if over_budget {
            self.evict(now, Some(&key.app));
        }
        Ok(results)
    }

    /// Registers `outbox` for `key` and, when `since` is given, snapshots what the client
    /// missed: both under the channel lock (see the module docs).
    pub fn subscribe(
        &self,
        key: &ChannelKey,
        session: SessionId,
        outbox: &Arc<Outbox>,
        since: Option<(&str, u64)>,
    ) -> Result<Subscribed, HubError> {
        let now = Instant::now();
        loop {
            let slot = self.slot(key, now)?;
            let mut st = slot.state.lock();
            if st.removed {
                continue;
            }
            if st.subscribers.insert(session, Arc::clone(outbox)).is_none() {
                self.metrics.subscriptions.inc();
            }
            st.last_active = now;
            let last = st.history.last_offset();
            let (recovered, replay) = match since {
                None => (None, Vec::new()),
                Some((epoch, offset)) => match st.history.since(epoch, offset) {
                    Recovery::Complete(replay) => (Some(true), replay),
                    Recovery::Gone => (Some(false), Vec::new()),
                },
            };
            return Ok(Subscribed {
                channel_id: slot.id,
                epoch: Arc::clone(st.history.epoch()),
                offset: last,
                recovered,
                replay,
            });
        }
    }

    /// Pushes one publication to every subscriber of a channel (under its lock), counting
    /// deliveries and overflows; returns how many overflowed.
    fn fan_out(
        &self,
        subscribers: &IndexMap<SessionId, Arc<Outbox>>,
        publication: &Arc<Publication>,
    ) -> usize {
        let mut overflowed = 0;
        for outbox in subscribers.values() {
            if outbox.push(Arc::clone(publication)) == Push::Overflowed {
                overflowed += 1;
            }
        }
        self.metrics.deliveries.inc_by(subscribers.len() as u64);
        if overflowed > 0 {
            self.metrics.limit_hits("outbound_queue", overflowed as u64);
        }
        overflowed
    }

    /// Closes every local subscriber of every channel with `code` (a shared broker lost
    /// its ordered stream: what was published meanwhile never reached this node, so the
    /// clients reconnect and recover from the shared history).
    pub fn close_all_subscribers(&self, code: crate::protocol::CloseCode) -> usize {
        let mut closed = 0;
        for slot in self.channels.iter() {
            let mut st = slot.state.lock();
            closed += close_subscribers(&st, code);
            st.relay_epoch = None;
        }
        closed
    }

    /// Closes this node's subscribers of one channel with `code` (a shared broker lost
    /// that channel's ordered stream); returns how many were asked to close.
    pub fn close_channel(&self, key: &ChannelKey, code: crate::protocol::CloseCode) -> usize {
        let Some(slot) = self.channels.get(key).map(|s| Arc::clone(&s)) else {
            return 0;
        };
        let mut st = slot.state.lock();
        st.relay_epoch = None;
        close_subscribers(&st, code)
    }

    /// Whether this node has a subscriber of `key`.
    pub fn has_subscribers(&self, key: &ChannelKey) -> bool {
        self.channels
            .get(key)
            .is_some_and(|s| !s.state.lock().subscribers.is_empty())
    }

    /// Removes `session` from `key`'s subscribers. A channel that was never published is
    /// forgotten with its last subscriber (see the module docs).
    pub fn unsubscribe(&self, key: &ChannelKey, session: SessionId) {
        let Some(slot) = self.channels.get(key).map(|s| Arc::clone(&s)) else {
            return;
        };
        let mut st = slot.state.lock();
        if st.subscribers.swap_remove(&session).is_none() {
            return;
        }
        self.metrics.subscriptions.dec();
        st.last_active = Instant::now();
        let unused = st.subscribers.is_empty()
            && st.history.last_offset() == 0
            && st.history.is_empty()
            && !st.removed;
        if !unused {
            return;
        }
        // Marked under the lock: a publish or subscribe holding this slot looks it up
        // again, and then creates a fresh one (with the same epoch, within the bucket).
        st.removed = true;
        drop(st);
        self.channels.remove_if(key, |_, s| Arc::ptr_eq(s, &slot));
        self.metrics.channels.dec();
        self.usage.release_channel(&key.app);
    }

    /// Evicts expired entries, then entries of `app` while it is over its history budget,
    /// then the heaviest app's while the relay-wide budget is exceeded. Never called
    /// under a channel lock.
    fn evict(&self, now: Instant, app: Option<&AppId>) {
        let app = app.map(|a| (a, self.quotas.of(a).max_history_bytes));
        while let Some((owner, entry, pressure)) = self.usage.pop(
            now,
            self.config.history_ttl,
            app,
            self.config.max_history_bytes,
        ) {
            match pressure {
                Pressure::Expired => {}
                Pressure::App => self.metrics.limit_hit("history_bytes_per_app"),
                Pressure::Global => self.metrics.limit_hit("history_bytes"),
            }
            // The entry may already be gone (count eviction); evict_through is then a no-op.
            let freed = entry.slot.state.lock().history.evict_through(entry.offset);
            self.usage.freed(&owner, freed);
        }
        self.metrics.history_bytes.set(self.history_bytes() as i64);
    }

    /// Periodic maintenance: expires history by TTL and enforces the byte budget, then
    /// forgets channels that have had no history, no subscriber and no activity for the
    /// channel-state TTL. Their next use starts a new epoch, so a client that recovers
    /// across that gets `recovered:false`, never a silent gap.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.evict(now, None);
        let ttl = self.config.channel_state_ttl;
        let mut forgotten: Vec<AppId> = Vec::new();
        self.channels.retain(|key, slot| {
            let mut st = slot.state.lock();
            let idle =
                st.subscribers.is_empty() && st.history.is_empty() && st.last_active + ttl <= now;
            if idle && !st.removed {
                st.removed = true;
                self.metrics.channels.dec();
                forgotten.push(key.app.clone());
            }
            !idle
        });
        // Outside the map's locks (see `usage` for the lock order).
        for app in &forgotten {
            self.usage.release_channel(app);
        }
    }
}

/// Asks every subscriber of a channel to close with `code`; returns how many requests
/// were taken.
fn close_subscribers(st: &ChannelState, code: crate::protocol::CloseCode) -> usize {
    st.subscribers
        .values()
        .filter(|outbox| outbox.request_close(code))
        .count()
}

#[cfg(test)]
mod tests;
