//! Batches in one round trip: on one server (or under Sentinel) the items' publish scripts
//! go out as one pipeline of `EVALSHA`s, which Redis runs in order, so a batch costs one
//! round trip instead of one per item, with the same per-item results. On a cluster the
//! items may live on several shards: they are published one by one (each follows its
//! slot, `MOVED`/`ASK` included), which keeps a channel's items in batch order.

use redis::Value;

use super::RedisBroker;
use super::scripts::PUBLISH_LUA;
use crate::broker::{Broker, BrokerError, PublishItem};
use crate::hub::Published;

impl RedisBroker {
    pub(super) async fn publish_pipelined(
        &self,
        items: &[PublishItem<'_>],
    ) -> Vec<Result<Published, BrokerError>> {
        if self.shards.is_some() || items.len() < 2 {
            return self.one_by_one(items).await;
        }
        if !self.is_ready() {
            return items
                .iter()
                .map(|_| Err(BrokerError::Unavailable))
                .collect();
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for i in items {
            let (keys, args) = self.publish_params(i.key, i.event, i.data, i.idempotency_key);
            pipe.cmd("EVALSHA")
                .arg(self.publish_script.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(args);
        }
        let mut conn = self.commands.clone();
        let replies: Vec<Value> = match pipe.query_async(&mut conn).await {
            Ok(r) => r,
            Err(e) => {
                super::unavailable(&self.metrics, "publish batch", &e);
                return items
                    .iter()
                    .map(|_| Err(BrokerError::Unavailable))
                    .collect();
            }
        };
        // A server without the script (just started or promoted) refuses every item alike:
        // they then go one by one, which loads it, in order.
        let no_script = replies.iter().any(|v| {
            matches!(v, Value::ServerError(e)
                if e.kind() == Some(redis::ServerErrorKind::NoScript))
        });
        if no_script || replies.len() != items.len() {
            let load = redis::cmd("SCRIPT").arg("LOAD").arg(PUBLISH_LUA).clone();
            let _ = conn.on_slot::<String>(&load, 0).await;
            return self.one_by_one(items).await;
        }
        replies
            .into_iter()
            .map(|v| match v {
                Value::ServerError(e) => {
                    self.metrics.broker_errors.inc();
                    tracing::warn!(error = ?e.kind(), "Redis refused a batch item");
                    Err(BrokerError::Unavailable)
                }
                v => match redis::from_redis_value::<(String, u8)>(v) {
                    Ok((position, status)) => self.published(&position, status),
                    Err(_) => Err(BrokerError::Unavailable),
                },
            })
            .collect()
    }

    async fn one_by_one(&self, items: &[PublishItem<'_>]) -> Vec<Result<Published, BrokerError>> {
        let mut out = Vec::with_capacity(items.len());
        for i in items {
            out.push(
                self.publish_in_redis(i.key, i.event, i.data, i.idempotency_key)
                    .await,
            );
        }
        out
    }
}
