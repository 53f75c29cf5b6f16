//! One channel's history: offsets, epoch, the ring of recent publications, and the
//! idempotency keys of the publications it still holds (PROTOCOL.md 6).
//!
//! Pure data, no I/O and no lock: the hub owns one per channel under the channel's lock,
//! which is what makes "append, then fan out" and "register, then snapshot" atomic with
//! respect to each other. Time is passed in, so tests drive it directly.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

/// A publication as it travels: its channel (by the hub's numeric id), its offset, and
/// its `pub` frame, encoded once and shared by the history and every subscriber.
#[derive(Debug)]
pub struct Publication {
    /// The hub's id for the channel; cheap to compare in a session.
    pub channel_id: u64,
    /// The channel offset.
    pub offset: u64,
    /// The `pub` frame as it goes on the wire: a complete WebSocket text frame, header
    /// included ([`crate::ws::codec::text_frame`]), so a delivery is a copy of bytes.
    pub frame: Box<[u8]>,
    /// When this node accepted it (encoded it), for the delivery latency metric.
    pub accepted: Instant,
}

impl Publication {
    /// Encodes the `pub` frame of one publication, once, as it goes on the wire.
    pub fn encode(
        channel_id: u64,
        channel: &str,
        event: &str,
        data: &str,
        offset: u64,
    ) -> Arc<Publication> {
        let json = crate::protocol::encode_pub(channel, event, data, offset);
        Arc::new(Publication {
            channel_id,
            offset,
            frame: crate::ws::codec::text_frame(json.as_bytes()),
            accepted: Instant::now(),
        })
    }

    /// Bytes this publication accounts for in the history budget and outbound queues.
    pub fn cost(&self) -> usize {
        // The frame plus the fixed part of its allocation and queue slot.
        self.frame.len() + 64
    }
}

/// The answer to "what did I miss since this position?".
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// Every publication after the position, in offset order (possibly none).
    Complete(Vec<Arc<Publication>>),
    /// Some are gone: another epoch, a position ahead of the channel, or evicted.
    Gone,
}

impl PartialEq for Publication {
    fn eq(&self, other: &Self) -> bool {
        self.channel_id == other.channel_id && self.offset == other.offset
    }
}

struct Entry {
    publication: Arc<Publication>,
    stored_at: Instant,
    idempotency_key: Option<Box<str>>,
}

impl Entry {
    fn cost(&self) -> usize {
        self.publication.cost() + self.idempotency_key.as_ref().map_or(0, |k| k.len() + 32)
    }
}

/// One channel's offsets and recent publications.
pub struct ChannelHistory {
    epoch: Arc<str>,
    last_offset: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    idempotency: HashMap<Box<str>, u64>,
}

impl ChannelHistory {
    /// An empty history at offset 0 of a new epoch.
    pub fn new(epoch: Arc<str>) -> Self {
        ChannelHistory {
            epoch,
            last_offset: 0,
            entries: VecDeque::new(),
            bytes: 0,
            idempotency: HashMap::new(),
        }
    }

    /// The epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The last offset given out (0 before the first publication).
    pub fn last_offset(&self) -> u64 {
        self.last_offset
    }

