//! `noisy`: does one tenant's traffic within its limits hurt another tenant? App `load`
//! (B) fans out to its subscribers at a fixed rate and its publish-to-deliver latency is
//! measured twice on the same relay and the same subscribers: first with the noisy app
//! (A, [`super::tenant`]) idle, then with A pushing on every per-app limit at once.
//!
//! Each round starts a fresh relay (when the tool starts relays), so that A's filled
//! channel and revocation quotas of one round do not carry into the next round's quiet
//! phase; within a round both phases share one relay, so the only difference between them
//! is A. The quiet phase always comes first: A leaves state behind (channels, revocations,
//! history) that a quiet phase after it would still carry.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::dial::{Dial, Dialers};
use super::fanout::{Checks, Fanout, FanoutOptions, Phase};
use super::relay::{Relay, RelaySettings, TenantLimits};
use super::report::Report;
use super::tenant::{Tenant, TenantOptions};

/// Parameters of a noisy-neighbour run.
#[derive(Debug, Clone)]
pub struct NoisyOptions {
    /// B's fan-out; `duration` and `warmup` are those of each phase.
    pub b: FanoutOptions,
    /// A's traffic.
    pub a: TenantOptions,
    /// The limits the relay was configured with (for the report).
    pub limits: TenantLimits,
    /// Rounds (each: quiet phase, then noisy phase).
    pub rounds: usize,
}

/// Where each round's relay comes from.
#[derive(Debug)]
pub enum Relays<'a> {
    /// Start a fresh one per round.
    Spawn(&'a Path, &'a RelaySettings),
    /// Use this one for every round.
    Attached(&'a Relay),
}

/// One round's measurements.
struct Round {
    off: Phase,
    on: Phase,
    a: Vec<(&'static str, u64)>,
    a_first_unexpected: Option<String>,
    a_secs: f64,
    log_lines: u64,
}

/// Runs `o.rounds` rounds and reports B's latency with A off and on, what A got, and
/// the relay's CPU in each phase.
pub async fn run(relays: Relays<'_>, o: &NoisyOptions) -> anyhow::Result<Report> {
    let mut rounds = Vec::with_capacity(o.rounds);
    let mut checks = Checks::default();
    for i in 0..o.rounds.max(1) {
        let spawned;
        let relay = match relays {
            Relays::Attached(r) => r,
            Relays::Spawn(bin, settings) => {
                spawned = Relay::spawn(bin, settings).await?;
                eprintln!(
                    "sealcast-load: round {}: relay pid {} on {}",
                    i + 1,
                    spawned.pid,
                    spawned.addr
                );
                &spawned
            }
        };
        let (round, c) = one_round(relay, o, &format!("{}-{i}", std::process::id())).await?;
        eprintln!(
            "sealcast-load: round {}: B p99 {:.2} ms with A off, {:.2} ms with A on",
            i + 1,
            round.off.latency.value_at_quantile(0.99) as f64 / 1000.0,
            round.on.latency.value_at_quantile(0.99) as f64 / 1000.0,
        );
        rounds.push(round);
        checks = checks.plus(c);
    }
    Ok(report(o, &rounds, checks))
}

async fn one_round(relay: &Relay, o: &NoisyOptions, tag: &str) -> anyhow::Result<(Round, Checks)> {
    crate::with_dialers!(relay, o.b.subs, |d| one_round_on(relay, &d, o, tag).await)
}

async fn one_round_on<D: Dial>(
    relay: &Relay,
    dialers: &Dialers<D>,
    o: &NoisyOptions,
    tag: &str,
) -> anyhow::Result<(Round, Checks)> {
    let mut b = Fanout::start(relay, dialers, &o.b).await?;
    let off = b.phase(relay, o.b.duration, o.b.warmup).await?;
    let lines0 = relay.log_lines.load(std::sync::atomic::Ordering::Relaxed);
    let a = Tenant::start(relay, &o.a, tag).await?;
    let on = b.phase(relay, o.b.duration, o.b.warmup).await;
    let counts = a.counts.clone();
    let a_secs = a.stop().await;
    let on = on?;
    let log_lines = relay.log_lines.load(std::sync::atomic::Ordering::Relaxed) - lines0;
    let checks = b.finish().await?;
    // Let the relay settle (closing sockets) before a next round measures.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok((
        Round {
            off,
            on,
            a: counts.figures(),
            a_first_unexpected: counts.first_unexpected.lock().clone(),
            a_secs,
            log_lines,
        },
        checks,
    ))
}

