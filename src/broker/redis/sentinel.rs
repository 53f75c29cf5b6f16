//! Redis under Sentinel (`kind = "redis-sentinel"`): the primary is asked of the sentinels
//! (the `redis` crate's `SentinelClient`, which also checks the node's `ROLE`) every time
//! the pub/sub connection is (re)established, and the command connection is replaced with
//! one to that primary at the same moment. While listening, the primary's `ROLE` is checked
//! every second: a primary that was demoted (failover) ends the listening exactly as a lost
//! connection does, so every local subscriber is closed with 1011 and recovers, and the
//! relay is not ready (publishes answer 503 with `Retry-After`) until a primary answers.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use super::COMMAND_TIMEOUT;

/// The current primary's command connection, replaced on every (re)connection.
pub(super) type Slot = Arc<parking_lot::Mutex<Option<MultiplexedConnection>>>;

/// Where the pub/sub listener connects.
pub(super) enum Target {
    /// One server, fixed.
    Fixed(redis::Client),
    /// The primary the sentinels name.
    Sentinel {
        sentinels: tokio::sync::Mutex<SentinelClient>,
        commands: Slot,
    },
}

impl Target {
    /// A sentinel target from the sentinels' URLs and the primary's name; the primary is
    /// reached with the first URL's credentials and database.
    pub(super) fn sentinel(
        urls: &[String],
        master: &str,
        commands: Slot,
    ) -> Result<Target, String> {
        let first = urls.first().ok_or("no sentinel URL")?;
        let info = redis::IntoConnectionInfo::into_connection_info(first.as_str())
            .map_err(|e| format!("bad sentinel URL: {:?}", e.kind()))?;
        let node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(info.redis_settings().clone());
        let client = SentinelClient::build(
            urls.iter().map(String::as_str).collect(),
            master.to_string(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(|e| format!("bad sentinel URLs: {:?}", e.kind()))?;
        Ok(Target::Sentinel {
            sentinels: tokio::sync::Mutex::new(client),
            commands,
        })
    }

    /// The server to listen on now; with Sentinel, the current primary, whose command
    /// connection is installed before this returns.
    pub(super) async fn resolve(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Target::Fixed(c) => Ok(c.clone()),
            Target::Sentinel {
                sentinels,
                commands,
            } => {
                *commands.lock() = None;
                let client = sentinels.lock().await.async_get_client().await?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                *commands.lock() = Some(conn);
                Ok(client)
            }
        }
    }

    /// Whether the primary must be re-checked while listening (Sentinel only).
    pub(super) fn follows_failover(&self) -> bool {
        matches!(self, Target::Sentinel { .. })
    }
}

/// Whether the node behind `commands` is a primary (`ROLE`).
pub(super) async fn is_primary(commands: &mut super::commands::Commands) -> bool {
    let cmd = redis::cmd("ROLE");
    let role = cmd.query_async::<Vec<redis::Value>>(commands);
    match tokio::time::timeout(COMMAND_TIMEOUT, role).await {
        Ok(Ok(v)) => matches!(
            v.first(),
            Some(redis::Value::BulkString(b)) if b == b"master"
        ),
        _ => false,
    }
}
