//! Criterion benches of the routing core, named by scenario:
//! `fanout_{1,100,10000}_subs` (one publish into a channel with N subscribers, including
//! the offset, history append and one encode), `replay_since_100` (a subscribe that
//! recovers 100 missed publications), and `verify_token` (one HS512 connect token).
//!
//! Run: `cargo bench --bench core`.

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sealcast::auth::{Authenticator, MintClaims, Secret, TokenPolicy, unix_now};
use sealcast::hub::{ChannelKey, Hub, HubConfig, Outbox, OutboxLimits};
use sealcast::protocol::{AppId, Channel, EventName};
use sealcast::telemetry::Metrics;

/// ~200 bytes of base64, like a small encrypted gadget update.
const DATA: &str = "q83vEjRWeJASNFZ4kKvN7xI0VniQq83vEjRWeJASNFZ4kKvN7xI0VniQq83vEjRWeJASNFZ4kKvN7xI0VniQq83vEjRWeJASNFZ4kKvN7xI0VniQq83vEjRWeJASNFZ4kKvN7xI0VniQq83vEjRWeJASNFZ4kKvN7xI0VniQq83vEjRWeJASNFZ4kKvN7xI0VniQq83v";

fn key(topic: &str) -> ChannelKey {
    ChannelKey {
        app: AppId::parse("acme").unwrap(),
        channel: Channel::parse(&format!("site/1/dashboard/1#{topic}")).unwrap(),
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    for subs in [1usize, 100, 10_000] {
        let hub = Hub::new(HubConfig::default(), Arc::new(Metrics::default()));
        let k = key("fanout");
        let ev = EventName::parse("AddAbsence").unwrap();
        let limits = OutboxLimits {
            max_frames: 1 << 20,
            max_bytes: 1 << 40,
        };
        let outboxes: Vec<Arc<Outbox>> = (0..subs)
            .map(|i| {
                let o = Arc::new(Outbox::new(limits));
                hub.subscribe(&k, i as u64, &o, None).unwrap();
                o
            })
            .collect();
        let mut scratch = VecDeque::new();
        group.throughput(Throughput::Elements(subs as u64));
        group.bench_function(format!("fanout_{subs}_subs"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    hub.publish(&k, &ev, DATA, None).unwrap();
                    timed += t.elapsed();
                    // Draining stands for the sessions' work; it is not the router's.
                    for o in &outboxes {
                        o.drain_into(&mut scratch).unwrap();
                        scratch.clear();
                    }
                }
                timed
            });
        });
    }
    group.finish();
}

fn replay(c: &mut Criterion) {
    let hub = Hub::new(HubConfig::default(), Arc::new(Metrics::default()));
    let k = key("replay");
    let ev = EventName::parse("AddAbsence").unwrap();
    let mut epoch = String::new();
    for _ in 0..1000 {
        epoch = hub.publish(&k, &ev, DATA, None).unwrap().epoch.to_string();
    }
    let outbox = Arc::new(Outbox::new(OutboxLimits {
        max_frames: 1024,
        max_bytes: 1 << 30,
    }));
    c.bench_function("replay_since_100", |b| {
        b.iter(|| {
            let s = hub.subscribe(&k, 1, &outbox, Some((&epoch, 900))).unwrap();
            assert_eq!(s.replay.len(), 100);
            hub.unsubscribe(&k, 1);
            s
        });
    });
}

fn verify(c: &mut Criterion) {
    let secret = Secret::new(b"acme-key-one-0123456789abcdefghijklmnop".to_vec());
    let auth = Authenticator::new(
        [(
            AppId::parse("acme").unwrap(),
            vec![(Some("k1".to_string()), &secret)],
        )],
        TokenPolicy::default(),
    );
    let now = unix_now();
    let token = MintClaims::connect(
        "acme",
        "ari:cloud:jira::site/7f3c0d2e/dashboard/10001",
        "557058:f2b8c1d4",
        now,
        3600,
    )
    .sign(Some("k1"), secret.expose());
    c.bench_function("verify_token", |b| {
        b.iter(|| auth.verify_connect(&token, now).unwrap())
    });
}

/// One TLS handshake's key exchange (key pair, then the shared secret with a peer share):
/// the relay's X25519 (AWS-LC) against the `ring` provider's, in the same run.
fn tls_kx(c: &mut Criterion) {
    let peer = rustls::crypto::ring::kx_group::X25519
        .start()
        .unwrap()
        .pub_key()
        .to_vec();
    let mut g = c.benchmark_group("tls_kx");
    for (name, group) in [
        ("x25519_aws_lc", sealcast::tls::kx::X25519),
        ("x25519_ring", rustls::crypto::ring::kx_group::X25519),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| group.start().unwrap().complete(&peer).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, fanout, replay, verify, tls_kx);
criterion_main!(benches);
