//! The broker: where publications are ordered, stored and routed.
//!
//! The session and HTTP layers only talk to a [`Broker`]. The in-memory broker
//! ([`memory::MemoryBroker`]) is the hub itself: offsets, history and fan-out in one
//! process. A multi-node broker (Redis) sits behind the same trait: it orders and stores
//! publications in the shared store and delivers them into the local hub's subscribers,
//! keeping the same contract: `subscribe` registers before it snapshots, and live
//! publications reach a subscriber in offset order.

pub mod canary;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::hub::{ChannelKey, HubError, Outbox, Published, SessionId, Subscribed};
use crate::protocol::{AppId, EventName};
use crate::revocation::Target;

/// Applies a revocation that arrived from the shared store (synchronously: it records it and
/// closes the matching sessions).
pub type RevocationHook = Arc<dyn Fn(&SharedRevocation) + Send + Sync>;

/// A revocation made on another node, to apply here too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRevocation {
    /// The app.
    pub app: AppId,
    /// What is revoked.
    pub target: Target,
    /// Until when (unix seconds).
    pub until: i64,
}

/// One publication of a batch ([`Broker::publish_many`]).
#[derive(Debug, Clone, Copy)]
pub struct PublishItem<'a> {
    /// The channel.
    pub key: &'a ChannelKey,
    /// The event name.
    pub event: &'a EventName,
    /// The ciphertext (base64).
    pub data: &'a str,
    /// The idempotency key, if any.
    pub idempotency_key: Option<&'a str>,
}

/// A boxed future, for an object-safe async trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A broker operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// A hub limit refused it.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The shared store is unreachable.
    #[error("broker unavailable")]
    Unavailable,
}

/// Orders, stores and routes publications.
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// Publishes one publication; returns its position (or the first one's, for a
    /// repeated idempotency key).
    fn publish<'a>(
        &'a self,
        key: &'a ChannelKey,
        event: &'a EventName,
        data: &'a str,
        idempotency_key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Published, BrokerError>>;

    /// Publishes several publications in order, with one result per item (a batch). The
    /// default publishes them one by one; a broker that can sends them in one round trip.
    fn publish_many<'a>(
        &'a self,
        items: &'a [PublishItem<'a>],
    ) -> BoxFuture<'a, Vec<Result<Published, BrokerError>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                out.push(
                    self.publish(i.key, i.event, i.data, i.idempotency_key)
                        .await,
                );
            }
            out
        })
    }

    /// Registers a session's outbox for a channel and returns what to replay.
    fn subscribe<'a>(
        &'a self,
        key: &'a ChannelKey,
        session: SessionId,
        outbox: &'a Arc<Outbox>,
        since: Option<(&'a str, u64)>,
    ) -> BoxFuture<'a, Result<Subscribed, BrokerError>>;

    /// Removes a session from a channel.
    fn unsubscribe(&self, key: &ChannelKey, session: SessionId);

    /// Makes a revocation known to every node (a no-op for a single node). Each node applies
    /// it through its [`RevocationHook`] when it arrives, this one included.
    fn share_revocation<'a>(
        &'a self,
        revocation: &'a SharedRevocation,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Installs what applies revocations made on any node, including those still live from
    /// before this node started; a multi-node broker is not ready before it is installed
    /// and has applied those. Called once, by the relay, before it serves.
    fn set_revocation_hook(&self, hook: RevocationHook);

    /// Whether the broker can serve (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// Periodic maintenance (history expiry, forgetting idle channels).
    fn sweep(&self);
}
