//! The canary of each shard: every tick this relay `SPUBLISH`es a sequence number on a
//! private channel in the primary's slots and waits for it on that shard's connection; the
//! round trip is a metric, and a canary late by [`CANARY_DEADLINE`] fails readiness.

use std::time::Instant;

use redis::Value;

use super::{Addr, COMMAND_TIMEOUT, Shards, State};
use crate::telemetry::ShardLabel;

/// A shard whose canary has not come back for this long makes the relay not ready.
pub(super) const CANARY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// One primary's canary.
pub(super) struct Canary {
    pub(super) addr: Addr,
    pub(super) node: u64,
    pub(super) slot: u16,
    sent: Option<(u64, Instant)>,
    seq: u64,
    last_seen: Instant,
}

impl Shards {
    /// Checks the last canary of one primary and sends the next; false when it is late.
    pub(super) async fn canary(&self, st: &mut State, addr: &Addr, first: u16, last: u16) -> bool {
        let existing = self
            .canaries
            .lock()
            .iter()
            .find(|(_, c)| &c.addr == addr)
            .map(|(name, c)| (name.clone(), c.slot));
        let (name, slot) = match existing {
            Some(found) => found,
            None => {
                let Some(name) = self.layout.canary_channel(first, last, &self.relay_id) else {
                    return false;
                };
                let Ok((addr, node)) = self.ssubscribe(st, first, &name).await else {
                    return false;
                };
                self.canaries.lock().insert(
                    name.clone(),
                    Canary {
                        addr,
                        node,
                        slot: first,
                        sent: None,
                        seq: 0,
                        last_seen: Instant::now(),
                    },
                );
                (name, first)
            }
        };
        let seq = {
            let mut canaries = self.canaries.lock();
            let Some(c) = canaries.get_mut(&name) else {
                return false;
            };
            if c.last_seen.elapsed() > CANARY_DEADLINE {
                tracing::warn!(
                    shard = %format!("{}:{}", addr.0, addr.1),
                    "Redis Cluster canary late: not ready"
                );
                return false;
            }
            if c.sent.is_some_and(|(_, at)| at.elapsed() < CANARY_DEADLINE) {
                // The previous one is still in flight: send no other meanwhile.
                return true;
            }
            c.seq += 1;
            c.sent = Some((c.seq, Instant::now()));
            c.seq
        };
        let mut commands = self.commands.clone();
        let publish = redis::cmd("SPUBLISH").arg(&name).arg(seq).clone();
        let sent = commands.on_slot::<Value>(&publish, slot);
        matches!(tokio::time::timeout(COMMAND_TIMEOUT, sent).await, Ok(Ok(_)))
    }

    /// A canary came back (`payload` is its sequence number): records its round trip.
    pub(super) fn canary_back(&self, c: &mut Canary, payload: &[u8]) {
        let seq = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        if let (Some(seq), Some((sent_seq, at))) = (seq, c.sent)
            && seq == sent_seq
        {
            let rtt = at.elapsed();
            c.last_seen = Instant::now();
            c.sent = None;
            let secs = rtt.as_secs_f64();
            self.metrics
                .broker_shard_canary_rtt
                .get_or_create(&ShardLabel {
                    shard: format!("{}:{}", c.addr.0, c.addr.1),
                })
                .set(secs);
            // The relay-wide canary gauges the alerts watch: the latest return of any shard
            // (a shard that stops answering fails readiness, above).
            self.metrics.broker_canary_rtt.set(secs);
            self.metrics.broker_canary_timestamp.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
        }
    }
}
