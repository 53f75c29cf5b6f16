//! The Redis broker: many relay nodes share offsets, epochs and history, so a client may
//! reconnect to any node and recover there (PROTOCOL.md 6).
//!
//! Where things live:
//! - Redis holds, per channel, a hash `<prefix>:m:<app>:<channel>` with the epoch and the last
//!   offset (`top`), and a list `<prefix>:h:<app>:<channel>` with the newest publications in
//!   offset order (`<stored at, ms> <event> <data>`), so the list's entries are exactly the
//!   offsets `top - len + 1 ..= top`. Idempotency keys are `<prefix>:i:<app>:<channel> <key>`.
//!   Nothing is stored for a channel before its first publication, and each app's channels
//!   are bounded by its quota (`scripts.rs`).
//! - Publishing is one Lua script call per channel (atomic in Redis), for one publication or
//!   for a batch's run of them on that channel: repeat checks, epoch, next offsets, appends,
//!   trims, expiries, and one `PUBLISH` on `<prefix>:p:<db>` that announces everything the call
//!   stored: `<app> <channel> <epoch> <offset> <event> <data>` for one publication,
//!   `!pubs <app> <channel> <epoch> <first offset> <count> <event> <data> ...` for several
//!   (names never contain a space; data is base64; `message.rs`). A batch is cut into such
//!   calls and pipelined (`publish.rs`).
//! - Every node holds one pub/sub connection subscribed to `<prefix>:p:<db>`; it takes what the
//!   connection already holds at once and hands it to its local hub one batch per channel
//!   ([`Hub::relay_batch`]), which pushes it to the node's subscribers only: one queue push and
//!   one wake-up per subscriber per batch, as a batch publish costs on one node.
//!
//! Why there is no gap and no duplicate (the hub's argument, across nodes):
//! - One Redis connection delivers messages in the order Redis executed the `PUBLISH`es, and
//!   the script gives offsets in that same order, so a node sees each channel in offset order.
//!   A message of several publications carries consecutive offsets that one script run
//!   stored: the same stream, cut differently, and a node relays a burst in arrival order
//!   per channel.
//! - A subscribe registers the session in the local hub *first*, then reads the channel's
//!   position and replay from Redis. A publication is either in that read (offset <= the
//!   `top` read, replayed) or executed after it, hence published after the node was already
//!   listening and registered: it arrives live. (A script call is atomic: all of its
//!   publications are on the same side of the read.) Live frames at or below `top` are dropped by
//!   the session (the overlap).
//! - The one way to miss messages is to lose the pub/sub connection. Then every local
//!   subscriber is closed with 1011 (its client reconnects and recovers from Redis history),
//!   a generation counter makes any subscribe that overlapped the loss fail, and the node is
//!   not ready until it listens again.
//! - If Redis loses a channel's state while connected (flush, eviction), its next
//!   publication has a new epoch; the hub closes that channel's subscribers with 1011 and
//!   they recover with `recovered:false`.
//!
//! On one server, every node receives every publication (one subscription for the
//! cluster, not one per channel): simple, and right while Redis pub/sub throughput exceeds
//! the cluster's publication rate (docs/operations.md).
//!
//! The three deployments (docs/operations.md):
//! - `kind = "redis"`: one server, as above (`pubsub.rs`).
//! - `kind = "redis-sentinel"`: the same, on the primary the sentinels name; a failover
//!   ends the listening like a lost connection (`sentinel.rs`).
//! - `kind = "redis-cluster"`: a channel's keys share one slot (`layout.rs`), publications go
//!   over sharded pub/sub, and each relay subscribes, per channel, on the owning primary
//!   only for the channels its clients follow (`shards.rs`). The subscribe order stays
//!   "register locally, subscribe in Redis (confirmed), then read": the argument above
//!   holds per channel, one primary ordering a channel's scripts and `SPUBLISH`es.
//! - In every mode, the scripts renew a channel's epoch when the primary changed, so writes
//!   lost by a failover never leave two publications under one (epoch, offset)
//!   (`scripts.rs`).
//!
//! Bounds: history per channel by count (`LTRIM`) and TTL (list expiry, and entries older
//! than the TTL are not replayed); the total is bounded by Redis `maxmemory`, not by
//! `history.max_bytes`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::{BoxFuture, Broker, BrokerError, PublishItem, RevocationHook, SharedRevocation};
use crate::history::Publication;
use crate::hub::{ChannelKey, Hub, Outbox, Published, SessionId, Subscribed};
use crate::protocol::EventName;
use crate::telemetry::Metrics;
use commands::Commands;
use layout::Layout;
use revocations::{REVOCATION_MESSAGE, kind_value};
use scripts::SUBSCRIBE_LUA;
use shards::Shards;

