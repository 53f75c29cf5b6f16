//! The publication messages on the pub/sub channels, and how a node hands a burst of them to
//! its hub as batches.
//!
//! The publish script (`scripts.rs`) announces what one call stored for one channel in one
//! message (names never contain a space; data is base64):
//! - one publication: `<app> <channel> <epoch> <offset> <event> <data>`;
//! - several (a batch publish with more than one item for the channel):
//!   `!pubs <app> <channel> <epoch> <first offset> <count> <event> <data> ...`, with `count`
//!   `<event> <data>` pairs at offsets `first, first + 1, ...` (one script stored them
//!   atomically, so they are consecutive).
//!
//! A relay older than this format ignores `!pubs` messages (its parse fails): upgrade every
//! node of a deployment before batch publishing through a new one (docs/operations.md).
//!
//! Receiving: a node reads what its connection already holds (bounded by [`MAX_BURST`]
//! messages), groups the publications by channel in arrival order and relays each group with
//! one [`Hub::relay_batch`] per [`MAX_RUN`] publications, so each local subscriber gets one
//! queue push and one wake-up per group instead of one per publication. A revocation in the
//! burst is applied after what came before it was relayed, as in the stream's order.
//! A message that does not parse (another writer on the channel) is counted
//! (`sealcast_broker_malformed_messages_total`) and skipped.

use std::collections::HashMap;

use crate::hub::{ChannelKey, Hub, Relayed};
use crate::protocol::{AppId, Channel, EventName};
use crate::telemetry::Metrics;

/// What starts a message of several publications.
pub(super) const BATCH_MESSAGE: &str = "!pubs ";

/// Most messages taken from a connection's buffer before they are relayed (bounds the work
/// done, and the time a channel lock is held, between two looks at the connection).
pub(super) const MAX_BURST: usize = 256;

/// Most publications relayed under one channel lock: a longer run (several large messages
/// of one channel in a burst) is relayed in runs of this size, so a subscribe to that
/// channel never waits for more.
pub(super) const MAX_RUN: usize = 512;

/// Parses one publication message (either form); `None` if it is malformed.
pub(super) fn parse(payload: &[u8]) -> Option<(ChannelKey, Vec<Relayed<'_>>)> {
    let text = std::str::from_utf8(payload).ok()?;
    match text.strip_prefix(BATCH_MESSAGE) {
        Some(rest) => parse_batch(rest),
        None => parse_one(text),
    }
}

fn key(app: &str, channel: &str) -> Option<ChannelKey> {
    Some(ChannelKey {
        app: AppId::parse(app).ok()?,
        channel: Channel::parse(channel).ok()?,
    })
}

fn item<'a>(epoch: &'a str, offset: u64, event: &str, data: &'a str) -> Option<Relayed<'a>> {
    if epoch.is_empty() || data.is_empty() || offset == 0 {
        return None;
    }
    Some(Relayed {
        epoch,
        offset,
        event: EventName::parse(event).ok()?,
        data,
    })
}

/// `<app> <channel> <epoch> <offset> <event> <data>`.
fn parse_one(text: &str) -> Option<(ChannelKey, Vec<Relayed<'_>>)> {
    let mut parts = text.splitn(6, ' ');
    let mut next = || parts.next();
    let (app, channel, epoch, offset, event, data) =
        (next()?, next()?, next()?, next()?, next()?, next()?);
    let one = item(epoch, offset.parse().ok()?, event, data)?;
    Some((key(app, channel)?, vec![one]))
}

/// `<app> <channel> <epoch> <first> <count> (<event> <data>){count}`.
fn parse_batch(text: &str) -> Option<(ChannelKey, Vec<Relayed<'_>>)> {
    let mut parts = text.split(' ');
    let mut next = || parts.next();
    let (app, channel, epoch, first, count) = (next()?, next()?, next()?, next()?, next()?);
    let key = key(app, channel)?;
    let first: u64 = first.parse().ok()?;
    let count: usize = count.parse().ok()?;
    if count == 0 {
        return None;
    }
    // The count is only a claim: the items present bound the allocation.
    let mut items = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let (event, data) = (next()?, next()?);
        let offset = first.checked_add(u64::try_from(i).ok()?)?;
        items.push(item(epoch, offset, event, data)?);
    }
    if next().is_some() {
        return None;
    }
    Some((key, items))
}

