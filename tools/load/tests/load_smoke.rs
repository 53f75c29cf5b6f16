//! CI smoke run of `sealcast-load`: each scenario once at a small size against a relay the
//! tool starts itself (the workspace's debug `sealcast` binary). Fails on any loss, duplicate, refused
//! publication or broken connection; asserts no timing.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The relay binary: `SEALCAST_BIN`, or the workspace's debug build (`cargo build --bin
/// sealcast`; `scripts/test` builds it first).
fn relay_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SEALCAST_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    let bin = target.join("debug").join("sealcast");
    assert!(
        bin.exists(),
        "no relay binary at {}: build it with `cargo build --bin sealcast` (or set SEALCAST_BIN)",
        bin.display()
    );
    bin
}

fn run(name: &str, args: &[&str]) -> Value {
    // One directory per run: the tests run in parallel and each removes its own.
    let dir =
        std::env::temp_dir().join(format!("sealcast-load-smoke-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_sealcast-load"))
        .arg("--relay-bin")
        .arg(relay_bin())
        .arg("--json")
        .arg(&json)
        .args(args)
        .output()
        .expect("run sealcast-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sealcast-load {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let _ = std::fs::remove_dir_all(Path::new(&dir));
    report
}

#[test]
fn connections_fanout_and_storm_lose_nothing() {
    let c = run(
        "connections",
        &["connections", "--conns", "50", "--per-channel", "10"],
    );
    assert_eq!(c["figures"]["connections"], 50);

    let f = run(
        "fanout",
        &[
            "fanout",
            "--subs",
            "50",
            "--channels",
            "2",
            "--count",
            "200",
            "--batch",
            "20",
            "--rate",
            "2000",
            "--warmup",
            "0",
            "--verify-every",
            "7",
        ],
    );
    let figures = &f["figures"];
    assert_eq!(figures["published"], 200);
    assert_eq!(figures["deliveries"], 200 * 25);
    for zero in ["lost", "duplicated", "bad_payloads", "refused_publications"] {
        assert_eq!(figures[zero], 0, "{zero}: {f}");
    }
    assert!(figures["verified_in_full"].as_u64().unwrap() > 0);

    let single = run(
        "fanout-single",
        &["fanout", "--subs", "10", "--count", "20", "--warmup", "0"],
    );
    assert_eq!(single["figures"]["deliveries"], 200);

    let s = run(
        "storm",
        &[
            "storm",
            "--clients",
            "50",
            "--per-channel",
            "10",
            "--missed",
            "5",
        ],
    );
    assert_eq!(s["figures"]["not_recovered"], 0);
    assert_eq!(s["figures"]["lost"], 0);
    assert_eq!(s["figures"]["duplicated"], 0);
}

#[test]
fn noisy_neighbour_is_refused_while_the_other_app_loses_nothing() {
    let n = run(
        "noisy",
        &[
            "noisy",
            "--subs",
            "20",
            "--rate",
            "20",
            "--duration",
            "4",
            "--warmup",
            "0",
            "--rounds",
            "1",
            "--app-publish-rate",
            "100",
            "--app-overload",
            "3",
            "--app-max-channels",
            "20",
            "--app-revoke-rate",
            "20",
            "--app-revoke-burst",
            "20",
            "--app-revoke-overload",
            "3",
            "--app-max-revocations",
            "30",
            "--app-subscribe-burst",
            "10",
            "--app-sub-conns",
            "2",
            "--app-sub-rate",
            "50",
        ],
    );
    let f = &n["figures"];
    let get = |k: &str| f[k].as_u64().unwrap_or_else(|| panic!("{k}: {n}"));
    // B: everything it published reached all 20 subscribers, in order, once.
    assert!(get("b_published") >= 100, "{n}");
    assert_eq!(get("b_deliveries"), get("b_published") * 20, "{n}");
    for zero in ["lost", "duplicated", "bad_payloads", "refused_publications"] {
        assert_eq!(get(zero), 0, "{zero}: {n}");
    }
    assert!(f["b_p99_on_ms"][0].as_f64().unwrap() > 0.0, "{n}");
    // A: served within its limits, refused beyond each of them.
    assert!(get("a_publish_ok_total") > 0, "{n}");
    assert!(get("a_publish_429_total") > 0, "publish rate: {n}");
    assert!(get("a_publish_503_total") > 0, "channel quota: {n}");
    assert_eq!(get("a_revoke_ok_total"), 30, "revocation quota: {n}");
    assert!(get("a_revoke_429_total") > 0, "revoke rate: {n}");
    assert!(get("a_revoke_503_total") > 0, "revocation quota: {n}");
    assert!(
        get("a_subscribe_rate_refused_total") > 0,
        "subscribe rate: {n}"
    );
    // Those the rate let through were served, or refused by the channel quota once A's
    // publications held it.
    assert!(
        get("a_subscribe_ok_total") + get("a_subscribe_quota_refused_total") > 0,
        "{n}"
    );
    assert_eq!(get("a_unexpected"), 0, "{n}");
}

/// The figures of a fan-out of 200 publications to 30 subscribers on 3 channels, and
/// that every one arrived, in order, once.
fn small_fanout(name: &str, extra: &[&str]) -> Value {
    let mut args: Vec<&str> = extra.to_vec();
    args.extend([
        "fanout",
        "--subs",
        "30",
        "--channels",
        "3",
        "--count",
        "200",
        "--batch",
        "10",
        "--rate",
        "1000",
        "--warmup",
        "0",
        "--verify-every",
        "5",
    ]);
    let f = run(name, &args);
    let figures = &f["figures"];
    assert_eq!(figures["published"], 200, "{f}");
    assert_eq!(figures["deliveries"], 200 * 10, "{f}");
    for zero in [
        "lost",
        "duplicated",
        "bad_payloads",
        "refused_publications",
        "connections_closed",
    ] {
        assert_eq!(figures[zero], 0, "{zero}: {f}");
    }
    assert!(figures["verified_in_full"].as_u64().unwrap() > 0, "{f}");
    assert!(figures["relay_cpu_us_per_delivery"].is_number(), "{f}");
    f
}

#[test]
fn fanout_and_storm_over_tls_lose_nothing() {
    let f = small_fanout("fanout-tls", &["--tls"]);
    assert_eq!(f["figures"]["transport"], "wss", "{f}");

    // Without resumption every handshake is full; with it, each is full or resumed (how
    // many resume is the relay's business: its session cache or tickets).
    for (name, resume, extra) in [
        ("storm-tls", false, &[][..]),
        ("storm-tls-resume", true, &[]),
        // Clients checking the relay's signature on one handshake in 8 (all the same
        // relay work, a pinned certificate).
        ("storm-tls-sampled", false, &["--tls-check-every", "8"]),
    ] {
        let mut args = vec!["--tls"];
        if resume {
            args.push("--tls-resume");
        }
        args.extend_from_slice(extra);
        args.extend([
            "storm",
            "--clients",
            "40",
            "--per-channel",
            "10",
            "--missed",
            "3",
        ]);
        let s = run(name, &args);
        let g = |k: &str| {
            s["figures"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("{k}: {s}"))
        };
        assert_eq!(g("not_recovered"), 0, "{s}");
        assert_eq!(g("lost"), 0, "{s}");
        assert_eq!(g("duplicated"), 0, "{s}");
        assert_eq!(
            g("tls_full_handshakes") + g("tls_resumed_handshakes"),
            40,
            "{s}"
        );
        if !resume {
            assert_eq!(g("tls_resumed_handshakes"), 0, "{s}");
        }
        let transport = s["figures"]["transport"].as_str().unwrap_or_default();
        assert_eq!(
            transport.contains("1 in 8 handshakes"),
            !extra.is_empty(),
            "{s}"
        );
        assert!(
            s["figures"]["handshakes_per_sec"].as_f64().unwrap() > 0.0,
            "{s}"
        );
    }
}

/// A private `redis-server` on a free port of 127.0.0.1, no persistence, killed on drop.
struct RedisServer {
    port: u16,
    child: std::process::Child,
}

impl RedisServer {
    fn start() -> RedisServer {
        use std::io::{Read, Write};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (install it: apt-get install redis-server)");
        let r = RedisServer { port, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let pong = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(1)));
                let mut buf = [0u8; 7];
                s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
            });
            if pong {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fanout_on_redis_loses_nothing_and_counts_redis_commands() {
    let redis = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let f = small_fanout("fanout-redis", &["--broker", &url]);
    let figures = &f["figures"];
    assert_eq!(figures["broker"], "redis", "{f}");
    // Every publication went through Redis, batched: at least one script call per request
    // (one per channel it touches), fewer calls than publications.
    let published = figures["published"].as_f64().unwrap();
    let requests = published / figures["batch"].as_f64().unwrap();
    let script_calls = figures["redis_evalsha_per_publication"].as_f64().unwrap() * published;
    assert!(
        script_calls >= requests - 0.5 && script_calls < published,
        "{f}"
    );
    assert!(
        figures["redis_calls_per_publication"].as_f64().unwrap()
            >= figures["redis_evalsha_per_publication"].as_f64().unwrap(),
        "{f}"
    );
}

#[test]
fn fanout_over_tls_on_a_cluster_the_tool_starts_loses_nothing() {
    let f = small_fanout(
        "fanout-cluster",
        &["--tls", "--redis-server", "--broker-kind", "redis-cluster"],
    );
    let figures = &f["figures"];
    assert_eq!(figures["broker"], "redis-cluster", "{f}");
    assert_eq!(figures["transport"], "wss", "{f}");
    assert!(
        figures["redis_calls_per_publication"].as_f64().unwrap() >= 1.0,
        "{f}"
    );
}
