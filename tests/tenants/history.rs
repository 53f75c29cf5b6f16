//! History bytes per app: one app's publishing evicts its own history, never another's,
//! whether the per-app budget or the relay-wide one is what fills.

use sealcast::auth::{MintClaims, unix_now};
use sealcast_client::wire::{Client, Publisher};

use crate::common::proc::{Proc, serve};
use crate::common::*;

/// App `other` publishes once, then app `acme` publishes 400 times; returns whether each
/// app's first publication is still recoverable.
async fn other_survives_acme(p: &Proc) -> (bool, bool) {
    let publisher = Publisher::new(&format!("http://{}", p.addr));
    let quiet = channel("quiet");
    let a = publish_with(&publisher, &other_publish_token(), &quiet, "kept").await;
    assert_eq!(a.status, 200);
    let other_epoch = a.body["epoch"].as_str().unwrap().to_string();
    let noisy = channel("noisy");
    let mut acme_epoch = String::new();
    for i in 0..400 {
        acme_epoch = publish(&publisher, &noisy, &format!("{i:0>100}")).await.1;
    }
    let ws = format!("ws://{}/v1/ws", p.addr);
    let other_token =
        MintClaims::connect("other", NS, "u", unix_now(), 600).sign(Some("k1"), OTHER_K1);
    let (mut c, _) = Client::connect(&ws, &other_token).await.unwrap();
    let r = c.subscribe(&quiet, Some((&other_epoch, 0))).await.unwrap();
    let other_kept = r["recovered"] == true;
    let (mut c, _) = Client::connect(&ws, &connect_token(NS, "u", 600))
        .await
        .unwrap();
    let r = c.subscribe(&noisy, Some((&acme_epoch, 0))).await.unwrap();
    (other_kept, r["recovered"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_over_its_history_budget_evicts_only_its_own() {
    let (p, _) = serve(
        "hist-app",
        "admin_listen = \"127.0.0.1:0\"\n[limits]\nmax_history_bytes_per_app = 20000\n",
    );
    assert_eq!(other_survives_acme(&p).await, (true, false));
    let m = p.metrics().await;
    assert!(metric_with_label(&m, "sealcast_limit_hits_total", "history_bytes_per_app") >= 1.0);
    assert!(
        metric_value(&m, "sealcast_history_bytes ") <= 20_000.0 + 2_000.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_wide_history_budget_evicts_the_heaviest_app_first() {
    let (p, _) = serve("hist-global", "[history]\nmax_bytes = 30000\n");
    assert_eq!(other_survives_acme(&p).await, (true, false));
}
