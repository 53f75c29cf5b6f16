//! Two deployments on two databases of one Redis, with the same key prefix: pub/sub ignores
//! the database index, so before the channel names carried it they heard each other's
//! publications and revocations.

use std::time::Duration;

use sealcast_client::wire::{Client, Publisher};
use serde_json::json;

use crate::common::proc::{Proc, serve};
use crate::common::redis::RedisServer;
use crate::common::*;

/// A relay on database `db`, its Redis URL given in a file (the way for one with a
/// password).
fn node(redis: &RedisServer, name: &str, db: u8) -> Proc {
    let dir = crate::common::proc::temp_dir(&format!("{name}-url"));
    std::fs::create_dir_all(&dir).unwrap();
    let url_file = dir.join("redis-url");
    std::fs::write(
        &url_file,
        format!("redis://127.0.0.1:{}/{db}\n", redis.port),
    )
    .unwrap();
    let (p, _) = serve(
        name,
        &format!(
            "[broker]\nkind = \"redis\"\nredis_url_file = \"{}\"\n",
            url_file.display()
        ),
    );
    p
}

async fn ready(p: &Proc) {
    eventually("ready", || async {
        reqwest::get(format!("http://{}/readyz", p.addr))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_on_two_databases_never_hear_each_other() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "db-a", 1), node(&redis, "db-b", 2));
    ready(&a).await;
    ready(&b).await;
    let ch = channel("shared-name");
    let (mut on_a, _) = Client::connect(
        &format!("ws://{}/v1/ws", a.addr),
        &connect_token(NS, "user-a", 600),
    )
    .await
    .unwrap();
    let r = on_a.subscribe(&ch, None).await.unwrap();
    assert_eq!(r["type"], "subscribed", "{r}");

    // Deployment B publishes on the same app and channel names, and revokes user-a.
    let pb = Publisher::new(&format!("http://{}", b.addr));
    for i in 0..3 {
        publish(&pb, &ch, &format!("b{i}")).await;
    }
    let revoked = pb
        .post("/v1/revoke", &publish_token(None), &json!({"sub":"user-a"}))
        .await
        .unwrap();
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);

    // A's subscriber hears none of it and stays open; A's own publication arrives as
    // offset 1 of A's channel.
    let pa = Publisher::new(&format!("http://{}", a.addr));
    let (offset, _) = publish(&pa, &ch, "a0").await;
    assert_eq!(offset, 1);
    let f = on_a.frame(WAIT).await.unwrap();
    assert_eq!(
        (f["type"].as_str(), f["offset"].as_u64()),
        (Some("pub"), Some(1)),
        "{f}"
    );
    let plain =
        sealcast::payload::decrypt(&PAYLOAD_KEY, &ch, "Ev", f["data"].as_str().unwrap()).unwrap();
    assert_eq!(plain, b"a0");
    assert!(
        on_a.frame(Duration::from_millis(500)).await.is_err(),
        "nothing else arrives and the session stays open"
    );
    // And user-a can still connect to A.
    Client::connect(
        &format!("ws://{}/v1/ws", a.addr),
        &connect_token(NS, "user-a", 600),
    )
    .await
    .expect("not revoked on A");
}
