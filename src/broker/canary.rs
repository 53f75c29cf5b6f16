//! The broker canary: each node publishes a small message on the shared pub/sub channel
//! every [`INTERVAL`] and watches it come back through its own subscription. Its return
//! sets `sealcast_broker_canary_timestamp_seconds` and `sealcast_broker_canary_rtt_seconds`,
//! so a pub/sub stream that is connected but no longer delivers (a stuck proxy, a Redis
//! under a blocking command) shows as a stale canary although `sealcast_broker_up` is 1.
//!
//! The message is `!canary <node nonce> <sent, unix ms>`; a node ignores the others'
//! canaries, and a node of an older version drops them as publications that do not parse.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionLike;

use crate::telemetry::Metrics;

/// Prefix of canary messages (an app id cannot contain `!`, so no publication starts so).
pub const MESSAGE: &str = "!canary ";

/// How often each node sends its canary.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// How long sending one may take (as any broker command).
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A node's canary identity: a random nonce for this process.
#[derive(Debug, Clone)]
pub struct Canary {
    nonce: Arc<str>,
}

impl Default for Canary {
    fn default() -> Self {
        Canary {
            nonce: hex::encode(rand::random::<[u8; 8]>()).into(),
        }
    }
}

impl Canary {
    /// The message to publish now.
    pub fn message(&self) -> String {
        format!("{MESSAGE}{} {}", self.nonce, unix_millis())
    }

    /// Handles a received message (after [`MESSAGE`]): when it is this node's own, records
    /// its return and round trip. Returns whether it was.
    pub fn received(&self, rest: &[u8], metrics: &Metrics) -> bool {
        let Ok(text) = std::str::from_utf8(rest) else {
            return false;
        };
        let mut parts = text.split(' ');
        let (Some(nonce), Some(sent), None) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        if nonce != &*self.nonce {
            return false;
        }
        let Ok(sent) = sent.parse::<u128>() else {
            return false;
        };
        let now = unix_millis();
        // Same process, same clock: the round trip through Redis.
        let rtt = now.saturating_sub(sent) as f64 / 1000.0;
        metrics.broker_canary_rtt.set(rtt);
        metrics.broker_canary_timestamp.set(now as f64 / 1000.0);
        true
    }

    /// Publishes the canary every [`INTERVAL`] while the listener listens, until `alive`
    /// reports the broker gone. A failed publish is a broker error like any other.
    pub async fn run<C: ConnectionLike + Send>(
        self,
        mut commands: C,
        channel: String,
        listening: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
        alive: impl Fn() -> bool + Send + 'static,
    ) {
        // Checked often, sent every INTERVAL: the first canary goes out right after the
        // listener (re)connects, not up to INTERVAL later.
        let mut last_sent: Option<tokio::time::Instant> = None;
        while alive() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if !listening.load(Ordering::Acquire) {
                last_sent = None;
                continue;
            }
            if last_sent.is_some_and(|t| t.elapsed() < INTERVAL) {
                continue;
            }
            last_sent = Some(tokio::time::Instant::now());
            let mut publish = redis::cmd("PUBLISH");
            publish.arg(&channel).arg(self.message());
            let sent = publish.query_async::<i64>(&mut commands);
            match tokio::time::timeout(SEND_TIMEOUT, sent).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    metrics.broker_errors.inc();
                    tracing::warn!(error = ?e.kind(), "broker canary not sent");
                }
                Err(_) => {
                    metrics.broker_errors.inc();
                    tracing::warn!("broker canary not sent in time");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_own_well_formed_canary_counts() {
        let metrics = Metrics::default();
        let me = Canary::default();
        let other = Canary::default();
        let mine = me.message();
        let rest = mine.strip_prefix(MESSAGE).unwrap().as_bytes();
        assert!(!other.received(rest, &metrics));
        assert_eq!(metrics.broker_canary_timestamp.get(), 0.0);
        assert!(me.received(rest, &metrics));
        assert!(metrics.broker_canary_timestamp.get() > 1.7e9);
        assert!(metrics.broker_canary_rtt.get() >= 0.0);
        for bad in [&b""[..], b"x", b"nonce", b"\xff\xfe 1", b"a b c"] {
            assert!(!me.received(bad, &metrics), "{bad:?}");
        }
        let no_time = format!("{} soon", me.nonce);
        assert!(!me.received(no_time.as_bytes(), &metrics));
    }
}