    /// The next offset to give out.
    pub fn next_offset(&self) -> u64 {
        self.last_offset + 1
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held, as accounted by [`Publication::cost`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The offset a still-held publication with this idempotency key got.
    pub fn idempotent_offset(&self, key: &str) -> Option<u64> {
        self.idempotency.get(key).copied()
    }

    /// Appends a publication whose offset must be [`Self::next_offset`], then evicts the
    /// oldest beyond `max_entries`. Returns `(bytes added, bytes evicted)`.
    pub fn append(
        &mut self,
        publication: Arc<Publication>,
        idempotency_key: Option<&str>,
        now: Instant,
        max_entries: usize,
    ) -> (usize, usize) {
        debug_assert_eq!(publication.offset, self.next_offset());
        self.last_offset = publication.offset;
        let key: Option<Box<str>> = idempotency_key.map(Into::into);
        if let Some(k) = &key {
            self.idempotency.insert(k.clone(), publication.offset);
        }
        let entry = Entry {
            publication,
            stored_at: now,
            idempotency_key: key,
        };
        let added = entry.cost();
        self.bytes += added;
        self.entries.push_back(entry);
        let mut evicted = 0;
        while self.entries.len() > max_entries {
            evicted += self.pop_front();
        }
        (added, evicted)
    }

    fn pop_front(&mut self) -> usize {
        let Some(e) = self.entries.pop_front() else {
            return 0;
        };
        if let Some(k) = &e.idempotency_key {
            self.idempotency.remove(k);
        }
        let cost = e.cost();
        self.bytes -= cost;
        if self.entries.is_empty() {
            // Give back the ring's memory once a channel goes quiet.
            self.entries = VecDeque::new();
            self.idempotency = HashMap::new();
        }
        cost
    }

    /// Evicts every entry with offset up to `offset`; returns the bytes freed.
    pub fn evict_through(&mut self, offset: u64) -> usize {
        let mut freed = 0;
        while self
            .entries
            .front()
            .is_some_and(|e| e.publication.offset <= offset)
        {
            freed += self.pop_front();
        }
        freed
    }

    /// Evicts every entry stored at or before `cutoff`; returns the bytes freed.
    pub fn evict_stored_before(&mut self, cutoff: Instant) -> usize {
        let mut freed = 0;
        while self.entries.front().is_some_and(|e| e.stored_at <= cutoff) {
            freed += self.pop_front();
        }
        freed
    }

    /// What a client at `(epoch, offset)` missed.
    pub fn since(&self, epoch: &str, offset: u64) -> Recovery {
        if epoch != &*self.epoch || offset > self.last_offset {
            return Recovery::Gone;
        }
        if offset == self.last_offset {
            // Nothing missed: true even when the history itself has expired.
            return Recovery::Complete(Vec::new());
        }
        let Some(first) = self.entries.front().map(|e| e.publication.offset) else {
            return Recovery::Gone;
        };
        if first > offset + 1 {
            return Recovery::Gone;
        }
        // Offsets in the ring are contiguous, so the start index is a subtraction.
        let start = usize::try_from(offset + 1 - first).unwrap_or(usize::MAX);
        Recovery::Complete(
            self.entries
                .range(start..)
                .map(|e| Arc::clone(&e.publication))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn publication(offset: u64) -> Arc<Publication> {
        Arc::new(Publication {
            channel_id: 1,
            offset,
            frame: format!("frame-{offset}").into_bytes().into_boxed_slice(),
            accepted: Instant::now(),
        })
    }

    fn filled(n: u64, max: usize) -> (ChannelHistory, Instant) {
        let mut h = ChannelHistory::new("e1".into());
        let t0 = Instant::now();
        for i in 1..=n {
            let off = h.next_offset();
            assert_eq!(off, i);
            h.append(publication(off), None, t0 + Duration::from_secs(i), max);
        }
        (h, t0)
    }

    fn offsets(r: Recovery) -> Option<Vec<u64>> {
        match r {
            Recovery::Complete(v) => Some(v.iter().map(|p| p.offset).collect()),
            Recovery::Gone => None,
        }
    }

    #[test]
    fn since_replays_exactly_what_was_missed() {
        let (h, _) = filled(10, 100);
        assert_eq!(offsets(h.since("e1", 7)), Some(vec![8, 9, 10]));
        assert_eq!(offsets(h.since("e1", 0)), Some((1..=10).collect()));
        assert_eq!(offsets(h.since("e1", 10)), Some(vec![]));
        assert_eq!(offsets(h.since("e1", 11)), None);
        assert_eq!(offsets(h.since("e2", 7)), None);
    }

    #[test]
    fn count_bound_evicts_oldest_and_recovery_reports_the_gap() {
        let (h, _) = filled(10, 4);
        assert_eq!(h.len(), 4);
        assert_eq!(offsets(h.since("e1", 6)), Some(vec![7, 8, 9, 10]));
        assert_eq!(offsets(h.since("e1", 5)), None);
    }

    #[test]
    fn ttl_eviction_keeps_epoch_and_last_offset() {
        let (mut h, t0) = filled(5, 100);
        let freed = h.evict_stored_before(t0 + Duration::from_secs(3));
        assert!(freed > 0);
        assert_eq!(offsets(h.since("e1", 2)), None);
        assert_eq!(offsets(h.since("e1", 3)), Some(vec![4, 5]));
        h.evict_stored_before(t0 + Duration::from_secs(60));
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
        // Caught-up clients still recover after the history expired.
        assert_eq!(offsets(h.since("e1", 5)), Some(vec![]));
        assert_eq!(offsets(h.since("e1", 4)), None);
        assert_eq!(h.next_offset(), 6);
    }

    #[test]
    fn idempotency_keys_live_as_long_as_their_entry() {
        let mut h = ChannelHistory::new("e".into());
        let t = Instant::now();
        h.append(publication(1), Some("k1"), t, 2);
        h.append(publication(2), None, t, 2);
        assert_eq!(h.idempotent_offset("k1"), Some(1));
        h.append(publication(3), None, t, 2);
        assert_eq!(h.idempotent_offset("k1"), None);
        let before = h.bytes();
        assert_eq!(h.evict_through(3), before);
        assert_eq!(h.bytes(), 0);
    }
}
