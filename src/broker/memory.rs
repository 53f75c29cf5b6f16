//! The in-memory broker: the default for one node. Offsets and history live in this
//! process, so a restart starts every channel in a new epoch and clients that recover
//! across it get `recovered:false`.

use std::sync::Arc;

use indexmap::IndexMap;

use super::{BoxFuture, Broker, BrokerError, PublishItem, RevocationHook, SharedRevocation};
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

    /// A batch is published per channel ([`Hub::publish_run`]): each channel's items in
    /// their order, under one lock, one push per subscriber. Channels are independent, so
    /// this is what publishing the items one by one would do.
    fn publish_many<'a>(
        &'a self,
        items: &'a [PublishItem<'a>],
    ) -> BoxFuture<'a, Vec<Result<Published, BrokerError>>> {
        let mut by_channel: IndexMap<&ChannelKey, Vec<usize>> = IndexMap::new();
        for (i, item) in items.iter().enumerate() {
            by_channel.entry(item.key).or_default().push(i);
        }
        let mut out: Vec<(usize, Result<Published, BrokerError>)> = Vec::with_capacity(items.len());
        for (key, indices) in by_channel {
            let run: Vec<_> = indices
                .iter()
                .map(|&i| (items[i].event, items[i].data, items[i].idempotency_key))
                .collect();
            match self.hub.publish_run(key, &run) {
                Ok(published) => out.extend(indices.into_iter().zip(published.into_iter().map(Ok))),
                Err(e) => out.extend(indices.into_iter().map(|i| (i, Err(e.into())))),
            }
        }
        out.sort_unstable_by_key(|(i, _)| *i);
        let out = out.into_iter().map(|(_, r)| r).collect();
        Box::pin(std::future::ready(out))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubConfig;
    use crate::protocol::{AppId, Channel};
    use crate::telemetry::Metrics;

    #[tokio::test]
    async fn a_batch_over_several_channels_keeps_each_channels_order_and_the_items_order() {
        let hub = Arc::new(Hub::new(HubConfig::default(), Arc::new(Metrics::default())));
        let broker = MemoryBroker::new(hub);
        let key = |c: &str| ChannelKey {
            app: AppId::parse("a").unwrap(),
            channel: Channel::parse(c).unwrap(),
        };
        let (a, b) = (key("ns#a"), key("ns#b"));
        let ev = EventName::parse("E").unwrap();
        let item = |key, idempotency_key| PublishItem {
            key,
            event: &ev,
            data: "AAAA",
            idempotency_key,
        };
        let items = [
            item(&a, None),
            item(&b, Some("k")),
            item(&a, None),
            item(&b, Some("k")),
            item(&b, None),
        ];
        let got: Vec<_> = broker
            .publish_many(&items)
            .await
            .into_iter()
            .map(|r| r.map(|p| (p.offset, p.duplicate)).unwrap())
            .collect();
        assert_eq!(
            got,
            [(1, false), (1, false), (2, false), (1, true), (2, false)]
        );
    }
}