mod commands;
mod layout;
mod message;
mod publish;
mod pubsub;
mod revocations;
mod scripts;
mod sentinel;
mod shards;
mod start;

/// How long a Redis command may take before the broker reports itself unavailable.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A broker on Redis, shared by every relay node.
pub struct RedisBroker {
    hub: Arc<Hub>,
    commands: Commands,
    publish_script: redis::Script,
    subscribe_script: redis::Script,
    revoke_script: redis::Script,
    /// Set once by the relay; the listener waits for it before it listens.
    revocation_hook: tokio::sync::watch::Sender<Option<RevocationHook>>,
    layout: Layout,
    history_ttl: Duration,
    max_per_channel: usize,
    state_ttl: Duration,
    /// On a Redis Cluster: the shard subscriptions (then `listening` and `generation`
    /// are unused).
    shards: Option<Arc<Shards>>,
    /// True while the pub/sub connection listens (one server).
    listening: Arc<AtomicBool>,
    /// Bumped each time the pub/sub connection is lost.
    generation: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("RedisBroker")
            .field("prefix", &self.layout.prefix())
            .field("cluster", &self.shards.is_some())
            .field("ready", &self.is_ready())
            .finish()
    }
}

fn new_epoch() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

impl RedisBroker {
    /// Runs a channel's script. A primary promoted after a failover has not cached it
    /// (`NOSCRIPT`): it is then loaded on the channel's primary and run once more.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
        code: &str,
        key: &ChannelKey,
    ) -> redis::RedisResult<T> {
        let mut conn = self.commands.clone();
        match call.invoke_async(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let load = redis::cmd("SCRIPT").arg("LOAD").arg(code).clone();
                conn.on_slot::<String>(&load, Layout::slot(key)).await?;
                call.invoke_async(&mut conn).await
            }
            r => r,
        }
    }

    async fn subscribe_via_redis(
        &self,
        key: &ChannelKey,
        session: SessionId,
        outbox: &Arc<Outbox>,
        since: Option<(&str, u64)>,
    ) -> Result<Subscribed, BrokerError> {
        let generation = self.generation.load(Ordering::Acquire);
        if !self.is_ready() {
            return Err(BrokerError::Unavailable);
        }
        // Registered before the read: see the module docs.
        let local = self.hub.subscribe(key, session, outbox, None)?;
        // On a cluster, then subscribed to the channel's shard (confirmed) before the read.
        let node = match &self.shards {
            Some(shards) => match shards.listen_to(key).await {
                Ok(node) => Some(node),
                Err(e) => {
                    self.hub.unsubscribe(key, session);
                    return Err(e);
                }
            },
            None => None,
        };
        // A read is safe to retry (the script's only write is creating the epoch once): the
        // first command after Redis came back may meet the old, broken connection.
        let read = match self.read(key, since).await {
            Err(_) => self.read(key, since).await,
            ok => ok,
        };
        let fail = |e| {
            self.hub.unsubscribe(key, session);
            Err(e)
        };
        let (epoch, top, recovered, entries) = match read {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let still_listening = match (&self.shards, node) {
            (Some(shards), Some(node)) => shards.still_listening(key, node).await,
            _ => {
                self.generation.load(Ordering::Acquire) == generation
                    && self.listening.load(Ordering::Acquire)
            }
        };
        if !still_listening || !self.hub.note_epoch(key, &epoch) {
            return fail(BrokerError::Unavailable);
        }
        let first = since.map_or(0, |(_, o)| o + 1);
        let mut replay = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let Some((event, data)) = entry
                .split_once(' ')
                .and_then(|(_, rest)| rest.split_once(' '))
            else {
                return fail(BrokerError::Unavailable);
            };
            replay.push(Publication::encode(
                local.channel_id,
                key.channel.as_str(),
                event,
                data,
                first + i as u64,
            ));
        }
        Ok(Subscribed {
            channel_id: local.channel_id,
            epoch: epoch.into(),
            offset: top,
            recovered,
            replay,
        })
    }

    /// The channel's epoch, last offset, and (with `since`) whether it recovers and what.
    async fn read(
        &self,
        key: &ChannelKey,
        since: Option<(&str, u64)>,
    ) -> Result<(String, u64, Option<bool>, Vec<String>), BrokerError> {
        let (since_epoch, since_offset) = since.unwrap_or(("", 0));
        let mut call = self.subscribe_script.prepare_invoke();
        for k in self.layout.channel(key).keys {
            call.key(k);
        }
        call.arg(new_epoch())
            .arg(self.state_ttl.as_secs().max(1))
            .arg(millis(self.history_ttl))
            .arg(since_epoch)
            .arg(since_offset)
            .arg(key.channel.as_str());
        let mut reply: Vec<redis::Value> = self
            .invoke(&call, SUBSCRIBE_LUA, key)
            .await
            .map_err(|e| unavailable(&self.metrics, "subscribe", &e))?;
        if reply.len() < 3 {
            return Err(BrokerError::Unavailable);
        }
        let entries: Vec<String> = reply
            .split_off(3)
            .into_iter()
            .map(redis::from_redis_value)
            .collect::<Result<_, _>>()
            .map_err(|_| BrokerError::Unavailable)?;
        let mut head = reply.into_iter();
        let mut next = || head.next().ok_or(BrokerError::Unavailable);
        let epoch: String =
            redis::from_redis_value(next()?).map_err(|_| BrokerError::Unavailable)?;
        let top: u64 = redis::from_redis_value(next()?).map_err(|_| BrokerError::Unavailable)?;
        let status: String =
            redis::from_redis_value(next()?).map_err(|_| BrokerError::Unavailable)?;
        let recovered = match status.as_str() {
            "live" => None,
            "ok" => Some(true),
            _ => Some(false),
        };
        let entries = if recovered == Some(true) {
            entries
        } else {
            Vec::new()
        };
        if recovered == Some(true) && entries.len() as u64 != top - since_offset {
            return Err(BrokerError::Unavailable);
        }
        Ok((epoch, top, recovered, entries))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

pub(super) fn unavailable(metrics: &Metrics, what: &str, e: &redis::RedisError) -> BrokerError {
    metrics.broker_errors.inc();
    // The error's kind and text only: never the URL or a payload.
    tracing::warn!(operation = what, error = ?e.kind(), "Redis unavailable");
    BrokerError::Unavailable
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        key: &'a ChannelKey,
        event: &'a EventName,
        data: &'a str,
        idempotency_key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        Box::pin(self.publish_one(PublishItem {
            key,
            event,
            data,
            idempotency_key,
        }))
    }

    fn publish_many<'a>(
        &'a self,
        items: &'a [PublishItem<'a>],
    ) -> BoxFuture<'a, Vec<Result<Published, BrokerError>>> {
        Box::pin(self.publish_batch(items))
    }

    fn subscribe<'a>(
        &'a self,
        key: &'a ChannelKey,
        session: SessionId,
        outbox: &'a Arc<Outbox>,
        since: Option<(&'a str, u64)>,
    ) -> BoxFuture<'a, Result<Subscribed, BrokerError>> {
        Box::pin(self.subscribe_via_redis(key, session, outbox, since))
    }

    fn unsubscribe(&self, key: &ChannelKey, session: SessionId) {
        self.hub.unsubscribe(key, session);
    }

    fn share_revocation<'a>(
        &'a self,
        r: &'a SharedRevocation,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let (kind, value) = kind_value(&r.target);
            let message = format!(
                "{REVOCATION_MESSAGE}{} {kind} {} {value}",
                r.app.as_str(),
                r.until
            );
            let (channel, command) = self.layout.revocation_channel();
            let mut conn = self.commands.clone();
            let _: i64 = self
                .revoke_script
                .key(self.layout.revocation_key(r))
                .arg(r.until)
                .arg(&channel)
                .arg(message)
                .arg(command)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| unavailable(&self.metrics, "revoke", &e))?;
            Ok(())
        })
    }

    fn set_revocation_hook(&self, hook: RevocationHook) {
        self.revocation_hook.send_replace(Some(hook));
    }

    fn is_ready(&self) -> bool {
        match &self.shards {
            Some(s) => s.is_ready(),
            None => self.listening.load(Ordering::Acquire),
        }
    }

    fn sweep(&self) {
        self.hub.sweep();
        if let (Some(shards), Ok(rt)) = (&self.shards, tokio::runtime::Handle::try_current()) {
            let shards = Arc::clone(shards);
            rt.spawn(async move { shards.prune().await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AppId, Channel};

    #[test]
    fn idempotency_keys_of_different_channels_never_share_a_redis_key() {
        let k = |ch: &str| ChannelKey {
            app: AppId::parse("acme").unwrap(),
            channel: Channel::parse(ch).unwrap(),
        };
        assert_ne!(
            Layout::single("p", 0).idempotency(&k("ns#a"), "b:c"),
            Layout::single("p", 0).idempotency(&k("ns#a:b"), "c")
        );
        assert_eq!(
            Layout::single("p", 0).idempotency(&k("ns#a"), "k 1"),
            "p:i:acme:ns#a k 1"
        );
    }
}
