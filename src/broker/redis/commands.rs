//! The command connection: one server (a `ConnectionManager`, reconnecting on its own) or
//! a Redis Cluster (the `redis` crate's cluster connection, which routes each command by
//! its first key's slot, follows `MOVED`/`ASK` and refreshes its slot map).

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where scripts and reads go.
#[derive(Clone)]
pub(super) enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// Under Sentinel: the current primary's connection, replaced by the listener on every
    /// (re)connection; none while no primary is known.
    Sentinel(super::sentinel::Slot),
}

impl Commands {
    /// Runs a keyless command on the primary of `slot` (a cluster), or on the server.
    pub(super) async fn on_slot<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        slot: u16,
    ) -> RedisResult<T> {
        match self {
            Commands::Single(_) | Commands::Sentinel(_) => cmd.query_async(self).await,
            Commands::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(slot, SlotAddr::Master),
                ));
                let v = c.route_command(cmd.clone(), route).await?;
                redis::from_redis_value(v).map_err(Into::into)
            }
        }
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => c.req_packed_command(cmd),
            Commands::Sentinel(slot) => {
                let conn = slot.lock().clone();
                Box::pin(async move {
                    let mut conn = conn.ok_or_else(no_primary)?;
                    conn.req_packed_command(cmd).await
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(c) => c.req_packed_commands(cmd, offset, count),
            Commands::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Commands::Sentinel(slot) => {
                let conn = slot.lock().clone();
                Box::pin(async move {
                    let mut conn = conn.ok_or_else(no_primary)?;
                    conn.req_packed_commands(cmd, offset, count).await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
            Commands::Sentinel(slot) => slot.lock().as_ref().map_or(0, |c| c.get_db()),
        }
    }
}

fn no_primary() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "no Redis primary known",
    ))
}
