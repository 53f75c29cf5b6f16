//! Publishing: one publish script call stores a run of one channel's publications and
//! announces them in one pub/sub message (`scripts.rs`, `message.rs`).
//!
//! A batch ([`Broker::publish_many`](crate::broker::Broker::publish_many)) is grouped by
//! channel, keeping each channel's items in batch order, and each channel's run is cut into
//! calls of at most [`MAX_ITEMS`] items and [`MAX_BYTES`] of data (so that one script never
//! holds Redis long and one message stays small next to Redis' pub/sub output buffer
//! limits). The calls then go out in rounds, round `r` holding the `r`-th call of every
//! channel that has one:
//! - one server or Sentinel: a round is one pipeline of `EVALSHA`s, so a batch over any
//!   number of channels costs one round trip (more only for a channel with more than one
//!   call's worth of items);
//! - a Redis Cluster: a round's calls run concurrently, each on its channel's shard (the
//!   cluster connection multiplexes them per shard and follows `MOVED`/`ASK`).
//!
//! A channel's calls therefore run one after the other, in order; calls of different
//! channels have no order between them (nor do their publications, as on one node: order is
//! per channel). A call that fails (Redis unreachable, or refused) fails its items with
//! `Unavailable`, and the channel's later calls are not made, so a batch never publishes an
//! item of a channel after one of the same channel that failed. A server that lacks the
//! script (just started, or promoted) refuses the call before running it (`NOSCRIPT`): it is
//! loaded and that call alone made again, before the next round.

use std::collections::HashMap;

use futures_util::future::join_all;
use redis::Value;

use super::scripts::PUBLISH_LUA;
use super::{RedisBroker, millis, new_epoch, unavailable};
use crate::broker::{Broker, BrokerError, PublishItem};
use crate::hub::{ChannelKey, Published};

/// Most publications one script call stores and one message carries.
pub(super) const MAX_ITEMS: usize = 512;

/// Most bytes of data one script call carries, unless a single item is larger (it then goes
/// alone).
pub(super) const MAX_BYTES: usize = 1 << 20;

/// The outcome of one script call: one result per item, or the call failed as a whole.
type CallResult = Result<Vec<Result<Published, BrokerError>>, BrokerError>;

/// Cuts a batch into script calls: for each channel (in order of first appearance) its
/// items' indices in batch order, split into calls; returns each channel's calls.
pub(super) fn plan(items: &[PublishItem<'_>]) -> Vec<Vec<Vec<usize>>> {
    let mut channels: Vec<Vec<Vec<usize>>> = Vec::new();
    // Per channel: its place in `channels` and the bytes of its last call.
    let mut open: HashMap<&ChannelKey, (usize, usize)> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let (c, bytes) = open.entry(item.key).or_insert_with(|| {
            channels.push(vec![Vec::new()]);
            (channels.len() - 1, 0)
        });
        let calls = &mut channels[*c];
        let last = calls.last_mut().expect("a channel has a call");
        if !last.is_empty() && (last.len() >= MAX_ITEMS || *bytes + item.data.len() > MAX_BYTES) {
            calls.push(Vec::new());
            *bytes = 0;
        }
        calls.last_mut().expect("just pushed").push(i);
        *bytes += item.data.len();
    }
    channels
}

impl RedisBroker {
    /// One publication: a call of one item.
    pub(super) async fn publish_one(
        &self,
        item: PublishItem<'_>,
    ) -> Result<Published, BrokerError> {
        if !self.is_ready() {
            return Err(BrokerError::Unavailable);
        }
        let mut results = self.call(&[&item]).await?;
        results.pop().ok_or(BrokerError::Unavailable)?
    }

