//! Two real `sealcast` processes on Redis under Sentinel (a primary, one replica, three
//! sentinels): they share channels, and when the primary is killed with SIGKILL they are
//! not ready and refuse publishes with 503 + Retry-After until the sentinels promote the
//! replica, then publishing resumes through it, both are ready again, and every subscriber
//! either saw every acknowledged publication or was closed and recovers (here with
//! `recovered:false`: the promoted primary's replication id renews the epochs).

mod common;

use std::time::{Duration, Instant};

use common::ha::{Sub, publish_until, read_until, ready, subscribe, wait_ready};
use common::proc::{Proc, spawn, temp_dir};
use common::redis_sentinel::{MASTER, RedisSentinel};
use common::*;
use sealcast_client::wire::Publisher;

const SECRET: &str = "acme-key-one-0123456789abcdefghijklmnop";

fn start_relay(dir: &std::path::Path, name: &str, redis: &RedisSentinel) -> Proc {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\n\
             [broker]\nkind = \"redis-sentinel\"\nsentinel_urls_env = \"SEALCAST_SENTINELS\"\n\
             sentinel_master = \"{MASTER}\"\nprefix = \"ha\"\n\
             [shutdown]\ndrain = \"200ms\"\ngrace = \"2s\"\n\
             [[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n"
        ),
    )
    .unwrap();
    spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[
            ("ACME_KEY_1", SECRET),
            ("SEALCAST_SENTINELS", &redis.urls()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_follow_a_sentinel_failover_with_nothing_silently_lost() {
    let mut redis = RedisSentinel::start("ha");
    let dir = temp_dir("redis-sentinel");
    std::fs::create_dir_all(&dir).unwrap();
    let relays = [
        start_relay(&dir, "a", &redis),
        start_relay(&dir, "b", &redis),
    ];
    for r in &relays {
        wait_ready(r, Duration::from_secs(20)).await;
    }
    let publishers: Vec<Publisher> = relays
        .iter()
        .map(|r| Publisher::new(&format!("http://{}", r.addr)))
        .collect();
    let channels = [channel("s-0"), channel("s-1")];
    let mut subs: Vec<Sub> = Vec::new();
    for (i, r) in relays.iter().enumerate() {
        for ch in &channels {
            subs.push(subscribe(&[r], ch, None, i).await);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for round in 1..=3u64 {
        for (i, ch) in channels.iter().enumerate() {
            let p = &publishers[(i + round as usize) % 2];
            assert_eq!(publish_until(p, ch, "x", deadline).await.0, round);
        }
    }
    for s in &mut subs {
        assert!(read_until(s, 3).await, "{} shared by both relays", s.ch);
    }

    redis.kill(redis.primary);
    let killed = Instant::now();
    // Not ready, and a publish is refused with Retry-After, while no primary answers.
    let mut refused = false;
    while !refused && killed.elapsed() < Duration::from_secs(5) {
        if !ready(&relays[0]).await {
            let r = reqwest::Client::new()
                .post(format!("http://{}/v1/publish", relays[0].addr))
                .bearer_auth(publish_token(None))
                .json(&serde_json::json!({
                    "channel": channels[0], "event": "Ev", "data": sealed(&channels[0], "Ev", "y")
                }))
                .send()
                .await
                .unwrap();
            if r.status() == 503 {
                assert!(r.headers().contains_key("retry-after"));
                refused = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "a publish was refused with 503 while no primary answered"
    );

    let mut acked = Vec::new();
    for ch in &channels {
        let a = publish_until(&publishers[1], ch, "y", killed + Duration::from_secs(25)).await;
        assert_ne!(a.0, 0, "publishing resumed within 25 s");
        acked.push(a);
    }
    let resumed = killed.elapsed();
    for r in &relays {
        wait_ready(r, Duration::from_secs(10)).await;
    }
    let alive: Vec<&Proc> = relays.iter().collect();
    for (i, s) in subs.iter_mut().enumerate() {
        let (want, epoch) = acked[i % 2].clone();
        if epoch == s.epoch && read_until(s, want).await {
            continue;
        }
        assert!(
            !read_until(s, u64::MAX).await,
            "closed, never silently behind"
        );
        let last = s.seen.last().copied().unwrap_or(0);
        let mut fresh = subscribe(&alive, &s.ch.clone(), Some((&s.epoch.clone(), last)), i).await;
        assert_eq!(fresh.epoch, epoch);
        assert!(read_until(&mut fresh, want).await);
        *s = fresh;
    }
    eprintln!("publishing resumed {resumed:?} after the primary died");
    std::fs::remove_dir_all(&dir).ok();
}
