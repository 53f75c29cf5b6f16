//! The broker canary over a real `redis-server`: each node's canary comes back through
//! Redis pub/sub and sets `sealcast_broker_canary_timestamp_seconds`; while Redis is gone
//! the timestamp stops (the alert `SealcastBrokerDown` fires on a stale canary), and it
//! moves again once Redis is back.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use sealcast::auth::Secret;
use sealcast::config::BrokerKind;

async fn node(redis: &RedisServer) -> Relay {
    let url = redis.url();
    Relay::start_with(move |c| {
        c.broker.kind = BrokerKind::Redis;
        c.broker.prefix = "canary".into();
        c.redis_url = Some(Secret::new(url.into_bytes()));
    })
    .await
}

/// Waits (bounded) until the node's canary timestamp is above `after`; returns it.
async fn canary_after(relay: &Relay, after: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = relay.metric("sealcast_broker_canary_timestamp_seconds");
        if t > after {
            return t;
        }
        assert!(Instant::now() < deadline, "canary not back after {after}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_sees_its_canary_return_and_a_lost_redis_stops_it() {
    let mut redis = RedisServer::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let t_a = canary_after(&a, 0.0).await;
    let t_b = canary_after(&b, 0.0).await;
    let now = sealcast::auth::unix_now() as f64;
    assert!(
        (now - t_a).abs() < 10.0 && (now - t_b).abs() < 10.0,
        "{now} {t_a} {t_b}"
    );
    let rtt = a.metric("sealcast_broker_canary_rtt_seconds");
    assert!((0.0..1.0).contains(&rtt), "{rtt}");

    // Redis gone: no canary comes back, for longer than the canary interval.
    redis.kill();
    let stopped = a.metric("sealcast_broker_canary_timestamp_seconds");
    tokio::time::sleep(sealcast::broker::canary::INTERVAL + Duration::from_secs(1)).await;
    assert_eq!(
        a.metric("sealcast_broker_canary_timestamp_seconds"),
        stopped
    );

    redis.restart();
    canary_after(&a, stopped).await;
    canary_after(&b, stopped).await;
    a.stop().await;
    b.stop().await;
}
