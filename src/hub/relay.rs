//! The hub's side of a shared broker (Redis): publications another node ordered and
//! stored are fanned out here to this node's subscribers, in runs, and the epoch each
//! channel follows is checked so that a lost continuity closes its subscribers (1011)
//! instead of leaving a silent gap. See the parent module for the channel state.

use std::sync::Arc;

use indexmap::IndexMap;
use tokio::time::Instant;

use super::{ChannelKey, Hub, Outbox, Push, Relayed, SessionId, close_subscribers};
use crate::history::Publication;
use crate::protocol::EventName;

impl Hub {
    /// Fans out a publication that a shared broker ordered and stored (offsets, epoch and
    /// history live there) to this node's subscribers of `key`; see [`Hub::relay_batch`].
    /// Returns how many subscribers it reached.
    pub fn relay(
        &self,
        key: &ChannelKey,
        epoch: &str,
        offset: u64,
        event: &EventName,
        data: &str,
    ) -> usize {
        self.relay_batch(
            key,
            &[Relayed {
                epoch,
                offset,
                event: event.clone(),
                data,
            }],
        )
    }

    /// Fans out publications of one channel that a shared broker ordered and stored
    /// (offsets, epoch and history live there), to this node's subscribers of `key`, if it
    /// has any; returns how many deliveries it queued. Publications reach this in offset
    /// order per channel (one ordered stream from the broker), and the session drops any
    /// offset it has already sent (the overlap with a subscribe's replay).
    ///
    /// The batch is handled exactly as its items one by one would be, under one lock: each
    /// subscriber's outbox gets the run of frames in one push and at most one wake-up, so a
    /// batch costs the session one write instead of one per publication.
    ///
    /// A publication of another epoch than the one this node followed means the shared
    /// store lost the channel's continuity: every local subscriber of the channel is closed
    /// with 1011 so that it reconnects and recovers (`recovered:false`), never a silent gap.
    pub fn relay_batch(&self, key: &ChannelKey, items: &[Relayed<'_>]) -> usize {
        let Some(slot) = self.channels.get(key).map(|s| Arc::clone(&s)) else {
            return 0;
        };
        let mut st = slot.state.lock();
        if st.removed || st.subscribers.is_empty() {
            st.relay_epoch = None;
            return 0;
        }
        let mut run: Vec<Arc<Publication>> = Vec::with_capacity(items.len());
        let mut delivered = 0;
        for item in items {
            match &st.relay_epoch {
                Some(e) if **e == *item.epoch => {}
                Some(_) => {
                    // What came before the change is of the old epoch: delivered first.
                    delivered += self.fan_out_many(&st.subscribers, &run).0;
                    run.clear();
                    close_subscribers(&st, crate::protocol::CloseCode::InternalError);
                    st.relay_epoch = Some(item.epoch.into());
                    continue;
                }
                None => st.relay_epoch = Some(item.epoch.into()),
            }
            run.push(Publication::encode(
                slot.id,
                key.channel.as_str(),
                item.event.as_str(),
                item.data,
                item.offset,
            ));
        }
        delivered += self.fan_out_many(&st.subscribers, &run).0;
        st.last_active = Instant::now();
        delivered
    }

    /// Pushes a run of publications to every subscriber of a channel (under its lock), one
    /// push per subscriber, counting deliveries and overflows; returns the deliveries and
    /// how many subscribers overflowed.
    pub(super) fn fan_out_many(
        &self,
        subscribers: &IndexMap<SessionId, Arc<Outbox>>,
        run: &[Arc<Publication>],
    ) -> (usize, usize) {
        if let [publication] = run {
            let overflowed = self.fan_out(subscribers, publication);
            return (subscribers.len(), overflowed);
        }
        if run.is_empty() {
            return (0, 0);
        }
        let cost = run.iter().map(|p| p.cost()).sum();
        let mut overflowed = 0;
        for outbox in subscribers.values() {
            if outbox.push_many(run, cost) == Push::Overflowed {
                overflowed += 1;
            }
        }
        let delivered = subscribers.len() * run.len();
        self.metrics.deliveries.inc_by(delivered as u64);
        if overflowed > 0 {
            self.metrics.limit_hits("outbound_queue", overflowed as u64);
        }
        (delivered, overflowed)
    }

    /// With a shared broker: records the epoch a subscribe read from the shared store.
    /// False when the channel already follows another epoch here (the store lost
    /// continuity in between); the subscribe must then fail and the client retry.
    pub fn note_epoch(&self, key: &ChannelKey, epoch: &str) -> bool {
        let Some(slot) = self.channels.get(key).map(|s| Arc::clone(&s)) else {
            return false;
        };
        let mut st = slot.state.lock();
        match &st.relay_epoch {
            Some(e) => &**e == epoch,
            None => {
                st.relay_epoch = Some(epoch.into());
                true
            }
        }
    }
}
