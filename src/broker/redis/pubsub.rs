//! The pub/sub side of the single-server and Sentinel broker: one connection subscribed to
//! `<prefix>:p:<db>`, relaying publications into the local hub (in batches: `message.rs`)
//! and revocations into the relay; losing it closes every local subscriber (see the parent
//! module's docs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;

use super::commands::Commands;
use super::message::{Inbound, MAX_BURST};
use super::revocations::{REVOCATION_MESSAGE, load_revocations, parse_revocation_message};
use super::sentinel::{Target, is_primary};
use super::{COMMAND_TIMEOUT, RedisBroker};
use crate::broker::RevocationHook;
use crate::hub::Hub;
use crate::protocol::CloseCode;
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
                // What the connection already holds is taken at once and relayed as
                // batches (`message.rs`).
                let mut messages = pubsub.into_on_message().ready_chunks(MAX_BURST);
                let mut role_check = tokio::time::interval(Duration::from_secs(1));
                loop {
                    let burst = tokio::select! {
                        burst = messages.next() => match burst {
                            Some(burst) => burst,
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
                    let mut inbound = Inbound::default();
                    for msg in &burst {
                        let payload = msg.get_payload_bytes();
                        if let Some(rest) =
                            payload.strip_prefix(crate::broker::canary::MESSAGE.as_bytes())
                        {
                            canary.received(rest, &metrics);
                        } else if let Some(rev) =
                            payload.strip_prefix(REVOCATION_MESSAGE.as_bytes())
                        {
                            // In stream order: what was published before it first.
                            inbound.flush(&hub);
                            match parse_revocation_message(rev) {
                                Some(r) => revoke(&r),
                                None => {
                                    metrics.broker_malformed_messages.inc();
                                }
                            }
                        } else {
                            inbound.add(payload, &metrics);
                        }
                    }
                    inbound.flush(&hub);
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
