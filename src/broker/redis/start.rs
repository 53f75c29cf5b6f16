//! Starting the Redis broker in its three deployments: one server, Sentinel, Redis
//! Cluster. Each returns at once: until Redis answers, the broker is not ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster::ClusterClientBuilder;

use super::commands::Commands;
use super::layout::Layout;
use super::scripts::{PUBLISH_LUA, REVOKE_LUA, SUBSCRIBE_LUA};
use super::sentinel::{self, Target};
use super::shards::Shards;
use super::{COMMAND_TIMEOUT, RedisBroker, pubsub};
use crate::config::Config;
use crate::hub::Hub;
use crate::telemetry::Metrics;

impl RedisBroker {
    /// Creates the broker on a Redis Cluster and starts its shard supervisor. Returns at
    /// once: until the cluster answers, the broker is not ready and refuses work.
    pub fn start_cluster(
        config: &Config,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let seeds = utf8_urls(&config.redis_seeds, "a Redis seed URL")?;
        let first = seeds
            .first()
            .ok_or("broker kind redis-cluster without seeds")?;
        let seed = redis::IntoConnectionInfo::into_connection_info(first.as_str())
            .map_err(|e| format!("bad Redis seed URL: {:?}", e.kind()))?;
        let client = ClusterClientBuilder::new(seeds)
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(COMMAND_TIMEOUT)
            .retries(3)
            .max_retry_wait(500)
            .build()
            .map_err(|e| format!("bad Redis seed URLs: {:?}", e.kind()))?;
        // Connects in the background: the relay starts (not ready) while the cluster is
        // unreachable, as with one server.
        let commands = Commands::Cluster(
            client.get_pending_async_connection_with_config(redis::cluster::ClusterConfig::new()),
        );
        let (revocation_hook, hook) = tokio::sync::watch::channel(None);
        let layout = Layout::cluster(&config.broker.prefix);
        let shards = Shards::new(
            Arc::clone(&hub),
            Arc::clone(&metrics),
            commands.clone(),
            seed,
            layout.clone(),
        );
        tokio::spawn(Shards::supervise(Arc::downgrade(&shards), hook));
        Ok(Arc::new(RedisBroker {
            hub,
            commands,
            publish_script: redis::Script::new(PUBLISH_LUA),
            subscribe_script: redis::Script::new(SUBSCRIBE_LUA),
            revoke_script: redis::Script::new(REVOKE_LUA),
            revocation_hook,
            layout,
            history_ttl: config.history.ttl,
            max_per_channel: config.history.max_per_channel,
            state_ttl: config.history.channel_state_ttl,
            shards: Some(shards),
            listening: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(AtomicU64::new(0)),
            metrics,
        }))
    }

    /// Creates the broker and starts its pub/sub listener (which reconnects on its own).
    /// Returns at once: until Redis answers, the broker is not ready and refuses work.
    pub fn start(
        config: &Config,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let url = config
            .redis_url
            .as_ref()
            .ok_or("broker kind redis without a URL")?;
        let url = std::str::from_utf8(url.expose()).map_err(|_| "the Redis URL is not UTF-8")?;
        let client =
            redis::Client::open(url).map_err(|e| format!("bad Redis URL: {:?}", e.kind()))?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|e| format!("cannot set up Redis: {:?}", e.kind()))?;
        let db = client.get_connection_info().redis_settings().db();
        Ok(Self::launch(
            config,
            hub,
            metrics,
            Target::Fixed(client),
            Commands::Single(commands),
            db,
        ))
    }

    /// Creates the broker on the primary that the sentinels name, and starts its pub/sub
    /// listener, which follows failovers (`sentinel.rs`). Returns at once, not ready.
    pub fn start_sentinel(
        config: &Config,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let urls = utf8_urls(&config.sentinel_urls, "a sentinel URL")?;
        let master = config
            .broker
            .sentinel_master
            .as_deref()
            .ok_or("broker kind redis-sentinel without sentinel_master")?;
        let slot: sentinel::Slot = Arc::default();
        let target = Target::sentinel(&urls, master, Arc::clone(&slot))?;
        let db = redis::IntoConnectionInfo::into_connection_info(urls[0].as_str())
            .map_err(|e| format!("bad sentinel URL: {:?}", e.kind()))?
            .redis_settings()
            .db();
        Ok(Self::launch(
            config,
            hub,
            metrics,
            target,
            Commands::Sentinel(slot),
            db,
        ))
    }

    fn launch(
        config: &Config,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        target: Target,
        commands: Commands,
        db: i64,
    ) -> Arc<Self> {
        let (revocation_hook, hook) = tokio::sync::watch::channel(None);
        let broker = Arc::new(RedisBroker {
            hub,
            commands,
            publish_script: redis::Script::new(PUBLISH_LUA),
            subscribe_script: redis::Script::new(SUBSCRIBE_LUA),
            revoke_script: redis::Script::new(REVOKE_LUA),
            revocation_hook,
            layout: Layout::single(&config.broker.prefix, db),
            history_ttl: config.history.ttl,
            max_per_channel: config.history.max_per_channel,
            state_ttl: config.history.channel_state_ttl,
            shards: None,
            listening: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(AtomicU64::new(0)),
            metrics,
        });
        // A pub/sub stream that is connected but no longer delivers shows as a stale canary
        // (`crate::broker::canary`); on a cluster each shard has its own (`shards`).
        let canary = crate::broker::canary::Canary::default();
        let weak = Arc::downgrade(&broker);
        tokio::spawn(canary.clone().run(
            broker.commands.clone(),
            broker.layout.pubsub_channel().to_string(),
            Arc::clone(&broker.listening),
            Arc::clone(&broker.metrics),
            move || weak.strong_count() > 0,
        ));
        tokio::spawn(pubsub::listen(
            canary,
            target,
            broker.commands.clone(),
            broker.layout.revocation_prefix(),
            broker.layout.pubsub_channel().to_string(),
            Arc::clone(&broker.hub),
            Arc::clone(&broker.metrics),
            hook,
            Arc::clone(&broker.listening),
            Arc::clone(&broker.generation),
            Arc::downgrade(&broker),
        ));
        broker
    }
}

/// URLs held as secrets (they may carry a password), as text.
fn utf8_urls(urls: &[crate::auth::Secret], what: &str) -> Result<Vec<String>, String> {
    urls.iter()
        .map(|s| {
            std::str::from_utf8(s.expose())
                .map(String::from)
                .map_err(|_| format!("{what} is not UTF-8"))
        })
        .collect()
}
