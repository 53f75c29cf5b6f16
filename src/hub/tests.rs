//! Unit tests of the routing core.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::protocol::{AppId, Channel, EventName};

fn key(app: &str, ch: &str) -> ChannelKey {
    ChannelKey {
        app: AppId::parse(app).unwrap(),
        channel: Channel::parse(ch).unwrap(),
    }
}

fn hub(config: HubConfig) -> Hub {
    Hub::new(config, Arc::new(Metrics::default()))
}

fn outbox() -> Arc<Outbox> {
    Arc::new(Outbox::new(OutboxLimits {
        max_frames: 100_000,
        max_bytes: 1 << 30,
    }))
}

fn drain(o: &Outbox) -> Vec<u64> {
    let mut q = VecDeque::new();
    o.drain_into(&mut q).unwrap();
    q.iter().map(|p| p.offset).collect()
}

const DATA: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

#[test]
fn offsets_start_at_one_without_gaps_and_reach_every_subscriber_once() {
    let h = hub(HubConfig::default());
    let k = key("a", "ns#t");
    let ev = EventName::parse("E").unwrap();
    let (o1, o2) = (outbox(), outbox());
    h.subscribe(&k, 1, &o1, None).unwrap();
    h.subscribe(&k, 2, &o2, None).unwrap();
    for want in 1..=5 {
        assert_eq!(h.publish(&k, &ev, DATA, None).unwrap().offset, want);
    }
    assert_eq!(drain(&o1), vec![1, 2, 3, 4, 5]);
    assert_eq!(drain(&o2), vec![1, 2, 3, 4, 5]);
    h.unsubscribe(&k, 2);
    h.publish(&k, &ev, DATA, None).unwrap();
    assert_eq!(drain(&o1), vec![6]);
    assert!(drain(&o2).is_empty());
}

#[test]
fn one_encoding_shared_by_every_subscriber_and_the_history() {
    let h = hub(HubConfig::default());
    let k = key("a", "ns#t");
    let subs: Vec<_> = (0..3)
        .map(|i| {
            let o = outbox();
            h.subscribe(&k, i, &o, None).unwrap();
            o
        })
        .collect();
    h.publish(&k, &EventName::parse("E").unwrap(), DATA, None)
        .unwrap();
    let mut frames = Vec::new();
    for o in &subs {
        let mut q = VecDeque::new();
        o.drain_into(&mut q).unwrap();
        frames.push(q.pop_front().unwrap());
    }
    let replay = h
        .subscribe(
            &k,
            99,
            &outbox(),
            Some((&h.subscribe(&k, 98, &outbox(), None).unwrap().epoch, 0)),
        )
        .unwrap()
        .replay;
    frames.push(replay[0].clone());
    for f in &frames[1..] {
        assert!(
            Arc::ptr_eq(&frames[0], f),
            "same allocation for every subscriber and the history"
        );
    }
}

#[test]
fn apps_are_isolated() {
    let h = hub(HubConfig::default());
    let (oa, ob) = (outbox(), outbox());
    h.subscribe(&key("a", "ns#t"), 1, &oa, None).unwrap();
    h.subscribe(&key("b", "ns#t"), 2, &ob, None).unwrap();
    let ev = EventName::parse("E").unwrap();
    h.publish(&key("a", "ns#t"), &ev, DATA, None).unwrap();
    assert_eq!(drain(&oa), vec![1]);
    assert!(drain(&ob).is_empty());
    assert_eq!(
        h.publish(&key("b", "ns#t"), &ev, DATA, None)
            .unwrap()
            .offset,
        1
    );
}

#[test]
fn idempotency_key_returns_the_first_result_and_delivers_nothing() {
    let h = hub(HubConfig::default());
    let k = key("a", "ns#t");
    let o = outbox();
    h.subscribe(&k, 1, &o, None).unwrap();
    let ev = EventName::parse("E").unwrap();
    let first = h.publish(&k, &ev, DATA, Some("idem-1")).unwrap();
    let again = h.publish(&k, &ev, DATA, Some("idem-1")).unwrap();
    assert_eq!((first.offset, again.offset, again.duplicate), (1, 1, true));
    assert_eq!(first.epoch, again.epoch);
    assert_eq!(drain(&o), vec![1]);
    // The same key on another channel is another publication.
    assert!(
        !h.publish(&key("a", "ns#u"), &ev, DATA, Some("idem-1"))
            .unwrap()
            .duplicate
    );
}

