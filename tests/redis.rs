//! The Redis broker against a real `redis-server` (one per test, on its own port): two relay
//! nodes share offsets, history and recovery; a lost Redis closes subscribers so they
//! recover, never a silent gap; concurrent publishing on one node while a client keeps
//! resubscribing on the other loses and repeats nothing.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use sealcast::auth::Secret;
use sealcast::config::BrokerKind;
use sealcast_client::wire::Client;

async fn node(redis: &RedisServer, prefix: &str) -> Relay {
    node_with(redis, prefix, |_| {}).await
}

/// A ready relay node on `redis` in cluster `prefix`, with `f` applied to its config.
async fn node_with(
    redis: &RedisServer,
    prefix: &str,
    f: impl FnOnce(&mut sealcast::config::Config),
) -> Relay {
    let url = redis.url();
    let prefix = prefix.to_string();
    let relay = Relay::start_with(move |c| {
        c.broker.kind = BrokerKind::Redis;
        c.broker.prefix = prefix;
        c.redis_url = Some(Secret::new(url.into_bytes()));
        f(c);
    })
    .await;
    wait_ready(&relay, true).await;
    relay
}

async fn readyz(relay: &Relay) -> u16 {
    reqwest::get(format!("{}/readyz", relay.base()))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Waits (bounded) until `/readyz` says 200 (`ready`) or 503.
async fn wait_ready(relay: &Relay, ready: bool) {
    let want = if ready { 200 } else { 503 };
    let deadline = Instant::now() + Duration::from_secs(15);
    while readyz(relay).await != want {
        assert!(Instant::now() < deadline, "/readyz never said {want}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `pub` frames' `(offset, data)` until `n` arrived.
async fn read_data(c: &mut Client, n: usize) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let f = c.frame(WAIT).await.expect("pub frame");
        assert_eq!(f["type"], "pub", "{f}");
        got.push((
            f["offset"].as_u64().unwrap(),
            f["data"].as_str().unwrap().to_string(),
        ));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_offsets_history_idempotency_and_recovery() {
    let redis = RedisServer::start();
    let a = node(&redis, "t1").await;
    let b = node(&redis, "t1").await;
    let ch = channel("shared");

    // Subscribed on A, published on B: offsets come from Redis, delivery from A.
    let mut on_a = a.client().await;
    let sub = on_a.subscribe(&ch, None).await.unwrap();
    assert_eq!(sub["type"], "subscribed", "{sub}");
    assert_eq!(sub["offset"], 0);
    let epoch = sub["epoch"].as_str().unwrap().to_string();
    let pb = b.publisher();
    let mut sent = Vec::new();
    for i in 1..=3u64 {
        let data = sealed(&ch, "Ev", &format!("{{\"n\":{i}}}"));
        let r = pb
            .publish(&publish_token(None), &ch, "Ev", &data, None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["offset"], i);
        assert_eq!(r.body["epoch"], epoch.as_str());
        sent.push((i, data));
    }
    assert_eq!(read_data(&mut on_a, 3).await, sent);

    // An idempotency key is shared by the nodes: a retry through the other node publishes
    // nothing and answers the first result.
    let data = sealed(&ch, "Ev", "{\"once\":true}");
    let first = a
        .publisher()
        .publish(&publish_token(None), &ch, "Ev", &data, Some("retry-1"))
        .await
        .unwrap();
    let again = pb
        .publish(&publish_token(None), &ch, "Ev", &data, Some("retry-1"))
        .await
        .unwrap();
    assert_eq!(first.body["offset"], 4);
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body);
    assert_eq!(read_pubs(&mut on_a, 1).await, vec![4]);
    on_a.close().await;

    // Missed while away, recovered on the other node, then live from either.
    for i in 5..=9 {
        assert_eq!(publish(&pb, &ch, &format!("{i}")).await.0, i);
    }
    let mut on_b = b.client().await;
    let rec = on_b.subscribe(&ch, Some((&epoch, 4))).await.unwrap();
    assert_eq!(rec["recovered"], true, "{rec}");
    assert_eq!(rec["offset"], 9);
    let replayed = read_data(&mut on_b, 5).await;
    assert_eq!(
        replayed.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (5..=9).collect::<Vec<_>>()
    );
    // The replayed ciphertext is the published one, intact.
    let plain =
        sealcast::payload::decrypt(&PAYLOAD_KEY, &ch, "Ev", &replayed[0].1).expect("authentic");
    assert_eq!(plain, b"5");
    assert_eq!(publish(&a.publisher(), &ch, "10").await.0, 10);
    assert_eq!(read_pubs(&mut on_b, 1).await, vec![10]);

    // Up to date: nothing to replay. Another epoch, or a position from the future: not
    // recovered, and said so.
    let mut c = a.client().await;
    let same = c.subscribe(&ch, Some((&epoch, 10))).await.unwrap();
    assert_eq!(
        (same["recovered"].as_bool(), same["offset"].as_u64()),
        (Some(true), Some(10))
    );
    let mut c2 = a.client().await;
    let other = c2.subscribe(&ch, Some(("not-the-epoch", 3))).await.unwrap();
    assert_eq!(other["recovered"], false, "{other}");
    let mut c3 = b.client().await;
    let future = c3.subscribe(&ch, Some((&epoch, 99))).await.unwrap();
    assert_eq!(future["recovered"], false, "{future}");

    // Channels of different prefixes (clusters) and apps never meet.
    let other_cluster = node(&redis, "t1-other").await;
    let mut elsewhere = other_cluster.client().await;
    let fresh = elsewhere.subscribe(&ch, None).await.unwrap();
    assert_eq!(fresh["offset"], 0);
    assert_eq!(publish(&pb, &ch, "11").await.0, 11);
    assert!(elsewhere.frame(Duration::from_millis(300)).await.is_err());

    a.stop().await;
    b.stop().await;
    other_cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_closes_subscribers_refuses_publishes_and_recovery_says_so() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "t2").await;
    let ch = channel("fragile");
    let mut c = a.client().await;
    let sub = c.subscribe(&ch, None).await.unwrap();
    let epoch = sub["epoch"].as_str().unwrap().to_string();
    assert_eq!(publish(&a.publisher(), &ch, "1").await.0, 1);
    assert_eq!(read_pubs(&mut c, 1).await, vec![1]);

    redis.kill();
    // What is published meanwhile cannot reach this subscriber: it is told to reconnect
    // and recover (1011), not left with a silent gap.
    assert_eq!(c.closed(WAIT).await.unwrap(), Some(1011));
    wait_ready(&a, false).await;
    let refused = a
        .publisher()
        .publish(
            &publish_token(None),
            &ch,
            "Ev",
            &sealed(&ch, "Ev", "2"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(refused.body["error"]["code"], "unavailable");
    // The subscriber was told why (close reason and metric label), and a publisher when
    // to try again.
    // (counted once the close handshake is over)
    let deadline = Instant::now() + WAIT;
    while a.metric("sealcast_disconnects_total{code=\"broker_unavailable\"}") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no broker_unavailable close counted"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let r = reqwest::Client::new()
        .post(format!("{}/v1/publish", a.base()))
        .bearer_auth(publish_token(None))
        .json(&serde_json::json!({"channel":ch,"event":"Ev","data":sealed(&ch, "Ev", "3")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(a.metric("sealcast_broker_up"), 0.0);
    assert_eq!(a.metric("sealcast_broker_disconnects_total"), 1.0);
    // The node keeps trying to reach Redis, and counts each failure.
    let deadline = Instant::now() + WAIT;
    while a.metric("sealcast_broker_errors_total") < 1.0 {
        assert!(Instant::now() < deadline, "no broker error counted");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Redis comes back empty: the node is ready again, and a client that recovers from
    // before gets recovered:false under a new epoch.
    redis.restart();
    wait_ready(&a, true).await;
    assert_eq!(a.metric("sealcast_broker_up"), 1.0);
    let mut again = a.client().await;
    let rec = again.subscribe(&ch, Some((&epoch, 1))).await.unwrap();
    assert_eq!(rec["recovered"], false, "{rec}");
    assert_ne!(rec["epoch"], epoch.as_str());
    assert_eq!(publish(&a.publisher(), &ch, "fresh").await.0, 1);
    assert_eq!(read_pubs(&mut again, 1).await, vec![1]);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_on_one_node_while_another_publishes_loses_and_repeats_nothing() {
    let redis = RedisServer::start();
    let a = node(&redis, "t3").await;
    let b = node(&redis, "t3").await;
    let ch = channel("race");
    const N: u64 = 400;
    // Subscribed before the first publication, so every offset from 1 is this client's.
    let mut c = a.client().await;
    let sub = c.subscribe(&ch, None).await.unwrap();
    assert_eq!(sub["offset"], 0, "{sub}");
    let mut epoch = sub["epoch"].as_str().unwrap().to_string();
    let pb = b.publisher();
    let ch2 = ch.clone();
    let publisher = tokio::spawn(async move {
        for i in 1..=N {
            assert_eq!(publish(&pb, &ch2, &format!("{i}")).await.0, i);
        }
    });
    // The client keeps dropping its connection and recovering on node A from the last
    // offset it saw: every offset must arrive exactly once, in order.
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reconnects = 0;
    loop {
        // Read a few (or until the publisher is done), then drop the connection.
        for _ in 0..25 {
            match c.frame(Duration::from_secs(5)).await {
                Ok(f) if f["type"] == "pub" => seen.push(f["offset"].as_u64().unwrap()),
                Ok(f) => panic!("unexpected {f}"),
                Err(_) => break,
            }
            if seen.last().copied() == Some(N) {
                break;
            }
        }
        if seen.last().copied() == Some(N) {
            break;
        }
        assert!(Instant::now() < deadline, "stuck at {:?}", seen.last());
        let last = seen.last().copied().unwrap_or(0);
        c = a.client().await;
        reconnects += 1;
        let sub = c.subscribe(&ch, Some((&epoch, last))).await.unwrap();
        assert_eq!(sub["recovered"], true, "{sub}");
        epoch = sub["epoch"].as_str().unwrap().to_string();
    }
    assert!(reconnects >= 5, "only {reconnects} reconnects");
    publisher.await.unwrap();
    assert_eq!(seen, (1..=N).collect::<Vec<_>>());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_holds_on_every_node_and_on_nodes_started_later() {
    let redis = RedisServer::start();
    let a = node(&redis, "t4").await;
    let b = node(&redis, "t4").await;
    let token = connect_token(NS, "mallory", 600);
    let (mut on_b, _) = Client::connect(&b.ws_url(), &token).await.unwrap();
    let (mut bob, _) = Client::connect(&b.ws_url(), &connect_token(NS, "bob", 600))
        .await
        .unwrap();
    let r = a
        .publisher()
        .post(
            "/v1/revoke",
            &publish_token(None),
            &serde_json::json!({"sub":"mallory"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Closed on the other node, and refused there from now on.
    assert_eq!(on_b.closed(WAIT).await.unwrap(), Some(4003));
    let again = Client::open(&b.ws_url()).await.unwrap();
    match again.authenticate(&token).await {
        Err(sealcast_client::wire::ClientError::Closed { code }) => assert_eq!(code, Some(4003)),
        other => panic!("revoked token accepted on another node: {other:?}"),
    }
    // A node that starts afterwards learns it from Redis.
    let c = node(&redis, "t4").await;
    let late = Client::open(&c.ws_url()).await.unwrap();
    match late.authenticate(&token).await {
        Err(sealcast_client::wire::ClientError::Closed { code }) => assert_eq!(code, Some(4003)),
        other => panic!("revoked token accepted on a later node: {other:?}"),
    }
    // Others are untouched.
    assert_eq!(
        bob.subscribe(&channel("g"), None).await.unwrap()["type"],
        "subscribed"
    );
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_in_redis_is_bounded_by_count_and_ttl_but_the_position_outlives_it() {
    let redis = RedisServer::start();
    let a = node_with(&redis, "t5", |c| {
        c.history.max_per_channel = 3;
        c.history.ttl = Duration::from_millis(700);
    })
    .await;
    let ch = channel("bounded");
    let p = a.publisher();
    let mut epoch = String::new();
    for i in 1..=5 {
        let (offset, e) = publish(&p, &ch, &format!("{i}")).await;
        assert_eq!(offset, i);
        epoch = e;
    }
    // Only the newest 3 are kept: from 2 on they are all there, from 1 one is gone.
    let mut c = a.client().await;
    let kept = c.subscribe(&ch, Some((&epoch, 2))).await.unwrap();
    assert_eq!(kept["recovered"], true, "{kept}");
    assert_eq!(read_pubs(&mut c, 3).await, vec![3, 4, 5]);
    let mut c2 = a.client().await;
    let evicted = c2.subscribe(&ch, Some((&epoch, 1))).await.unwrap();
    assert_eq!(evicted["recovered"], false, "{evicted}");
    // Past the TTL nothing is replayed, but a client that had seen everything still
    // recovers (the epoch and last offset outlive the history).
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut c3 = a.client().await;
    let expired = c3.subscribe(&ch, Some((&epoch, 4))).await.unwrap();
    assert_eq!(expired["recovered"], false, "{expired}");
    let mut c4 = a.client().await;
    let current = c4.subscribe(&ch, Some((&epoch, 5))).await.unwrap();
    assert_eq!(
        (current["recovered"].as_bool(), current["offset"].as_u64()),
        (Some(true), Some(5)),
        "{current}"
    );
    a.stop().await;
}

/// `total_reads_processed`: how many times Redis read from a client socket.
fn reads(redis: &RedisServer) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "INFO", "stats"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_reads_processed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_round_trip_to_redis_with_a_result_per_item_in_order() {
    let redis = RedisServer::start();
    let a = node(&redis, "t6").await;
    let (one, two) = (channel("batch-1"), channel("batch-2"));
    let mut c = a.client().await;
    c.subscribe(&one, None).await.unwrap();
    let item = |ch: &str, text: &str, key: Option<&str>| {
        let mut v =
            serde_json::json!({"channel": ch, "event": "Ev", "data": sealed(ch, "Ev", text)});
        if let Some(k) = key {
            v["idempotency_key"] = k.into();
        }
        v
    };
    // Warm the script cache, so the batch meets a server that has it.
    publish(&a.publisher(), &two, "0").await;
    let mut items: Vec<serde_json::Value> =
        (1..=8).map(|i| item(&one, &i.to_string(), None)).collect();
    items.push(item(&two, "k", Some("once")));
    items.push(item("no-separator", "x", None));
    items.push(item(&two, "k", Some("once")));
    let before = reads(&redis);
    let answer = a
        .publisher()
        .publish_batch(&publish_token(None), &items)
        .await
        .unwrap();
    let after = reads(&redis);
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let results = answer.body["results"].as_array().unwrap();
    for (i, r) in results.iter().take(8).enumerate() {
        assert_eq!(r["offset"], i as u64 + 1, "{r}");
    }
    assert_eq!(results[8]["offset"], 2);
    assert_eq!(results[9]["error"]["code"], "bad_request");
    assert_eq!(
        results[10]["offset"], 2,
        "the repeat answers the first position"
    );
    assert_eq!(read_data(&mut c, 8).await.len(), 8);
    // One pipeline: far fewer socket reads than the 10 publications (others may read too).
    assert!(
        after - before <= 3,
        "{} reads for one batch",
        after - before
    );
    a.stop().await;
}

/// `calls` of a command in Redis' `INFO commandstats` (0 if never called).
fn command_calls(redis: &RedisServer, command: &str) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "INFO", "commandstats"])
        .output()
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_several_channels_reach_both_nodes_in_order_with_no_gap_or_repeat() {
    let redis = RedisServer::start();
    let a = node(&redis, "t7").await;
    let b = node(&redis, "t7").await;
    let channels: Vec<String> = (0..3).map(|i| channel(&format!("many-{i}"))).collect();
    // Planned in advance, so every reader knows how many it must get: per channel, 5
    // batches of 10 (interleaved with the other channels) plus 1 idempotent repeat on
    // channel 1 each; one batch of 520 on channel 0 (more than one script call holds); and
    // 10 single publishes per channel through the other node, concurrently.
    const BATCHES: usize = 5;
    const PER_BATCH: usize = 10;
    const BIG: usize = 520;
    const SINGLES: usize = 10;
    let expected: Vec<usize> = (0..3)
        .map(|c| BATCHES * PER_BATCH + SINGLES + if c == 0 { BIG } else { 0 })
        .collect();

    // One subscriber per channel on each node, and one on B following all three.
    let mut readers = Vec::new();
    for (node, relay) in [("a", &a), ("b", &b)] {
        for (c, ch) in channels.iter().enumerate() {
            let mut client = relay.client().await;
            let sub = client.subscribe(ch, None).await.unwrap();
            assert_eq!(sub["offset"], 0, "{sub}");
            let mut want = vec![0; 3];
            want[c] = expected[c];
            readers.push((format!("{node}/{ch}"), client, want));
        }
    }
    let mut all = b.client().await;
    for ch in &channels {
        all.subscribe(ch, None).await.unwrap();
    }
    readers.push(("b/all".into(), all, expected.clone()));
    let readers: Vec<_> = readers
        .into_iter()
        .map(|(name, mut client, want)| {
            let channels = channels.clone();
            tokio::spawn(async move {
                // Per channel: (offset, data) in arrival order.
                let mut got: Vec<Vec<(u64, String)>> = vec![Vec::new(); 3];
                while (0..3).any(|c| got[c].len() < want[c]) {
                    let f = client.frame(WAIT).await.expect("pub frame");
                    assert_eq!(f["type"], "pub", "{name}: {f}");
                    let c = channels
                        .iter()
                        .position(|ch| f["channel"] == ch.as_str())
                        .unwrap();
                    got[c].push((
                        f["offset"].as_u64().unwrap(),
                        f["data"].as_str().unwrap().to_string(),
                    ));
                }
                (name, got)
            })
        })
        .collect();

    let item = |ch: &str, text: &str, key: Option<&str>| {
        let mut v =
            serde_json::json!({"channel": ch, "event": "Ev", "data": sealed(ch, "Ev", text)});
        if let Some(k) = key {
            v["idempotency_key"] = k.into();
        }
        v
    };
    // Warm the script cache (a first call is refused with NOSCRIPT, and counted).
    publish(&a.publisher(), &channel("warm"), "0").await;
    let evalsha_before = command_calls(&redis, "evalsha");
    let publish_before = command_calls(&redis, "publish");
    // Singles through B while A publishes batches.
    let pb = b.publisher();
    let singles_channels = channels.clone();
    let singles = tokio::spawn(async move {
        let mut published = Vec::new();
        for i in 0..SINGLES {
            for (c, ch) in singles_channels.iter().enumerate() {
                let data = sealed(ch, "Ev", &format!("single {i}"));
                let r = pb
                    .publish(&publish_token(None), ch, "Ev", &data, None)
                    .await
                    .unwrap();
                assert_eq!(r.status, 200, "{:?}", r.body);
                published.push((c, r.body["offset"].as_u64().unwrap(), data));
            }
        }
        published
    });
    // (channel, offset) -> data, from the answers.
    let mut published: Vec<(usize, u64, String)> = Vec::new();
    let mut batches: Vec<Vec<(usize, serde_json::Value)>> = (0..BATCHES)
        .map(|n| {
            let mut items = Vec::new();
            for i in 0..PER_BATCH {
                for (c, ch) in channels.iter().enumerate() {
                    let key = (c == 1 && i == 3).then(|| format!("key-{n}"));
                    items.push((c, item(ch, &format!("{n}.{i}"), key.as_deref())));
                    if let Some(k) = &key {
                        // The same key again in the same batch: a repeat, not published.
                        items.push((c, item(ch, "repeat", Some(k))));
                    }
                }
            }
            items
        })
        .collect();
    batches.insert(
        2,
        (0..BIG)
            .map(|i| (0, item(&channels[0], &format!("big {i}"), None)))
            .collect(),
    );
    let mut batch_publications = 0;
    for batch in &batches {
        let bodies: Vec<serde_json::Value> = batch.iter().map(|(_, v)| v.clone()).collect();
        let answer = a
            .publisher()
            .publish_batch(&publish_token(None), &bodies)
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let results = answer.body["results"].as_array().unwrap();
        assert_eq!(results.len(), batch.len());
        let mut first_of_key: std::collections::HashMap<&str, u64> = Default::default();
        for ((c, body), r) in batch.iter().zip(results) {
            let offset = r["offset"].as_u64().unwrap_or_else(|| panic!("{r}"));
            match body["idempotency_key"].as_str() {
                Some(k) if first_of_key.contains_key(k) => {
                    assert_eq!(offset, first_of_key[k], "a repeat answers the first");
                    continue;
                }
                Some(k) => {
                    first_of_key.insert(k, offset);
                }
                None => {}
            }
            published.push((*c, offset, body["data"].as_str().unwrap().to_string()));
            batch_publications += 1;
        }
    }
    // Each batch is one script call per channel (two for the big one's channel), whatever
    // the concurrent singles cost (one each); each call announces in one message.
    let singles = singles.await.unwrap();
    let calls = BATCHES * 3 + 2 + singles.len();
    assert_eq!(batch_publications, BATCHES * PER_BATCH * 3 + BIG);
    assert_eq!(
        command_calls(&redis, "evalsha") - evalsha_before,
        calls as u64
    );
    let announced = command_calls(&redis, "publish") - publish_before;
    // (plus any canary the nodes sent meanwhile)
    assert!(
        (calls as u64..calls as u64 + 10).contains(&announced),
        "{announced} PUBLISHes for {calls} calls"
    );
    published.extend(singles);

    // Per channel, the answers hold every offset from 1 exactly once.
    let mut by_channel: Vec<Vec<(u64, String)>> = vec![Vec::new(); 3];
    for (c, offset, data) in published {
        by_channel[c].push((offset, data));
    }
    for (c, list) in by_channel.iter_mut().enumerate() {
        list.sort();
        let offsets: Vec<u64> = list.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (1..=expected[c] as u64).collect::<Vec<_>>());
    }
    // Every subscriber on either node got exactly that: each offset once, in order, with
    // its own data.
    for reader in readers {
        let (name, got) = reader.await.unwrap();
        for (c, list) in got.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            assert_eq!(list, &by_channel[c], "{name}, channel {c}");
        }
    }
    a.stop().await;
    b.stop().await;
}
