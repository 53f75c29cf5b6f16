//! The pub/sub side of the single-server and Sentinel broker: one connection subscribed to
//! `<prefix>:p:<db>`, relaying publications into the local hub and revocations into the
//! relay; losing it closes every local subscriber (see the parent module's docs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;

use super::commands::Commands;
use super::revocations::{REVOCATION_MESSAGE, load_revocations, parse_revocation_message};
use super::sentinel::{Target, is_primary};
use super::{COMMAND_TIMEOUT, RedisBroker};
use crate::broker::RevocationHook;
use crate::hub::{ChannelKey, Hub};
use crate::protocol::{AppId, Channel, CloseCode, EventName};
use crate::telemetry::Metrics;

/// The pub/sub side: listens on `channel`, relays into the hub, and on a lost connection
/// closes every local subscriber (1011), bumps the generation and reconnects with backoff.
/// Ends when the broker is dropped.
#[allow(clippy::too_many_arguments)]
pub(super) async fn listen(
    canary: crate::broker::canary::Canary,
    target: Target,
    mut commands: Commands,
    prefix: String,
    channel: String,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    mut hook: tokio::sync::watch::Receiver<Option<RevocationHook>>,
    listening: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    broker: std::sync::Weak<RedisBroker>,
) {
    // Nothing is served before the relay can apply shared revocations.
    let revoke: RevocationHook = match hook.wait_for(Option::is_some).await {
        Ok(h) => h.as_ref().map(Arc::clone).expect("waited for"),
        Err(_) => return,
    };
    let mut backoff = Duration::from_millis(100);
    while broker.strong_count() > 0 {
        // Ready means both connections work: the command connection (re)connects lazily,
        // so it is exercised here once the pub/sub connection listens.
        let connected = async {
            let client = target.resolve().await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            let mut pong = redis::cmd("PING")
                .query_async::<String>(&mut commands)
                .await;
            if pong.is_err() {
                pong = redis::cmd("PING")
                    .query_async::<String>(&mut commands)
                    .await;
            }
            pong?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, connected).await {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(100);
                // Revocations stored before we listened; later ones arrive as messages.
                if let Err(e) = load_revocations(&mut commands, &prefix, 0, &*revoke).await {
                    tracing::warn!(error = ?e.kind(), "cannot load revocations; retrying");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                listening.store(true, Ordering::Release);
                metrics.broker_up.set(1);
                tracing::info!("Redis broker listening");
                let mut messages = pubsub.into_on_message();
                let mut role_check = tokio::time::interval(Duration::from_secs(1));
                loop {
                    let msg = tokio::select! {
                        msg = messages.next() => match msg {
                            Some(msg) => msg,
                            None => break,
                        },
                        _ = role_check.tick(), if target.follows_failover() => {
                            if is_primary(&mut commands).await {
                                continue;
                            }
                            tracing::warn!("the Redis primary changed (failover)");
                            break;
                        }
                    };
                    let payload = msg.get_payload_bytes();
                    if let Some(rest) =
                        payload.strip_prefix(crate::broker::canary::MESSAGE.as_bytes())
                    {
                        canary.received(rest, &metrics);
                        continue;
                    }
                    match payload.strip_prefix(REVOCATION_MESSAGE.as_bytes()) {
                        Some(rev) => {
                            if let Some(r) = parse_revocation_message(rev) {
                                revoke(&r);
                            }
                        }
                        None => relay_message(&hub, payload),
                    }
                }
                listening.store(false, Ordering::Release);
                metrics.broker_up.set(0);
                metrics.broker_disconnects.inc();
                generation.fetch_add(1, Ordering::AcqRel);
                let closed = hub.close_all_subscribers(CloseCode::BrokerUnavailable);
                tracing::warn!(
                    closed,
                    "Redis pub/sub connection lost: subscribers closed to recover"
                );
            }
            Ok(Err(e)) => {
                metrics.broker_errors.inc();
                tracing::warn!(error = ?e.kind(), "cannot reach Redis; retrying");
            }
            Err(_) => {
                metrics.broker_errors.inc();
                tracing::warn!("Redis did not answer in time; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One pub/sub message `<app> <channel> <epoch> <offset> <event> <data>` into the hub; a
/// message that does not parse (another writer on our channel) is ignored.
pub(super) fn relay_message(hub: &Hub, payload: &[u8]) {
    let Ok(text) = std::str::from_utf8(payload) else {
        return;
    };
    let mut parts = text.splitn(6, ' ');
    let mut next = || parts.next();
    let (Some(app), Some(channel), Some(epoch), Some(offset), Some(event), Some(data)) =
        (next(), next(), next(), next(), next(), next())
    else {
        return;
    };
    let (Ok(app), Ok(channel), Ok(offset), Ok(event)) = (
        AppId::parse(app),
        Channel::parse(channel),
        offset.parse::<u64>(),
        EventName::parse(event),
    ) else {
        return;
    };
    hub.relay(&ChannelKey { app, channel }, epoch, offset, &event, data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Outbox;

    #[test]
    fn malformed_pub_sub_messages_are_ignored() {
        let hub = Hub::new(
            crate::hub::HubConfig::default(),
            Arc::new(Metrics::default()),
        );
        let key = ChannelKey {
            app: AppId::parse("acme").unwrap(),
            channel: Channel::parse("ns#t").unwrap(),
        };
        let outbox = Arc::new(Outbox::new(crate::hub::OutboxLimits {
            max_frames: 10,
            max_bytes: 1 << 20,
        }));
        hub.subscribe(&key, 1, &outbox, None).unwrap();
        for bad in [
            &b"acme ns#t e1 x Ev AAAA"[..],
            b"acme ns#t e1 1",
            b"acme bad-channel e1 1 Ev AAAA",
            b"acme ns#t e1 1 E\xffv AAAA",
            b"\xff\xfe",
        ] {
            relay_message(&hub, bad);
        }
        assert_eq!(outbox.len(), 0);
        relay_message(&hub, b"acme ns#t e1 1 Ev AAAA");
        assert_eq!(outbox.len(), 1);
    }
}