/// Publications taken from a connection, grouped by channel in arrival order, until they
/// are relayed ([`Inbound::flush`]).
#[derive(Default)]
pub(super) struct Inbound<'a> {
    groups: Vec<(ChannelKey, Vec<Relayed<'a>>)>,
    index: HashMap<ChannelKey, usize>,
}

impl<'a> Inbound<'a> {
    /// Adds one publication message; a malformed one is counted and skipped.
    pub(super) fn add(&mut self, payload: &'a [u8], metrics: &Metrics) {
        let Some((key, items)) = parse(payload) else {
            metrics.broker_malformed_messages.inc();
            return;
        };
        match self.index.get(&key) {
            Some(&i) => self.groups[i].1.extend(items),
            None => {
                self.index.insert(key.clone(), self.groups.len());
                self.groups.push((key, items));
            }
        }
    }

    /// Relays everything added so far into the hub, one batch per channel; returns the
    /// deliveries queued.
    pub(super) fn flush(&mut self, hub: &Hub) -> usize {
        self.index.clear();
        self.groups
            .drain(..)
            .map(|(key, items)| {
                items
                    .chunks(MAX_RUN)
                    .map(|run| hub.relay_batch(&key, run))
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use super::*;
    use crate::hub::{Outbox, OutboxLimits};

    fn hub() -> Hub {
        Hub::new(
            crate::hub::HubConfig::default(),
            Arc::new(Metrics::default()),
        )
    }

    fn k(ch: &str) -> ChannelKey {
        ChannelKey {
            app: AppId::parse("acme").unwrap(),
            channel: Channel::parse(ch).unwrap(),
        }
    }

    fn subscriber(hub: &Hub, ch: &str, session: u64) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox::new(OutboxLimits {
            max_frames: 100,
            max_bytes: 1 << 20,
        }));
        hub.subscribe(&k(ch), session, &outbox, None).unwrap();
        outbox
    }

    fn offsets(outbox: &Outbox) -> Vec<u64> {
        let mut q = VecDeque::new();
        outbox.drain_into(&mut q).unwrap();
        q.iter().map(|p| p.offset).collect()
    }

    #[test]
    fn both_forms_parse_to_consecutive_offsets() {
        let (key, one) = parse(b"acme ns#t e1 7 Ev AAAA").unwrap();
        assert_eq!(key, k("ns#t"));
        assert_eq!(
            (one.len(), one[0].epoch, one[0].offset, one[0].data),
            (1, "e1", 7, "AAAA")
        );
        let (key, many) = parse(b"!pubs acme ns#u e2 9 3 A AAAA B BBBB C CC==").unwrap();
        assert_eq!(key, k("ns#u"));
        let got: Vec<_> = many
            .iter()
            .map(|r| (r.epoch, r.offset, r.event.as_str(), r.data))
            .collect();
        assert_eq!(
            got,
            vec![
                ("e2", 9, "A", "AAAA"),
                ("e2", 10, "B", "BBBB"),
                ("e2", 11, "C", "CC==")
            ]
        );
    }

    #[test]
    fn malformed_messages_are_counted_and_skipped_never_relayed() {
        let hub = hub();
        let metrics = Metrics::default();
        let outbox = subscriber(&hub, "ns#t", 1);
        let bad: &[&[u8]] = &[
            b"acme ns#t e1 x Ev AAAA",
            b"acme ns#t e1 1",
            b"acme bad-channel e1 1 Ev AAAA",
            b"acme ns#t e1 1 E\xffv AAAA",
            b"acme ns#t e1 0 Ev AAAA",
            b"acme ns#t  1 Ev AAAA",
            b"\xff\xfe",
            b"",
            b"!pubs",
            b"!pubs ",
            b"!pubs acme ns#t e1 1 0",
            b"!pubs acme ns#t e1 1 2 Ev AAAA",
            b"!pubs acme ns#t e1 1 2 Ev AAAA Ev",
            b"!pubs acme ns#t e1 1 1 Ev AAAA Ev BBBB",
            b"!pubs acme ns#t e1 1 1 Ev AAAA ",
            b"!pubs acme ns#t e1 1 2 Ev AAAA Bad! BBBB",
            b"!pubs acme ns#t e1 1 2 Ev AAAA Ev ",
            b"!pubs acme ns#t e1 18446744073709551615 2 Ev AAAA Ev BBBB",
            b"!pubs acme ns#t e1 1 99999999999999999999 Ev AAAA",
            b"!pubs acme ns#t e1 -1 1 Ev AAAA",
            b"!pubs acme ns#t e1 0 1 Ev AAAA",
            b"!pubs bad app ns#t e1 1 1 Ev AAAA",
        ];
        let mut inbound = Inbound::default();
        for b in bad {
            inbound.add(b, &metrics);
        }
        assert_eq!(inbound.flush(&hub), 0);
        assert_eq!(metrics.broker_malformed_messages.get(), bad.len() as u64);
        assert_eq!(outbox.len(), 0);
        // A good message among bad ones still goes through.
        inbound.add(b"!pubs acme ns#t e1 1 2 Ev AAAA Ev BBBB", &metrics);
        inbound.add(b"acme ns#t e1 x Ev AAAA", &metrics);
        inbound.add(b"acme ns#t e1 3 Ev AAAA", &metrics);
        assert_eq!(inbound.flush(&hub), 3);
        assert_eq!(offsets(&outbox), vec![1, 2, 3]);
        assert_eq!(
            metrics.broker_malformed_messages.get(),
            bad.len() as u64 + 1
        );
    }

    #[test]
    fn a_burst_is_relayed_per_channel_in_arrival_order_with_one_wake_up_each() {
        let hub = hub();
        let metrics = Metrics::default();
        let (t, u) = (subscriber(&hub, "ns#t", 1), subscriber(&hub, "ns#u", 2));
        let both = subscriber(&hub, "ns#t", 3);
        hub.subscribe(&k("ns#u"), 3, &both, None).unwrap();
        let mut inbound = Inbound::default();
        for m in [
            &b"acme ns#t e1 1 Ev AAAA"[..],
            b"!pubs acme ns#u f1 5 2 Ev AAAA Ev BBBB",
            b"!pubs acme ns#t e1 2 3 Ev AAAA Ev BBBB Ev CCCC",
            b"acme ns#u f1 7 Ev AAAA",
            b"acme ns#other e1 1 Ev AAAA",
        ] {
            inbound.add(m, &metrics);
        }
        assert_eq!(inbound.flush(&hub), 4 + 3 + 4 + 3);
        assert_eq!(offsets(&t), vec![1, 2, 3, 4]);
        assert_eq!(offsets(&u), vec![5, 6, 7]);
        // Per channel in order; the two channels' runs follow each other.
        assert_eq!(offsets(&both), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(inbound.flush(&hub), 0, "flushed once");
        assert_eq!(metrics.broker_malformed_messages.get(), 0);
    }

    #[test]
    fn a_run_longer_than_max_run_is_relayed_whole_in_order() {
        let hub = hub();
        let metrics = Metrics::default();
        let outbox = Arc::new(Outbox::new(OutboxLimits {
            max_frames: 4 * MAX_RUN,
            max_bytes: 1 << 30,
        }));
        hub.subscribe(&k("ns#t"), 1, &outbox, None).unwrap();
        let n = MAX_RUN + 3;
        let message = format!("!pubs acme ns#t e1 1 {n}{}", " Ev AAAA".repeat(n));
        let mut inbound = Inbound::default();
        inbound.add(message.as_bytes(), &metrics);
        let next = format!("acme ns#t e1 {} Ev AAAA", n + 1);
        inbound.add(next.as_bytes(), &metrics);
        assert_eq!(inbound.flush(&hub), n + 1);
        assert_eq!(offsets(&outbox), (1..=n as u64 + 1).collect::<Vec<_>>());
    }

    #[test]
    fn an_epoch_change_inside_a_burst_delivers_the_old_epoch_then_closes_with_1011() {
        let hub = hub();
        let metrics = Metrics::default();
        let outbox = subscriber(&hub, "ns#t", 1);
        assert!(hub.note_epoch(&k("ns#t"), "e1"));
        let mut inbound = Inbound::default();
        inbound.add(b"!pubs acme ns#t e1 1 2 Ev AAAA Ev BBBB", &metrics);
        inbound.add(b"!pubs acme ns#t e2 1 2 Ev AAAA Ev BBBB", &metrics);
        // The old epoch's two are pushed before the close; after it, as one by one, the
        // closing outbox drops what follows (the first of the new epoch is not pushed).
        assert_eq!(inbound.flush(&hub), 2 + 1);
        let mut q = VecDeque::new();
        assert_eq!(
            outbox.drain_into(&mut q),
            Err(crate::hub::Stop::Close(
                crate::protocol::CloseCode::InternalError
            ))
        );
        assert!(!hub.note_epoch(&k("ns#t"), "e1"));
        assert!(hub.note_epoch(&k("ns#t"), "e2"));
    }
}
