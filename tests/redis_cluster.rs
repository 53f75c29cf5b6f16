//! Three real `sealcast` processes on a real Redis Cluster (3 primaries + 3 replicas):
//! every subscriber gets every publication once and in order, channels spread over the
//! shards on sharded pub/sub (never `PUBLISH`), a relay killed with SIGKILL leaves its
//! clients to recover exactly on another relay, and a primary killed with SIGKILL is
//! replaced while publishing resumes and every subscriber either saw every acknowledged
//! publication or was closed and recovers.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::ha::{Sub, publish_until, read_until, subscribe, wait_ready};
use common::proc::{Proc, spawn, temp_dir};
use common::redis_cluster::RedisCluster;
use common::*;
use sealcast_client::wire::{Client, Publisher};

const SECRET: &str = "acme-key-one-0123456789abcdefghijklmnop";
const CHANNELS: usize = 6;

fn start_relay(dir: &std::path::Path, name: &str, cluster: &RedisCluster) -> Proc {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n\
         [broker]\nkind = \"redis-cluster\"\nredis_urls_env = \"SEALCAST_REDIS_URLS\"\nprefix = \"ha\"\n\
         [shutdown]\ndrain = \"200ms\"\ngrace = \"2s\"\n\
         [[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n",
    )
    .unwrap();
    spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[
            ("ACME_KEY_1", SECRET),
            ("SEALCAST_REDIS_URLS", &cluster.seeds()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_spreads_channels_and_survives_a_relay_and_a_primary_dying() {
    let mut cluster = RedisCluster::start("ha");
    let dir = temp_dir("redis-cluster");
    std::fs::create_dir_all(&dir).unwrap();
    let mut relays: Vec<Option<Proc>> = (0..3)
        .map(|i| Some(start_relay(&dir, &format!("r{i}"), &cluster)))
        .collect();
    for r in relays.iter().flatten() {
        wait_ready(r, Duration::from_secs(20)).await;
    }
    let channels: Vec<String> = (0..CHANNELS).map(|i| channel(&format!("ha-{i}"))).collect();
    let publishers: Vec<Publisher> = relays
        .iter()
        .flatten()
        .map(|r| Publisher::new(&format!("http://{}", r.addr)))
        .collect();

    // One subscriber per channel on every relay.
    let mut subs: Vec<(usize, Sub)> = Vec::new();
    for (r, relay) in relays.iter().flatten().enumerate() {
        for ch in &channels {
            subs.push((r, subscribe(&[relay], ch, None, r).await));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for round in 1..=3u64 {
        for (i, ch) in channels.iter().enumerate() {
            let p = &publishers[(i + round as usize) % 3];
            assert_eq!(
                publish_until(p, ch, &format!("{round}"), deadline).await.0,
                round
            );
        }
    }
    for (_, s) in &mut subs {
        assert!(read_until(s, 3).await, "{} closed", s.ch);
    }

    // Spread over the shards, and never PUBLISH.
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let holding: Vec<u16> = primaries
        .iter()
        .copied()
        .filter(|p| cluster.cli(*p, &["DBSIZE"]).trim() != "0")
        .collect();
    assert!(holding.len() >= 2, "channels on {holding:?} only");
    let mut spublish = 0;
    for p in cluster.live() {
        let stats = cluster.cli(p, &["INFO", "commandstats"]);
        assert!(!stats.contains("cmdstat_publish:"), "PUBLISH used on {p}");
        spublish += stats.matches("cmdstat_spublish:").count();
    }
    assert!(spublish >= 2, "SPUBLISH on the primaries");

    // A revocation made through relay 1 closes its user's session on relay 2 (4003), over
    // the revocation slot's sharded channel.
    let relay2 = relays[2].as_ref().unwrap();
    let (mut victim, _) = Client::connect(
        &format!("ws://{}/v1/ws", relay2.addr),
        &connect_token(NS, "victim", 600),
    )
    .await
    .unwrap();
    let revoked = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/revoke",
            relays[1].as_ref().unwrap().addr
        ))
        .bearer_auth(publish_token(None))
        .json(&serde_json::json!({"sub": "victim"}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(victim.closed(WAIT).await.unwrap(), Some(4003));

    // Relay 0 dies (SIGKILL): its clients recover exactly on another relay.
    relays[0].take();
    for i in 0..CHANNELS {
        assert_eq!(
            publish_until(&publishers[1 + i % 2], &channels[i], "4", deadline)
                .await
                .0,
            4
        );
    }
    let alive: Vec<&Proc> = relays.iter().flatten().collect();
    let mut moved = Vec::new();
    for (r, s) in subs.iter_mut() {
        if *r == 0 {
            let last = *s.seen.last().unwrap();
            let mut fresh = subscribe(&alive, &s.ch, Some((&s.epoch, last)), moved.len()).await;
            assert!(read_until(&mut fresh, 4).await);
            moved.push(fresh);
        } else {
            assert!(read_until(s, 4).await);
        }
    }
    subs.retain(|(r, _)| *r != 0);
    subs.extend(moved.into_iter().map(|s| (1, s)));

    // A primary that holds channels dies (SIGKILL): its replica is promoted, publishing
    // resumes within 25 s, and no subscriber silently misses an acknowledged publication.
    let alive: Vec<&Proc> = relays.iter().flatten().collect();
    cluster.kill(holding[0]);
    let killed = Instant::now();
    let mut acked: HashMap<String, (u64, String)> = HashMap::new();
    for i in 0..CHANNELS {
        let o = publish_until(
            &publishers[1 + i % 2],
            &channels[i],
            "5",
            killed + Duration::from_secs(25),
        )
        .await;
        if o.0 == 0 {
            for r in &alive {
                eprintln!("--- relay\n{}", r.stderr.lock().unwrap());
            }
            panic!("publishing did not resume within 25 s on {}", channels[i]);
        }
        acked.insert(channels[i].clone(), o);
    }
    let resumed = killed.elapsed();
    assert!(resumed < Duration::from_secs(25), "{resumed:?}");
    let mut closed = 0;
    for (i, (_, s)) in subs.iter_mut().enumerate() {
        let (want, epoch) = acked[&s.ch].clone();
        if epoch == s.epoch && read_until(s, want).await {
            continue;
        }
        if epoch != s.epoch {
            // The shard lost the channel's writes: a new epoch, never a reused offset, and
            // the subscriber is closed rather than left silently behind.
            assert!(!read_until(s, u64::MAX).await, "closed on the epoch change");
        }
        // Closed (its shard's connection was lost): it recovers on a live relay, exactly
        // or with recovered:false, never silently.
        closed += 1;
        let last = s.seen.last().copied().unwrap_or(0);
        let mut fresh = subscribe(&alive, &s.ch.clone(), Some((&s.epoch.clone(), last)), i).await;
        assert_eq!(fresh.epoch, epoch);
        assert!(read_until(&mut fresh, want).await, "{} recovers", s.ch);
        *s = fresh;
    }
    if closed == 0 {
        for r in &alive {
            eprintln!("--- relay\n{}", r.stderr.lock().unwrap());
        }
    }
    assert!(
        closed > 0,
        "the subscribers of the killed shard's channels were closed"
    );
    for r in &alive {
        wait_ready(r, Duration::from_secs(15)).await;
    }
    eprintln!(
        "publishing resumed {resumed:?} after the primary died; {closed} subscribers recovered"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The lost-writes case: a replica that lags (stopped, its link cut) is promoted after the
/// primary dies without the last acknowledged publication. The rule holds: the channel
/// gets a new epoch (its offsets are never handed out twice in one epoch), and its
/// subscriber is closed and told `recovered:false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_loses_acknowledged_writes_starts_a_new_epoch() {
    let mut cluster = RedisCluster::start("lost");
    let dir = temp_dir("redis-cluster-lost");
    std::fs::create_dir_all(&dir).unwrap();
    let relay = start_relay(&dir, "r", &cluster);
    wait_ready(&relay, Duration::from_secs(20)).await;
    let publisher = Publisher::new(&format!("http://{}", relay.addr));
    let ch = channel("lost");
    let mut sub = subscribe(&[&relay], &ch, None, 0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 1..=3u64 {
        assert_eq!(
            publish_until(&publisher, &ch, &i.to_string(), deadline)
                .await
                .0,
            i
        );
    }
    assert!(read_until(&mut sub, 3).await);

    // The channel's shard: a CRC16 modulo 16 is the key slot's modulo 16.
    let slot: u16 = cluster
        .cli(cluster.ports[0], &["CLUSTER", "KEYSLOT", &ch])
        .trim()
        .parse()
        .unwrap();
    let primary = cluster.owner_of(&format!("ha:m:{{acme.{}}}{ch}", slot % 16));
    let replica = cluster.replica_of(primary);
    // The replica stops and loses its link: what follows never reaches it.
    cluster.signal(replica, "STOP");
    cluster.cli(primary, &["CLIENT", "KILL", "TYPE", "replica"]);
    let (lost, epoch) = publish_until(&publisher, &ch, "4", deadline).await;
    assert_eq!(
        (lost, epoch.as_str()),
        (4, sub.epoch.as_str()),
        "acknowledged"
    );
    assert!(read_until(&mut sub, 4).await, "and delivered");
    cluster.kill(primary);
    cluster.signal(replica, "CONT");

    let (offset, renewed) = publish_until(
        &publisher,
        &ch,
        "5",
        Instant::now() + Duration::from_secs(25),
    )
    .await;
    assert_ne!(
        renewed, epoch,
        "offset {offset} handed out again in the same epoch"
    );
    assert_eq!(offset, 1);
    // The subscriber was closed (its shard went away) and recovers with recovered:false.
    assert!(!read_until(&mut sub, u64::MAX).await, "closed");
    let (mut c, _) = Client::connect(
        &format!("ws://{}/v1/ws", relay.addr),
        &connect_token(NS, "u0", 600),
    )
    .await
    .unwrap();
    let again = c.subscribe(&ch, Some((&epoch, 4))).await.unwrap();
    assert_eq!(again["recovered"], false, "{again}");
    assert_eq!(again["epoch"], renewed.as_str());
    std::fs::remove_dir_all(&dir).ok();
}

/// Resharding: a channel's slot moves to another primary while a relay follows it. The
/// relay follows `MOVED` for publishing, notices that the slot moved (the server drops the
/// sharded subscription, and the slot map changes), and closes the channel's subscribers,
/// which recover; the moved state was written under another primary, so its epoch is
/// renewed (`recovered:false`), never a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_that_moves_to_another_primary_is_followed() {
    let cluster = RedisCluster::start("reshard");
    let dir = temp_dir("redis-cluster-reshard");
    std::fs::create_dir_all(&dir).unwrap();
    let relay = start_relay(&dir, "r", &cluster);
    wait_ready(&relay, Duration::from_secs(20)).await;
    let publisher = Publisher::new(&format!("http://{}", relay.addr));
    let ch = channel("moving");
    let mut sub = subscribe(&[&relay], &ch, None, 0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 1..=2u64 {
        assert_eq!(publish_until(&publisher, &ch, "m", deadline).await.0, i);
    }
    assert!(read_until(&mut sub, 2).await);

    let group = cluster
        .cli(cluster.ports[0], &["CLUSTER", "KEYSLOT", &ch])
        .trim()
        .parse::<u16>()
        .unwrap()
        % 16;
    let tag = format!("acme.{group}");
    let slot = cluster
        .cli(cluster.ports[0], &["CLUSTER", "KEYSLOT", &tag])
        .trim()
        .to_string();
    let from = cluster.owner_of(&format!("ha:m:{{{tag}}}{ch}"));
    let to = *cluster.primaries().iter().find(|p| **p != from).unwrap();
    let id = |p: u16| cluster.cli(p, &["CLUSTER", "MYID"]).trim().to_string();
    let (from_id, to_id) = (id(from), id(to));
    cluster.cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
    cluster.cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    let keys = cluster.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert!(!keys.is_empty());
    let port = to.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    migrate.extend(&keys);
    assert_eq!(cluster.cli(from, &migrate).trim(), "OK");
    for p in cluster.primaries() {
        cluster.cli(p, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
    }

    let (offset, epoch) = publish_until(
        &publisher,
        &ch,
        "m",
        Instant::now() + Duration::from_secs(15),
    )
    .await;
    assert_ne!(offset, 0, "publishing follows the slot");
    assert!(
        !read_until(&mut sub, u64::MAX).await,
        "closed when its slot moved"
    );
    let mut fresh = subscribe(&[&relay], &ch, Some((&sub.epoch.clone(), 2)), 0).await;
    assert_eq!(fresh.epoch, epoch);
    assert_ne!(epoch, sub.epoch, "state from another primary: a new epoch");
    assert_eq!(
        publish_until(&publisher, &ch, "m", deadline + Duration::from_secs(20))
            .await
            .0,
        offset + 1
    );
    assert!(
        read_until(&mut fresh, offset + 1).await,
        "live on the new primary"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `calls` of a command in a node's `INFO commandstats` (0 if never called).
fn command_calls(cluster: &RedisCluster, port: u16, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    cluster
        .cli(port, &["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Batches on a cluster: each channel's run is one script call on its own shard (the
/// channels spread over the shards), and subscribers on two relays get every publication
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_call_per_channel_on_its_shard_and_arrives_in_order_on_every_relay() {
    let cluster = RedisCluster::start("batch");
    let dir = temp_dir("redis-cluster-batch");
    std::fs::create_dir_all(&dir).unwrap();
    let relays: Vec<Proc> = (0..2)
        .map(|i| start_relay(&dir, &format!("b{i}"), &cluster))
        .collect();
    for r in &relays {
        wait_ready(r, Duration::from_secs(20)).await;
    }
    let channels: Vec<String> = (0..CHANNELS)
        .map(|i| channel(&format!("batch-{i}")))
        .collect();
    let mut subs = Vec::new();
    for (r, relay) in relays.iter().enumerate() {
        for ch in &channels {
            subs.push(subscribe(&[relay], ch, None, r).await);
        }
    }
    // Warm every shard's script cache (a first call is refused with NOSCRIPT, and counted).
    let publisher = Publisher::new(&format!("http://{}", relays[0].addr));
    let deadline = Instant::now() + Duration::from_secs(10);
    for ch in &channels {
        assert_eq!(publish_until(&publisher, ch, "0", deadline).await.0, 1);
    }
    let evalsha = |cluster: &RedisCluster| -> u64 {
        cluster
            .primaries()
            .iter()
            .map(|p| command_calls(cluster, *p, "evalsha"))
            .sum()
    };
    let before = evalsha(&cluster);
    // 4 batches of 5 items per channel, interleaved; then 600 on channel 0 alone.
    let mut batches: Vec<Vec<usize>> = (0..4)
        .map(|_| (0..5).flat_map(|_| 0..CHANNELS).collect())
        .collect();
    batches.push(vec![0; 600]);
    let mut next = [2u64; CHANNELS];
    for batch in &batches {
        let items: Vec<serde_json::Value> = batch
            .iter()
            .map(|&c| {
                let ch = &channels[c];
                serde_json::json!({"channel": ch, "event": "Ev", "data": sealed(ch, "Ev", "b")})
            })
            .collect();
        let answer = publisher
            .publish_batch(&publish_token(None), &items)
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let results = answer.body["results"].as_array().unwrap();
        for (&c, r) in batch.iter().zip(results) {
            assert_eq!(r["offset"], next[c], "channel {c}: {r}");
            next[c] += 1;
        }
    }
    // One call per channel per batch; the 600 take two calls (at most 512 each).
    assert_eq!(evalsha(&cluster) - before, 4 * CHANNELS as u64 + 2);
    for s in &mut subs {
        let last = next[channels.iter().position(|c| *c == s.ch).unwrap()] - 1;
        assert!(read_until(s, last).await, "{} closed", s.ch);
    }
    std::fs::remove_dir_all(&dir).ok();
}
