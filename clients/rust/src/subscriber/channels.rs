//! Per-channel bookkeeping: a channel's listeners, how far its stream was seen, and where
//! its relay subscription stands on the current socket.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{Event, Position, RecoveryFn};

/// One [`super::Subscription`]: where its events go.
pub(crate) struct Listener {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<Event>,
    pub(crate) on_recovery_failed: Option<RecoveryFn>,
    /// The position its `Subscription` handle reads.
    pub(crate) position: Arc<Mutex<Option<Position>>>,
}

/// The relay subscription of a channel on the current socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    None,
    Pending,
    Active,
}

/// A channel with at least one listener; they share one relay subscription.
pub(crate) struct Chan {
    pub(crate) listeners: Vec<Listener>,
    pub(crate) wire: Wire,
    /// Request id of the pending `subscribe`.
    pub(crate) req_id: Option<u64>,
    /// The position asked for in the pending `subscribe`.
    pub(crate) asked: Option<Position>,
    pub(crate) epoch: Option<String>,
    /// The last offset seen (from `subscribed` or `pub`).
    pub(crate) offset: Option<u64>,
    /// Publications up to this offset are a replay.
    pub(crate) replay_until: u64,
}

impl Chan {
    /// A channel not yet subscribed on the wire, starting after `since` when given.
    pub(crate) fn new(since: Option<Position>) -> Chan {
        Chan {
            listeners: Vec::new(),
            wire: Wire::None,
            req_id: None,
            asked: None,
            epoch: since.as_ref().map(|p| p.epoch.clone()),
            offset: since.as_ref().map(|p| p.offset),
            replay_until: 0,
        }
    }

    /// The last position seen, if any.
    pub(crate) fn position(&self) -> Option<Position> {
        Some(Position {
            epoch: self.epoch.clone()?,
            offset: self.offset?,
        })
    }

    /// Publishes the position to the handles.
    pub(crate) fn share(&self) {
        let p = self.position();
        for l in &self.listeners {
            *l.position.lock().unwrap_or_else(|e| e.into_inner()) = p.clone();
        }
    }

    /// Applies the relay's `subscribed`. When it recovered from `asked`, the replay of
    /// `(asked.offset, offset]` follows, so the last seen offset stays at `asked.offset`;
    /// otherwise the channel stands at the relay's position. Returns whether recovery
    /// failed (a position was asked and not recovered).
    pub(crate) fn subscribed(
        &mut self,
        epoch: String,
        offset: u64,
        recovered: Option<bool>,
    ) -> bool {
        let asked = self.asked.take();
        self.wire = Wire::Active;
        self.req_id = None;
        self.replay_until = offset;
        self.epoch = Some(epoch);
        self.offset = Some(match &asked {
            Some(a) if recovered == Some(true) => a.offset,
            _ => offset,
        });
        self.share();
        asked.is_some() && recovered != Some(true)
    }

    /// Whether a `pub` at `offset` is new (and then records it); reports whether it jumped
    /// past the next offset.
    pub(crate) fn accept(&mut self, offset: u64) -> Accept {
        let last = self.offset.unwrap_or(0);
        if offset <= last {
            return Accept::Duplicate;
        }
        let gap = self.offset.is_some() && offset != last + 1;
        self.offset = Some(offset);
        self.share();
        if gap { Accept::Gap(last) } else { Accept::Next }
    }
}

/// What [`Chan::accept`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accept {
    Next,
    Duplicate,
    /// New, but after a jump from this offset.
    Gap(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chan(since: Option<(&str, u64)>) -> Chan {
        let mut c = Chan::new(since.map(|(e, o)| Position {
            epoch: e.into(),
            offset: o,
        }));
        c.listeners.push(Listener {
            id: 1,
            tx: mpsc::channel(1).0,
            on_recovery_failed: None,
            position: Arc::default(),
        });
        c
    }

    #[test]
    fn recovery_keeps_the_asked_offset_until_the_replay_arrives() {
        let mut c = chan(Some(("e1", 3)));
        c.asked = c.position();
        assert!(!c.subscribed("e1".into(), 5, Some(true)));
        assert_eq!(c.offset, Some(3));
        assert_eq!(c.accept(3), Accept::Duplicate);
        assert_eq!(c.accept(4), Accept::Next);
        assert_eq!(c.accept(4), Accept::Duplicate);
        assert_eq!(c.accept(6), Accept::Gap(4));
        assert_eq!(
            c.listeners[0]
                .position
                .lock()
                .unwrap()
                .as_ref()
                .unwrap()
                .offset,
            6
        );
    }

    #[test]
    fn a_failed_recovery_jumps_to_the_relays_position() {
        let mut c = chan(Some(("old", 9)));
        c.asked = c.position();
        assert!(c.subscribed("new".into(), 2, Some(false)));
        assert_eq!(
            c.position().unwrap(),
            Position {
                epoch: "new".into(),
                offset: 2
            }
        );
        let mut fresh = chan(None);
        assert!(!fresh.subscribed("e".into(), 0, None));
        assert_eq!(fresh.accept(1), Accept::Next);
    }
}
