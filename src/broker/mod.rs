//! The broker: where publications are ordered, stored and routed.
//!
//! The session and HTTP layers only talk to a [`Broker`]. The in-memory broker
//! ([`memory::MemoryBroker`]) is the hub itself: offsets, history and fan-out in one
//! process. A multi-node broker (Redis) sits behind the same trait: it orders and stores
//! publications in the shared store and delivers them into the local hub's subscribers,
//! keeping the same contract: `subscribe` registers before it snapshots, and live
//! publications reach a subscriber in offset order.

pub mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::hub::{ChannelKey, HubError, Outbox, Published, SessionId, Subscribed};
use crate::protocol::EventName;

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

    /// Whether the broker can serve (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// Periodic maintenance (history expiry, forgetting idle channels).
    fn sweep(&self);
}