#[test]
fn recovery_during_concurrent_publishing_has_no_gap_and_no_duplicate() {
    // A publisher thread runs while subscribers join with `since` at arbitrary moments;
    // each subscriber's replay followed by its live frames (deduplicated by offset as the
    // session does) must be exactly 1..=N.
    let h = Arc::new(hub(HubConfig::default()));
    let k = key("a", "ns#race");
    let ev = EventName::parse("E").unwrap();
    let epoch = h.subscribe(&k, 0, &outbox(), None).unwrap().epoch;
    const N: u64 = 800;
    let publisher = {
        let (h, k, ev) = (Arc::clone(&h), k.clone(), ev.clone());
        std::thread::spawn(move || {
            for _ in 0..N {
                h.publish(&k, &ev, DATA, None).unwrap();
            }
        })
    };
    let mut joined = Vec::new();
    for session in 1..=200u64 {
        let o = outbox();
        let s = h.subscribe(&k, session, &o, Some((&epoch, 0))).unwrap();
        assert_eq!(s.recovered, Some(true));
        joined.push((s, o));
        std::thread::yield_now();
    }
    publisher.join().unwrap();
    for (s, o) in joined {
        let mut got: Vec<u64> = s.replay.iter().map(|p| p.offset).collect();
        assert_eq!(got.last().copied().unwrap_or(0), s.offset);
        let mut last = s.offset;
        for off in drain(&o) {
            if off > last {
                got.push(off);
                last = off;
            }
        }
        assert_eq!(got, (1..=N).collect::<Vec<_>>());
    }
}

