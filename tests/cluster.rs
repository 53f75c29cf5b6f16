//! Two real `sealcast` processes on one real `redis-server`: a rolling deploy. Clients of
//! the node that drains move to the other node and recover there, while publishing goes on
//! through the surviving node, with nothing lost or repeated.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::proc::{Proc, spawn, temp_dir};
use common::redis::RedisServer;
use common::*;
use sealcast_client::wire::{Client, Publisher};

const SECRET: &str = "acme-key-one-0123456789abcdefghijklmnop";

fn start_node(dir: &std::path::Path, name: &str, redis: &RedisServer) -> Proc {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n\
         [broker]\nkind = \"redis\"\nredis_url_env = \"SEALCAST_REDIS_URL\"\nprefix = \"cluster-test\"\n\
         [shutdown]\ndrain = \"500ms\"\ngrace = \"5s\"\n\
         [[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n",
    )
    .unwrap();
    spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[("ACME_KEY_1", SECRET), ("SEALCAST_REDIS_URL", &redis.url())],
    )
}

async fn wait_ready(p: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = reqwest::get(format!("http://{}/readyz", p.addr))
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "node never ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_moves_clients_to_the_other_node_with_nothing_lost() {
    let redis = RedisServer::start();
    let dir = temp_dir("cluster");
    std::fs::create_dir_all(&dir).unwrap();
    let mut one = start_node(&dir, "one", &redis);
    let two = start_node(&dir, "two", &redis);
    wait_ready(&one).await;
    wait_ready(&two).await;
    let ch = channel("deploy");

    // Clients on node one; the app publishes through node two.
    let mut clients = Vec::new();
    let mut epoch = String::new();
    for i in 0..5 {
        let (mut c, _) = Client::connect(
            &format!("ws://{}/v1/ws", one.addr),
            &connect_token(NS, &format!("u{i}"), 600),
        )
        .await
        .unwrap();
        let sub = c.subscribe(&ch, None).await.unwrap();
        epoch = sub["epoch"].as_str().unwrap().to_string();
        clients.push(c);
    }
    let publisher = Publisher::new(&format!("http://{}", two.addr));
    for i in 1..=3 {
        assert_eq!(publish(&publisher, &ch, &format!("{i}")).await.0, i);
    }
    for c in &mut clients {
        assert_eq!(read_pubs(c, 3).await, vec![1, 2, 3]);
    }

    // Node one drains (SIGTERM): its clients are told 1001 and come back on node two from
    // the last offset they saw, while publishing goes on.
    let kill = Command::new("kill")
        .args(["-TERM", &one.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    for c in &mut clients {
        assert_eq!(c.closed(WAIT).await.unwrap(), Some(1001));
    }
    for i in 4..=6 {
        assert_eq!(publish(&publisher, &ch, &format!("{i}")).await.0, i);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let (mut c, _) = Client::connect(
            &format!("ws://{}/v1/ws", two.addr),
            &connect_token(NS, &format!("u{i}"), 600),
        )
        .await
        .unwrap();
        let sub = c.subscribe(&ch, Some((&epoch, 3))).await.unwrap();
        assert_eq!(sub["recovered"], true, "{sub}");
        assert_eq!(read_pubs(&mut c, 3).await, vec![4, 5, 6]);
        *client = c;
    }
    assert_eq!(publish(&publisher, &ch, "7").await.0, 7);
    for c in &mut clients {
        assert_eq!(read_pubs(c, 1).await, vec![7]);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while one.alive() {
        assert!(Instant::now() < deadline, "node one did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_dir_all(&dir).ok();
}
