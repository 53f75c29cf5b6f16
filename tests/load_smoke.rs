//! CI smoke run of `sealcast-load`: each scenario once at a small size against a relay the
//! tool starts itself (the debug `sealcast` binary). Fails on any loss, duplicate, refused
//! publication or broken connection; asserts no timing.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn run(name: &str, args: &[&str]) -> Value {
    let dir = std::env::temp_dir().join(format!("sealcast-load-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_sealcast-load"))
        .arg("--relay-bin")
        .arg(env!("CARGO_BIN_EXE_sealcast"))
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