fn ms(p: &Phase, q: f64) -> f64 {
    p.latency.value_at_quantile(q) as f64 / 1000.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `min / median / max` of `v` (the median of an even count is the upper middle).
pub fn spread(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.as_slice() {
        [] => String::new(),
        s => format!(
            "{:.2} / {:.2} / {:.2}",
            s[0],
            s[s.len() / 2],
            s[s.len() - 1]
        ),
    }
}

/// The median of `v` (the upper middle of an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

fn per_round(r: &mut Report, name: &str, v: &[f64], unit: &'static str) {
    let arr: Vec<Value> = v.iter().map(|&x| json!(round2(x))).collect();
    r.add(name, Value::Array(arr), unit);
}

fn report(o: &NoisyOptions, rounds: &[Round], checks: Checks) -> Report {
    let mut r = Report::new("noisy");
    let l = &o.limits;
    r.add(
        "rounds",
        rounds.len() as u64,
        "(fresh relay each, unless attached)",
    );
    r.add("b_subscribers", o.b.subs as u64, "");
    r.add("b_rate", o.b.rate, "publications/s");
    r.add(
        "phase_secs",
        o.b.duration.as_secs(),
        "s per phase, the first warmup_secs discarded",
    );
    r.add("warmup_secs", o.b.warmup.as_secs(), "s");
    r.add("publish_rate_per_app", l.publish_rate, "/s (= burst)");
    r.add("revoke_rate_per_app", l.revoke_rate, "/s");
    r.add("subscribe_rate_per_connection", l.subscribe_rate, "/s");
    r.add("a_max_channels", l.max_channels as u64, "");
    r.add("a_max_revocations", l.max_revocations as u64, "");
    r.addf("a_offered_publish_rate", o.a.publish_rate, 1, "/s");
    r.addf("a_offered_revoke_rate", o.a.revoke_rate, 1, "/s");
    r.addf(
        "a_offered_subscribe_rate",
        o.a.sub_rate * o.a.sub_conns as f64,
        1,
        "/s over all churning connections",
    );
    let col = |f: &dyn Fn(&Round) -> f64| rounds.iter().map(f).collect::<Vec<f64>>();
    let quantiles = [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)];
    for (phase, pick) in [("off", 0usize), ("on", 1)] {
        fn ph(x: &Round, pick: usize) -> &Phase {
            if pick == 0 { &x.off } else { &x.on }
        }
        for (name, q) in quantiles {
            let v = col(&|x| ms(ph(x, pick), q));
            per_round(&mut r, &format!("b_{name}_{phase}_ms"), &v, "ms per round");
            r.add(
                &format!("b_{name}_{phase}"),
                spread(&v),
                "ms min / median / max",
            );
        }
    }
    let ratio = col(&|x| ms(&x.on, 0.99) / ms(&x.off, 0.99).max(0.001));
    per_round(&mut r, "b_p99_ratio", &ratio, "on / off per round");
    r.addf(
        "b_p99_ratio_median",
        median(&ratio),
        2,
        "target: at most 2 (not checked: timing)",
    );
    let cores = |p: &Phase| p.relay_cpu / p.secs.max(0.001);
    per_round(&mut r, "relay_cpu_off", &col(&|x| cores(&x.off)), "cores");
    per_round(&mut r, "relay_cpu_on", &col(&|x| cores(&x.on)), "cores");
    let tool = |p: &Phase| p.self_cpu / p.secs.max(0.001);
    per_round(&mut r, "load_cpu_off", &col(&|x| tool(&x.off)), "cores");
    per_round(&mut r, "load_cpu_on", &col(&|x| tool(&x.on)), "cores");
    let lines: Vec<u64> = rounds.iter().map(|x| x.log_lines).collect();
    r.add(
        "relay_log_lines_on",
        lines,
        "stderr lines with A on (audit records)",
    );
    per_round(&mut r, "a_secs", &col(&|x| x.a_secs), "s A ran");
    let mut unexpected = 0;
    let names = rounds.first().map(|x| x.a.clone()).unwrap_or_default();
    for (k, (name, _)) in names.iter().enumerate() {
        let v: Vec<u64> = rounds.iter().map(|x| x.a[k].1).collect();
        let total = v.iter().sum::<u64>();
        if *name == "unexpected" {
            unexpected = total;
            continue;
        }
        r.add(&format!("a_{name}"), v, "per round");
        r.add(&format!("a_{name}_total"), total, "");
    }
    let published: u64 = rounds
        .iter()
        .map(|x| x.off.published + x.on.published)
        .sum();
    let delivered: u64 = rounds
        .iter()
        .map(|x| x.off.delivered + x.on.delivered)
        .sum();
    r.add("b_published", published, "");
    r.add("b_deliveries", delivered, "");
    checks.add_to(&mut r);
    r.must_be_zero("a_unexpected", unexpected);
    if let Some(w) = rounds.iter().find_map(|x| x.a_first_unexpected.clone()) {
        r.add("a_first_unexpected", w, "");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_median_sort_first() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), "1.00 / 2.00 / 3.00");
        assert_eq!(median(&[9.0, 1.0, 5.0]), 5.0);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(spread(&[]), "");
    }
}
