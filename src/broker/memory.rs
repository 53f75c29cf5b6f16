//! The in-memory broker: the default for one node. Offsets and history live in this
//! process, so a restart starts every channel in a new epoch and clients that recover
//! across it get `recovered:false`.

use std::sync::Arc;

use super::{BoxFuture, Broker, BrokerError, RevocationHook, SharedRevocation};
use crate::hub::{ChannelKey, Hub, Outbox, Published, SessionId, Subscribed};
use crate::protocol::EventName;

/// A broker that is the local hub.
#[derive(Debug)]
pub struct MemoryBroker {
    hub: Arc<Hub>,
}

impl MemoryBroker {
    /// Wraps a hub.
    pub fn new(hub: Arc<Hub>) -> Self {
        MemoryBroker { hub }
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        key: &'a ChannelKey,
        event: &'a EventName,
        data: &'a str,
        idempotency_key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        let r = self
            .hub
            .publish(key, event, data, idempotency_key)
            .map_err(Into::into);
        Box::pin(std::future::ready(r))
    }

    fn subscribe<'a>(
        &'a self,
        key: &'a ChannelKey,
        session: SessionId,
        outbox: &'a Arc<Outbox>,
        since: Option<(&'a str, u64)>,
    ) -> BoxFuture<'a, Result<Subscribed, BrokerError>> {
        let r = self
            .hub
            .subscribe(key, session, outbox, since)
            .map_err(Into::into);
        Box::pin(std::future::ready(r))
    }

    fn unsubscribe(&self, key: &ChannelKey, session: SessionId) {
        self.hub.unsubscribe(key, session);
    }

    fn share_revocation<'a>(
        &'a self,
        _: &'a SharedRevocation,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn set_revocation_hook(&self, _: RevocationHook) {
        // One node: its revocations are applied where they are made.
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn sweep(&self) {
        self.hub.sweep();
    }
}
