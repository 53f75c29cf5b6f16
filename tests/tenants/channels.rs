//! Channel state: a subscription to a never-published channel holds nothing once it ends;
//! subscribing is rate limited per connection; each app has its own channel quota, in
//! memory and in Redis.

use std::time::Duration;

use sealcast_client::wire::{Client, Publisher};
use serde_json::json;

use crate::common::proc::{Proc, serve};
use crate::common::redis::RedisServer;
use crate::common::*;

fn ws(p: &Proc) -> String {
    format!("ws://{}/v1/ws", p.addr)
}

async fn client(p: &Proc) -> Client {
    Client::connect(&ws(p), &connect_token(NS, "u", 600))
        .await
        .unwrap()
        .0
}

async fn channels(p: &Proc) -> f64 {
    metric_value(&p.metrics().await, "sealcast_channels ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_published_channels_leave_nothing_behind_and_keep_their_position() {
    let (p, _) = serve("chan-lazy", "admin_listen = \"127.0.0.1:0\"\n");
    let publisher = Publisher::new(&format!("http://{}", p.addr));
    publish(&publisher, &channel("published"), "x").await;
    assert_eq!(channels(&p).await, 1.0);

    // One token holder subscribes to 200 topics nobody publishes, and leaves.
    let mut c = client(&p).await;
    let mut first = None;
    for i in 0..200 {
        let r = c
            .subscribe(&channel(&format!("ghost-{i}")), None)
            .await
            .unwrap();
        assert_eq!(r["type"], "subscribed", "{r}");
        assert_eq!(r["offset"], 0);
        first.get_or_insert(r["epoch"].as_str().unwrap().to_string());
    }
    assert_eq!(channels(&p).await, 201.0);
    for i in 0..100 {
        let ch = channel(&format!("ghost-{i}"));
        let r = c
            .request(json!({"type":"unsubscribe","channel":ch}))
            .await
            .unwrap();
        assert_eq!(r["type"], "unsubscribed");
    }
    assert_eq!(channels(&p).await, 101.0, "unsubscribe frees at once");
    c.close().await;
    eventually("channels back to their earlier value", || async {
        channels(&p).await == 1.0
    })
    .await;

    // The position answered for the forgotten channel still holds: nothing was ever
    // published there, so a client that saw offset 0 recovers exactly, and then gets
    // what is published after.
    let epoch = first.unwrap();
    let mut back = client(&p).await;
    let ch = channel("ghost-0");
    let r = back.subscribe(&ch, Some((&epoch, 0))).await.unwrap();
    assert_eq!(
        (r["recovered"].as_bool(), r["epoch"].as_str()),
        (Some(true), Some(epoch.as_str())),
        "{r}"
    );
    let (offset, e) = publish(&publisher, &ch, "first").await;
    assert_eq!((offset, e.as_str()), (1, epoch.as_str()));
    assert_eq!(read_pubs(&mut back, 1).await, vec![1]);
    // Published channels keep their state as before.
    back.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(channels(&p).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_is_rate_limited_per_connection() {
    let (p, _) = serve(
        "chan-rate",
        "admin_listen = \"127.0.0.1:0\"\n[limits]\nsubscribe_rate_per_connection = 1\nsubscribe_burst_per_connection = 5\n",
    );
    let mut c = client(&p).await;
    for i in 0..5 {
        let r = c.subscribe(&channel(&format!("t{i}")), None).await.unwrap();
        assert_eq!(r["type"], "subscribed", "{r}");
    }
    let r = c.subscribe(&channel("t5"), None).await.unwrap();
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("limit_exceeded")),
        "{r}"
    );
    // Refused attempts outside the namespace count too (no audit flood).
    let r = c.subscribe("elsewhere#t", None).await.unwrap();
    assert_eq!(r["code"], "limit_exceeded", "{r}");
    // Another connection has its own bucket; the limited one stays open.
    let mut other = client(&p).await;
    let r = other.subscribe(&channel("t5"), None).await.unwrap();
    assert_eq!(r["type"], "subscribed", "{r}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.subscribe(&channel("t6"), None).await.unwrap();
    assert_eq!(r["type"], "subscribed", "the bucket refills: {r}");
    let m = p.metrics().await;
    assert!(
        metric_with_label(
            &m,
            "sealcast_limit_hits_total",
            "subscribe_rate_per_connection"
        ) >= 2.0,
        "{m}"
    );
}

/// App `acme` fills its quota of `n` channels (`fresh` of them new here); it is refused
/// one more (503), while app `other` is unaffected.
async fn quota_holds_per_app(p: &Proc, fresh: usize) {
    let publisher = Publisher::new(&format!("http://{}", p.addr));
    for i in 0..fresh {
        publish(&publisher, &channel(&format!("q{i}")), "x").await;
    }
    let ch = channel("q-over");
    let a = publish_with(&publisher, &publish_token(None), &ch, "x").await;
    assert_eq!(a.status, 503, "{:?}", a.body);
    assert_eq!(a.body["error"]["code"], "unavailable");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_channels_per_app")
    );
    // The existing channels still take publications.
    assert_eq!(publish(&publisher, &channel("q0"), "y").await.0, 2);
    // Every other app is unaffected, in the same channel names and in new ones.
    for i in 0..3 {
        let ch = channel(&format!("q{}", i + 3));
        let a = publish_with(&publisher, &other_publish_token(), &ch, "x").await;
        assert_eq!(a.status, 200, "other app: {:?}", a.body);
    }
    let m = p.metrics().await;
    assert!(
        metric_with_label(&m, "sealcast_limit_hits_total", "channels_per_app") >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_app_has_its_own_channel_quota() {
    let (p, _) = serve(
        "chan-quota",
        "admin_listen = \"127.0.0.1:0\"\n[limits]\nmax_channels_per_app = 3\n",
    );
    quota_holds_per_app(&p, 3).await;
    let mut c = client(&p).await;
    let r = c.subscribe(&channel("q-new"), None).await.unwrap();
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("limit_exceeded")),
        "{r}"
    );
    let r = c.subscribe(&channel("q1"), None).await.unwrap();
    assert_eq!(r["type"], "subscribed", "existing channels stay open: {r}");
}

fn redis_keys(redis: &RedisServer) -> i64 {
    let mut con = ::redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    ::redis::cmd("DBSIZE").query(&mut con).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redis_unpublished_channels_write_nothing_and_the_quota_holds() {
    let redis = RedisServer::start();
    let (p, _) = serve(
        "chan-redis",
        &format!(
            "admin_listen = \"127.0.0.1:0\"\n[limits]\nmax_channels_per_app = 102\n[broker]\nkind = \"redis\"\nredis_url = \"{}\"\n",
            redis.url()
        ),
    );
    eventually("ready", || async {
        reqwest::get(format!("http://{}/readyz", p.addr))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let mut c = client(&p).await;
    let r = c.subscribe(&channel("warm"), None).await.unwrap();
    let epoch = r["epoch"].as_str().unwrap().to_string();
    let before = redis_keys(&redis);
    for i in 0..100 {
        let r = c
            .subscribe(&channel(&format!("ghost-{i}")), None)
            .await
            .unwrap();
        assert_eq!(r["type"], "subscribed", "{r}");
    }
    assert_eq!(
        redis_keys(&redis),
        before,
        "a subscribe writes no per-channel key"
    );
    c.close().await;
    eventually("local channel state released", || async {
        metric_value(&p.metrics().await, "sealcast_channels ") == 0.0
    })
    .await;
    // The lazily answered position is the one the first publication gets.
    let publisher = Publisher::new(&format!("http://{}", p.addr));
    let (offset, e) = publish(&publisher, &channel("warm"), "x").await;
    assert_eq!((offset, e.as_str()), (1, epoch.as_str()));
    // "warm" is one of the app's 102 channels in Redis.
    quota_holds_per_app(&p, 101).await;
}