#[test]
fn wrong_epoch_or_evicted_range_is_not_recovered() {
    let h = hub(HubConfig {
        max_per_channel: 3,
        ..HubConfig::default()
    });
    let k = key("a", "ns#t");
    let ev = EventName::parse("E").unwrap();
    let epoch = h.subscribe(&k, 1, &outbox(), None).unwrap().epoch;
    for _ in 0..10 {
        h.publish(&k, &ev, DATA, None).unwrap();
    }
    let s = h.subscribe(&k, 2, &outbox(), Some(("other", 9))).unwrap();
    assert_eq!(
        (s.recovered, s.replay.len(), s.offset),
        (Some(false), 0, 10)
    );
    let s = h.subscribe(&k, 3, &outbox(), Some((&epoch, 5))).unwrap();
    assert_eq!(s.recovered, Some(false));
    let s = h.subscribe(&k, 4, &outbox(), Some((&epoch, 7))).unwrap();
    assert_eq!(s.recovered, Some(true));
    assert_eq!(
        s.replay.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
}

#[test]
fn global_byte_budget_evicts_the_oldest_first() {
    let h = hub(HubConfig {
        max_history_bytes: 2_000,
        ..HubConfig::default()
    });
    let ev = EventName::parse("E").unwrap();
    for i in 0..100 {
        h.publish(&key("a", &format!("ns#t{}", i % 7)), &ev, DATA, None)
            .unwrap();
        assert!(
            h.history_bytes() <= 2_000,
            "budget held after every publish"
        );
    }
    // The newest publication is still recoverable; the oldest are gone.
    let k = key("a", "ns#t1");
    let epoch = h.subscribe(&k, 1, &outbox(), None).unwrap().epoch;
    let last = h.subscribe(&k, 2, &outbox(), None).unwrap().offset;
    assert_eq!(
        h.subscribe(&k, 3, &outbox(), Some((&epoch, last - 1)))
            .unwrap()
            .recovered,
        Some(true)
    );
    assert_eq!(
        h.subscribe(&k, 4, &outbox(), Some((&epoch, 0)))
            .unwrap()
            .recovered,
        Some(false)
    );
}

#[tokio::test(start_paused = true)]
async fn ttl_expires_history_but_not_the_position_and_idle_channels_are_forgotten() {
    let h = hub(HubConfig {
        history_ttl: Duration::from_secs(120),
        channel_state_ttl: Duration::from_secs(600),
        ..HubConfig::default()
    });
    let k = key("a", "ns#t");
    let ev = EventName::parse("E").unwrap();
    let p = h.publish(&k, &ev, DATA, None).unwrap();
    h.publish(&k, &ev, DATA, None).unwrap();
    tokio::time::advance(Duration::from_secs(119)).await;
    h.sweep();
    assert!(h.history_bytes() > 0);
    tokio::time::advance(Duration::from_secs(2)).await;
    h.sweep();
    assert_eq!(h.history_bytes(), 0);
    // Caught up: recovers with nothing to replay. Behind: not recovered.
    let s = h.subscribe(&k, 1, &outbox(), Some((&p.epoch, 2))).unwrap();
    assert_eq!((s.recovered, s.replay.len()), (Some(true), 0));
    assert_eq!(
        h.subscribe(&k, 2, &outbox(), Some((&p.epoch, 1)))
            .unwrap()
            .recovered,
        Some(false)
    );
    h.unsubscribe(&k, 1);
    h.unsubscribe(&k, 2);
    tokio::time::advance(Duration::from_secs(601)).await;
    h.sweep();
    assert_eq!(h.channel_count(), 0);
    // Used again: a new epoch, offsets from 1.
    let again = h.publish(&k, &ev, DATA, None).unwrap();
    assert_eq!(again.offset, 1);
    assert_ne!(again.epoch, p.epoch);
}

#[test]
fn channel_limit_refuses_new_channels_only() {
    let h = hub(HubConfig {
        max_channels: 2,
        ..HubConfig::default()
    });
    let ev = EventName::parse("E").unwrap();
    h.publish(&key("a", "ns#1"), &ev, DATA, None).unwrap();
    h.publish(&key("a", "ns#2"), &ev, DATA, None).unwrap();
    assert_eq!(
        h.publish(&key("a", "ns#3"), &ev, DATA, None),
        Err(HubError::TooManyChannels)
    );
    assert!(h.subscribe(&key("a", "ns#3"), 1, &outbox(), None).is_err());
    assert_eq!(
        h.publish(&key("a", "ns#1"), &ev, DATA, None)
            .unwrap()
            .offset,
        2
    );
}

#[test]
fn overflowing_subscriber_is_reported_and_others_still_receive() {
    let h = hub(HubConfig::default());
    let k = key("a", "ns#t");
    let slow = Arc::new(Outbox::new(OutboxLimits {
        max_frames: 2,
        max_bytes: 1 << 20,
    }));
    let fast = outbox();
    h.subscribe(&k, 1, &slow, None).unwrap();
    h.subscribe(&k, 2, &fast, None).unwrap();
    let ev = EventName::parse("E").unwrap();
    let overflowed: usize = (0..5)
        .map(|_| h.publish(&k, &ev, DATA, None).unwrap().overflowed)
        .sum();
    assert_eq!(overflowed, 1);
    assert_eq!(drain(&fast), vec![1, 2, 3, 4, 5]);
}

#[test]
fn relayed_publications_reach_local_subscribers_only_and_keep_no_history() {
    let h = hub(HubConfig::default());
    let k = key("a", "ns#t");
    let ev = EventName::parse("E").unwrap();
    // No local channel: nothing to do, nothing created.
    assert_eq!(h.relay(&k, "e1", 1, &ev, DATA), 0);
    assert_eq!(h.channel_count(), 0);
    let o = outbox();
    h.subscribe(&k, 1, &o, None).unwrap();
    assert!(h.note_epoch(&k, "e1"));
    for offset in [7, 8, 9] {
        assert_eq!(h.relay(&k, "e1", offset, &ev, DATA), 1);
    }
    let mut q = VecDeque::new();
    o.drain_into(&mut q).unwrap();
    assert_eq!(
        q.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    let frame = std::str::from_utf8(&q[0].frame[2..]).unwrap();
    assert!(
        frame.contains("\"offset\":7") && frame.contains(DATA),
        "{frame}"
    );
    assert_eq!(h.history_bytes(), 0);
}

#[test]
fn a_relayed_batch_is_one_push_per_subscriber_and_overflows_a_small_queue_whole() {
    let metrics = Arc::new(crate::telemetry::Metrics::default());
    let h = Hub::new(HubConfig::default(), Arc::clone(&metrics));
    let k = key("a", "ns#t");
    let ev = EventName::parse("E").unwrap();
    let (fast, small) = (
        outbox(),
        Arc::new(Outbox::new(OutboxLimits {
            max_frames: 3,
            max_bytes: 1 << 20,
        })),
    );
    h.subscribe(&k, 1, &fast, None).unwrap();
    h.subscribe(&k, 2, &small, None).unwrap();
    let batch: Vec<Relayed<'_>> = (1..=4)
        .map(|offset| Relayed {
            epoch: "e1",
            offset,
            event: ev.clone(),
            data: DATA,
        })
        .collect();
    assert_eq!(h.relay_batch(&k, &batch), 8);
    assert_eq!(metrics.deliveries.get(), 8);
    assert_eq!(drain(&fast), vec![1, 2, 3, 4]);
    // Four frames do not fit in three: that subscriber closes with 4008 (and recovers from
    // the shared history), as with four single pushes; the other one is unaffected.
    let mut q = VecDeque::new();
    assert_eq!(small.drain_into(&mut q), Err(Stop::Overflowed));
    assert_eq!(h.relay_batch(&k, &batch[..0]), 0);
    assert_eq!(h.relay_batch(&k, &batch[3..]), 2);
    assert_eq!(drain(&fast), vec![4]);
    assert_eq!(
        h.history_bytes(),
        0,
        "relayed publications are not stored here"
    );
}

#[test]
fn a_relayed_epoch_change_closes_the_channels_subscribers_with_1011() {
    let h = hub(HubConfig::default());
    let (k, other) = (key("a", "ns#t"), key("a", "ns#u"));
    let ev = EventName::parse("E").unwrap();
    let (o, calm) = (outbox(), outbox());
    h.subscribe(&k, 1, &o, None).unwrap();
    h.subscribe(&other, 2, &calm, None).unwrap();
    assert_eq!(h.relay(&k, "e1", 1, &ev, DATA), 1);
    assert_eq!(h.relay(&other, "x1", 1, &ev, DATA), 1);
    // The shared store lost the channel: a new epoch restarting at 1.
    assert_eq!(h.relay(&k, "e2", 1, &ev, DATA), 0);
    let mut q = VecDeque::new();
    assert!(matches!(
        o.drain_into(&mut q),
        Err(Stop::Close(crate::protocol::CloseCode::InternalError))
    ));
    assert_eq!(drain(&calm), vec![1]);
    // A subscribe that read the old epoch must fail; one that read the new one is fine.
    assert!(!h.note_epoch(&k, "e1"));
    assert!(h.note_epoch(&k, "e2"));
}

#[test]
fn closing_all_subscribers_reaches_every_channel() {
    let h = hub(HubConfig::default());
    let outs: Vec<_> = (0..3).map(|_| outbox()).collect();
    for (i, o) in outs.iter().enumerate() {
        h.subscribe(&key("a", &format!("ns#t{i}")), i as u64, o, None)
            .unwrap();
    }
    assert_eq!(
        h.close_all_subscribers(crate::protocol::CloseCode::InternalError),
        3
    );
    for o in &outs {
        let mut q = VecDeque::new();
        assert!(matches!(o.drain_into(&mut q), Err(Stop::Close(_))));
    }
}

fn hub_with(config: HubConfig, quota: AppQuota) -> Hub {
    Hub::with_quotas(config, Arc::new(Metrics::default()), Quotas::uniform(quota))
}

#[tokio::test(start_paused = true)]
async fn a_never_published_channel_is_forgotten_with_its_last_subscriber_and_keeps_its_epoch() {
    let h = hub(HubConfig {
        channel_state_ttl: Duration::from_secs(600),
        ..HubConfig::default()
    });
    let k = key("a", "ns#ghost");
    let first = h.subscribe(&k, 1, &outbox(), None).unwrap();
    h.subscribe(&k, 2, &outbox(), None).unwrap();
    h.unsubscribe(&k, 1);
    assert_eq!(h.channel_count(), 1, "still subscribed");
    h.unsubscribe(&k, 2);
    assert_eq!(h.channel_count(), 0);
    assert_eq!(h.app_channel_count(&k.app), 0);
    // Within the bucket: the same position, so a client that saw offset 0 recovers.
    tokio::time::advance(Duration::from_secs(300)).await;
    let again = h
        .subscribe(&k, 3, &outbox(), Some((&first.epoch, 0)))
        .unwrap();
    assert_eq!((again.recovered, &again.epoch), (Some(true), &first.epoch));
    let p = h
        .publish(&k, &EventName::parse("E").unwrap(), DATA, None)
        .unwrap();
    assert_eq!((p.offset, &p.epoch), (1, &first.epoch));
    h.unsubscribe(&k, 3);
    assert_eq!(h.channel_count(), 1, "a published channel keeps its state");
    // Forgotten after a whole idle TTL: its next incarnation has another epoch, so the
    // old position does not recover into it.
    tokio::time::advance(Duration::from_secs(601)).await;
    h.sweep();
    assert_eq!(h.channel_count(), 0);
    let next = h
        .subscribe(&k, 4, &outbox(), Some((&first.epoch, 1)))
        .unwrap();
    assert_ne!(next.epoch, first.epoch);
    assert_eq!(next.recovered, Some(false));
}

#[test]
fn each_app_has_its_own_channel_quota() {
    let h = hub_with(
        HubConfig::default(),
        AppQuota {
            max_channels: 2,
            max_history_bytes: 1 << 20,
            max_revocations: 10,
        },
    );
    let ev = EventName::parse("E").unwrap();
    h.publish(&key("a", "ns#1"), &ev, DATA, None).unwrap();
    h.subscribe(&key("a", "ns#2"), 1, &outbox(), None).unwrap();
    assert_eq!(
        h.publish(&key("a", "ns#3"), &ev, DATA, None),
        Err(HubError::AppChannelQuota)
    );
    assert_eq!(
        h.subscribe(&key("a", "ns#3"), 2, &outbox(), None).err(),
        Some(HubError::AppChannelQuota)
    );
    h.publish(&key("b", "ns#3"), &ev, DATA, None).unwrap();
    h.publish(&key("b", "ns#4"), &ev, DATA, None).unwrap();
    // A subscription-only channel gives its place back when it ends.
    h.unsubscribe(&key("a", "ns#2"), 1);
    h.publish(&key("a", "ns#3"), &ev, DATA, None).unwrap();
}

#[test]
fn an_app_over_its_history_budget_evicts_only_its_own_history() {
    let h = hub_with(
        HubConfig {
            max_history_bytes: 100_000,
            ..HubConfig::default()
        },
        AppQuota {
            max_channels: 100,
            max_history_bytes: 3_000,
            max_revocations: 10,
        },
    );
    let ev = EventName::parse("E").unwrap();
    let b = key("b", "ns#quiet");
    let first = h.publish(&b, &ev, DATA, None).unwrap();
    for i in 0..500 {
        h.publish(&key("a", &format!("ns#noisy{}", i % 5)), &ev, DATA, None)
            .unwrap();
        assert!(h.app_history_bytes(&AppId::parse("a").unwrap()) <= 3_000);
    }
    let s = h
        .subscribe(&b, 1, &outbox(), Some((&first.epoch, 0)))
        .unwrap();
    assert_eq!(
        (s.recovered, s.replay.len()),
        (Some(true), 1),
        "b kept its history"
    );
}

#[test]
fn the_relay_wide_budget_evicts_the_heaviest_app_first() {
    let h = hub_with(
        HubConfig {
            max_history_bytes: 5_000,
            ..HubConfig::default()
        },
        AppQuota {
            max_channels: 100,
            max_history_bytes: 1 << 20,
            max_revocations: 10,
        },
    );
    let ev = EventName::parse("E").unwrap();
    let b = key("b", "ns#quiet");
    let first = h.publish(&b, &ev, DATA, None).unwrap();
    for _ in 0..200 {
        h.publish(&key("a", "ns#noisy"), &ev, DATA, None).unwrap();
        assert!(h.history_bytes() <= 5_000);
    }
    let s = h
        .subscribe(&b, 1, &outbox(), Some((&first.epoch, 0)))
        .unwrap();
    assert_eq!(
        s.recovered,
        Some(true),
        "the quiet app's entry, though oldest, stays"
    );
}

#[test]
fn a_run_publishes_as_its_items_one_by_one_would() {
    let ev = EventName::parse("E").unwrap();
    let k = key("a", "ns#t");
    let items = [
        (&ev, DATA, Some("x")),
        (&ev, DATA, None),
        (&ev, DATA, Some("x")),
        (&ev, DATA, Some("y")),
    ];
    let (one, run) = (hub(HubConfig::default()), hub(HubConfig::default()));
    let (o1, o2) = (outbox(), outbox());
    one.subscribe(&k, 1, &o1, None).unwrap();
    run.subscribe(&k, 1, &o2, None).unwrap();
    let each: Vec<_> = items
        .iter()
        .map(|&(e, d, i)| one.publish(&k, e, d, i).unwrap())
        .collect();
    let together = run.publish_run(&k, &items).unwrap();
    let seen = |p: &[Published]| -> Vec<_> { p.iter().map(|p| (p.offset, p.duplicate)).collect() };
    assert_eq!(
        seen(&together),
        [(1, false), (2, false), (1, true), (3, false)]
    );
    assert_eq!(seen(&each), seen(&together));
    assert_eq!(drain(&o1), drain(&o2));
    // A slow subscriber overflows once, counted on the run's last new publication.
    let slow = Arc::new(Outbox::new(OutboxLimits {
        max_frames: 2,
        max_bytes: 1 << 20,
    }));
    run.subscribe(&k, 2, &slow, None).unwrap();
    let fresh = (&ev, DATA, None);
    let r = run
        .publish_run(&k, &[fresh, fresh, fresh, (&ev, DATA, Some("y"))])
        .unwrap();
    let flags: Vec<_> = r.iter().map(|p| (p.overflowed, p.duplicate)).collect();
    assert_eq!(flags, [(0, false), (0, false), (1, false), (0, true)]);
    assert_eq!(drain(&o2), vec![4, 5, 6]);
}