    /// A batch: per-item results in batch order (see the module docs).
    pub(super) async fn publish_batch(
        &self,
        items: &[PublishItem<'_>],
    ) -> Vec<Result<Published, BrokerError>> {
        if !self.is_ready() {
            return items
                .iter()
                .map(|_| Err(BrokerError::Unavailable))
                .collect();
        }
        let channels = plan(items);
        let mut out: Vec<Option<Result<Published, BrokerError>>> = vec![None; items.len()];
        let mut failed = vec![false; channels.len()];
        let rounds = channels.iter().map(Vec::len).max().unwrap_or(0);
        for round in 0..rounds {
            // (channel, its call of this round)
            let calls: Vec<(usize, Vec<&PublishItem<'_>>)> = channels
                .iter()
                .enumerate()
                .filter(|(c, _)| !failed[*c])
                .filter_map(|(c, calls)| {
                    let call = calls.get(round)?;
                    Some((c, call.iter().map(|&i| &items[i]).collect()))
                })
                .collect();
            let results = self.round(&calls).await;
            for ((c, _), result) in calls.iter().zip(results) {
                let indices = &channels[*c][round];
                match result {
                    Ok(per_item) if per_item.len() == indices.len() => {
                        for (&i, r) in indices.iter().zip(per_item) {
                            out[i] = Some(r);
                        }
                    }
                    _ => failed[*c] = true,
                }
            }
        }
        // Items of failed calls, and of the calls not made after them.
        out.into_iter()
            .map(|r| r.unwrap_or(Err(BrokerError::Unavailable)))
            .collect()
    }

    /// One round of calls, one per channel: a pipeline on one server, concurrent calls on a
    /// cluster. One result per call, in order.
    async fn round(&self, calls: &[(usize, Vec<&PublishItem<'_>>)]) -> Vec<CallResult> {
        if self.shards.is_some() || calls.len() == 1 {
            return join_all(calls.iter().map(|(_, items)| self.call(items))).await;
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (_, items) in calls {
            let (keys, args) = self.publish_params(items);
            pipe.cmd("EVALSHA")
                .arg(self.publish_script.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(args);
        }
        let mut conn = self.commands.clone();
        let replies = match pipe.query_async::<Vec<Value>>(&mut conn).await {
            Ok(r) if r.len() == calls.len() => r,
            Ok(_) => {
                return calls
                    .iter()
                    .map(|_| Err(BrokerError::Unavailable))
                    .collect();
            }
            Err(e) => {
                unavailable(&self.metrics, "publish batch", &e);
                return calls
                    .iter()
                    .map(|_| Err(BrokerError::Unavailable))
                    .collect();
            }
        };
        let mut out = Vec::with_capacity(calls.len());
        for ((_, items), reply) in calls.iter().zip(replies) {
            out.push(match reply {
                // Not run: loaded, and this call made again (alone, before the next round).
                Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript) => {
                    self.call(items).await
                }
                Value::ServerError(e) => {
                    self.metrics.broker_errors.inc();
                    tracing::warn!(error = ?e.kind(), "Redis refused a publish call");
                    Err(BrokerError::Unavailable)
                }
                v => self.results(v, items.len()),
            });
        }
        out
    }

    /// One script call for items of one channel (loading the script if needed).
    async fn call(&self, items: &[&PublishItem<'_>]) -> CallResult {
        let key = items.first().ok_or(BrokerError::Unavailable)?.key;
        let mut call = self.publish_script.prepare_invoke();
        let (keys, args) = self.publish_params(items);
        for k in keys {
            call.key(k);
        }
        for a in args {
            call.arg(a);
        }
        let reply: Value = self
            .invoke(&call, PUBLISH_LUA, key)
            .await
            .map_err(|e| unavailable(&self.metrics, "publish", &e))?;
        self.results(reply, items.len())
    }

    /// The publish script's keys and arguments for items of one channel (`scripts.rs`).
    fn publish_params(&self, items: &[&PublishItem<'_>]) -> (Vec<String>, Vec<String>) {
        let Some(first) = items.first() else {
            return (Vec::new(), Vec::new());
        };
        let key = first.key;
        let names = self.layout.channel(key);
        let mut keys = names.keys.to_vec();
        let quota = self
            .layout
            .channel_quota(self.hub.app_quota(&key.app).max_channels);
        let mut args = Vec::with_capacity(9 + 3 * items.len());
        args.extend([
            new_epoch(),
            key.app.as_str().to_string(),
            key.channel.as_str().to_string(),
            millis(self.history_ttl).to_string(),
            self.max_per_channel.max(1).to_string(),
            self.state_ttl.as_secs().max(1).to_string(),
            names.announce,
            quota.to_string(),
            names.command.to_string(),
        ]);
        for item in items {
            let index = match item.idempotency_key {
                Some(k) => {
                    keys.push(self.layout.idempotency(key, k));
                    keys.len()
                }
                None => 0,
            };
            args.extend([
                item.event.as_str().to_string(),
                item.data.to_string(),
                index.to_string(),
            ]);
        }
        (keys, args)
    }

    /// The publish script's answer, `{"<epoch> <offset>", status}` per item.
    fn results(&self, reply: Value, n: usize) -> CallResult {
        let Value::Array(values) = reply else {
            return Err(BrokerError::Unavailable);
        };
        if values.len() != 2 * n {
            return Err(BrokerError::Unavailable);
        }
        let mut values = values.into_iter();
        let mut out = Vec::with_capacity(n);
        while let (Some(position), Some(status)) = (values.next(), values.next()) {
            let position: String =
                redis::from_redis_value(position).map_err(|_| BrokerError::Unavailable)?;
            let status: u8 =
                redis::from_redis_value(status).map_err(|_| BrokerError::Unavailable)?;
            out.push(self.published(&position, status));
        }
        Ok(out)
    }

    /// One item's answer: `"<epoch> <offset>"` and its status.
    fn published(&self, position: &str, status: u8) -> Result<Published, BrokerError> {
        if status == 2 {
            self.metrics.limit_hit("channels_per_app");
            return Err(BrokerError::Hub(crate::hub::HubError::AppChannelQuota));
        }
        let (epoch, offset) = position
            .split_once(' ')
            .and_then(|(e, o)| Some((e, o.parse::<u64>().ok()?)))
            .ok_or(BrokerError::Unavailable)?;
        if status == 1 {
            self.metrics.idempotent_repeats.inc();
        } else {
            self.metrics.publications.inc();
        }
        Ok(Published {
            offset,
            epoch: epoch.into(),
            duplicate: status == 1,
            overflowed: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AppId, Channel, EventName};

    #[test]
    fn a_batch_is_cut_per_channel_in_order_and_bounded_per_call() {
        let k = |ch: &str| ChannelKey {
            app: AppId::parse("acme").unwrap(),
            channel: Channel::parse(ch).unwrap(),
        };
        let (a, b) = (k("ns#a"), k("ns#b"));
        let ev = EventName::parse("Ev").unwrap();
        let small = "AAAA".to_string();
        let big = "A".repeat(MAX_BYTES);
        let item = |key, data| PublishItem {
            key,
            event: &ev,
            data,
            idempotency_key: None,
        };
        let items = [
            item(&a, &small),
            item(&b, &small),
            item(&a, &small),
            item(&a, &big),
            item(&b, &big),
            item(&a, &small),
        ];
        assert_eq!(
            plan(&items),
            vec![vec![vec![0, 2], vec![3], vec![5]], vec![vec![1], vec![4]]]
        );
        let many: Vec<_> = (0..MAX_ITEMS * 2 + 1).map(|_| item(&a, &small)).collect();
        let calls = &plan(&many)[0];
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![MAX_ITEMS, MAX_ITEMS, 1]
        );
        assert_eq!(calls.concat(), (0..many.len()).collect::<Vec<_>>());
        assert!(plan(&[]).is_empty());
    }

    #[test]
    fn the_script_announces_in_the_format_the_nodes_parse() {
        assert!(PUBLISH_LUA.contains(&format!("'{}'", super::super::message::BATCH_MESSAGE)));
    }
}
