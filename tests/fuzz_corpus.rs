//! Replays the fuzz corpus as a regression test: every file under `fuzz/corpus/<target>/`
//! and `fuzz/regressions/<target>/` goes through the same checks the fuzz targets run
//! (`fuzz/src/checks.rs`, included here), so CI catches a regression on any input the
//! fuzzer once found interesting without running the fuzzer itself.
#![allow(dead_code, missing_docs, unreachable_pub)]

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() && p.file_name().is_none_or(|n| n != ".gitkeep") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, check: impl Fn(&[u8])) -> usize {
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(run.is_ok(), "{target}: {} failed the check", f.display());
    }
    files.len()
}

#[test]
fn frame_corpus_replays_clean() {
    let n = replay("frame", checks::frame);
    eprintln!("frame: {n} inputs");
}

#[test]
fn wsframe_corpus_replays_clean() {
    let n = replay("wsframe", checks::wsframe);
    eprintln!("wsframe: {n} inputs");
}

/// The seeds still reach what they were made for: a good stream decodes, each refusal
/// is the error its name says.
#[test]
fn wsframe_seeds_reach_their_cases() {
    use sealcast::ws::codec::{CodecError, Inbound};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/wsframe");
    let decode = |name: &str| checks::ws_decode(&std::fs::read(dir.join(name)).unwrap(), 1);
    for name in [
        "seed-text",
        "seed-text-at-limit",
        "seed-fragmented-with-ping",
        "seed-many-small",
    ] {
        let (msgs, err) = decode(name);
        assert!(!msgs.is_empty() && err.is_none(), "{name}: {err:?}");
    }
    for (name, want) in [
        ("seed-text-over-limit", CodecError::TooLarge),
        ("seed-fragments-over-limit", CodecError::TooLarge),
        ("seed-invalid-utf8", CodecError::InvalidUtf8),
        ("seed-close-bad-utf8", CodecError::InvalidUtf8),
        // No final frame, or a frame cut short: refused on the bad bytes alone.
        ("seed-invalid-utf8-unfinished", CodecError::InvalidUtf8),
        ("seed-invalid-utf8-cut-frame", CodecError::InvalidUtf8),
    ] {
        assert_eq!(decode(name).1, Some(want), "{name}");
    }
    for name in ["seed-binary", "seed-binary-fragmented"] {
        let (msgs, err) = decode(name);
        assert!(
            err.is_none() && matches!(&msgs[..], [.., Inbound::Binary(b)] if !b.is_empty()),
            "{name}: {msgs:?} {err:?}"
        );
    }
    for name in [
        "seed-unmasked",
        "seed-rsv-bits",
        "seed-opcode-3",
        "seed-ping-126",
        "seed-close-1005",
        "seed-close-1015",
    ] {
        assert!(
            matches!(decode(name).1, Some(CodecError::Protocol(_))),
            "{name}"
        );
    }
}

#[test]
fn token_corpus_replays_clean() {
    let auth = checks::authenticator();
    let n = replay("token", |d| checks::token(d, &auth));
    eprintln!("token: {n} inputs");
}

/// The seeds minted as valid still verify, so the corpus keeps reaching the checks behind
/// the MAC (a change of keys or NOW in checks.rs without regenerating the seeds fails here).
#[test]
fn valid_seed_tokens_still_verify() {
    let auth = checks::authenticator();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/token");
    for name in [
        "seed-connect-k1",
        "seed-connect-k2",
        "seed-connect-nokid",
        "seed-connect-other-app",
    ] {
        let t = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(auth.verify_connect(&t, checks::NOW).is_ok(), "{name}");
    }
    for name in ["seed-publish", "seed-publish-ns"] {
        let t = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(auth.verify_publish(&t, checks::NOW).is_ok(), "{name}");
    }
    for name in [
        "seed-flipped-sig",
        "seed-wrong-key",
        "seed-alg-none",
        "seed-padded",
        "seed-expired",
    ] {
        let t = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(auth.verify_connect(&t, checks::NOW).is_err(), "{name}");
    }
}
