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
}

impl Commands {
    /// Runs a keyless command on the primary of `slot` (a cluster), or on the server.
    pub(super) async fn on_slot<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        slot: u16,
    ) -> RedisResult<T> {
        match self {
            Commands::Single(c) => cmd.query_async(c).await,
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
        }
    }
}
