//! The real `sealcast` binary: config refusals, dev mode's printed commands, the token
//! CLI, audit records, log secrecy and SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::proc::{run, spawn, temp_dir};
use common::*;
use sealcast_client::wire::{Client, Publisher};
use serde_json::json;

fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("sealcast.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\n{extra}\n[shutdown]\ndrain = \"200ms\"\n[[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n"
        ),
    )
    .unwrap();
    path
}

const SECRET: &str = "acme-key-one-0123456789abcdefghijklmnop";

#[test]
fn bad_configs_refuse_to_start_and_name_the_key() {
    let dir = temp_dir("bad");
    let cases = [
        ("", vec![("ACME_KEY_1", "too-short")], "apps[0].keys[0]"),
        ("", vec![], "ACME_KEY_1"),
        (
            "[history]\nmax_per_chanel = 5\n",
            vec![("ACME_KEY_1", SECRET)],
            "max_per_chanel",
        ),
        (
            "[tokens]\nmax_connect_lifetime = \"25h\"\n",
            vec![("ACME_KEY_1", SECRET)],
            "tokens.max_connect_lifetime",
        ),
    ];
    for (extra, mut env, needle) in cases {
        let path = write_config(&dir, extra);
        // A user error is printed once, without a backtrace, whatever RUST_BACKTRACE says.
        env.push(("RUST_BACKTRACE", "1"));
        let out = run(&["serve", "--config", path.to_str().unwrap()], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{needle}");
        assert!(stderr.contains(needle), "{needle} not in: {stderr}");
        assert!(!stderr.contains(SECRET));
        // Each line of the message once (a config error used to come twice).
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let unique: std::collections::HashSet<&&str> = lines.iter().collect();
        assert_eq!(unique.len(), lines.len(), "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_logs_audit_records_but_never_a_token_secret_or_payload() {
    let dir = temp_dir("logs");
    let path = write_config(&dir, "");
    let p = spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[("ACME_KEY_1", SECRET), ("RUST_LOG", "trace")],
    );
    let ws = format!("ws://{}/v1/ws", p.addr);
    let connect = connect_token(NS, "audited-user", 600);
    let (mut c, _) = Client::connect(&ws, &connect).await.unwrap();
    let outside = format!("{NS}0#gadget-9");
    assert_eq!(
        c.subscribe(&outside, None).await.unwrap()["code"],
        "forbidden"
    );
    let ch = channel("g");
    c.subscribe(&ch, None).await.unwrap();
    let data = sealed(&ch, "Ev", "top secret plaintext");
    let publish_tok = publish_token(None);
    let a = Publisher::new(&format!("http://{}", p.addr))
        .publish(&publish_tok, &ch, "Ev", &data, Some("idem-key-1"))
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(c.frame(WAIT).await.unwrap()["data"], data);
    let refreshed = connect_token(NS, "audited-user", 900);
    assert_eq!(
        c.request(json!({"type":"refresh","token":refreshed}))
            .await
            .unwrap()["type"],
        "refreshed"
    );
    // A refused token, for its audit record.
    let bad = sealcast::auth::MintClaims::connect("acme", NS, "u", sealcast::auth::unix_now(), 60)
        .sign(Some("k1"), b"wrong-secret-wrong-secret-wrong-secret");
    let mut b = Client::open(&ws).await.unwrap();
    b.send(&json!({"type":"connect","token":bad}))
        .await
        .unwrap();
    assert_eq!(b.closed(WAIT).await.unwrap(), Some(4001));
    c.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = p.stderr.lock().unwrap().clone();
    // Audit records with their fields.
    let violation = logs
        .lines()
        .find(|l| l.contains("namespace_violation"))
        .unwrap_or_else(|| panic!("no audit record in: {logs}"));
    for field in [
        "audit",
        "acme",
        "audited-user",
        NS,
        outside.as_str(),
        "session",
        "peer=127.0.0.1:",
    ] {
        assert!(
            violation.contains(field),
            "{field} missing from {violation}"
        );
    }
    let refused = logs
        .lines()
        .find(|l| l.contains("token_refused"))
        .expect("token refusal audited");
    assert!(
        refused.contains("bad_signature") && refused.contains("kid") && refused.contains("peer="),
        "{refused}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("audit") && l.contains("event=\"refresh\"")
                || l.contains("event=refresh")),
        "refresh audited"
    );
    // Nothing secret.
    let secrets = [
        ("connect token", connect.as_str()),
        ("refresh token", refreshed.as_str()),
        ("publish token", publish_tok.as_str()),
        ("refused token", bad.as_str()),
        ("payload", data.as_str()),
        ("app secret", SECRET),
        ("plaintext", "top secret plaintext"),
    ];
    for (what, secret) in secrets {
        if let Some(line) = logs.lines().find(|l| l.contains(secret)) {
            // Name the leak and where it came from, without printing the secret itself.
            panic!(
                "the {what} reached the logs in: {}",
                line.replace(secret, "<SECRET>")
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        }
    }
    for part in connect.split('.').chain(data.get(..24)) {
        assert!(
            !logs.contains(part),
            "part of a token or payload reached the logs"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_with_1001_and_exits_cleanly() {
    let dir = temp_dir("term");
    let path = write_config(&dir, "");
    let mut p = spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[("ACME_KEY_1", SECRET)],
    );
    let ws = format!("ws://{}/v1/ws", p.addr);
    let (mut c, _) = Client::connect(&ws, &connect_token(NS, "u", 600))
        .await
        .unwrap();
    let kill = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(c.closed(WAIT).await.unwrap(), Some(1001));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_prints_commands_that_work() {
    let p = spawn(&["serve", "--dev"], &[("SEALCAST_LISTEN", "127.0.0.1:0")]);
    let banner = p.stdout_lines.join("\n");
    let grab = |after: &str, until: char| -> String {
        let start = banner
            .find(after)
            .unwrap_or_else(|| panic!("{after} not in {banner}"))
            + after.len();
        banner[start..].split(until).next().unwrap().to_string()
    };
    let connect = grab("{\"type\":\"connect\",\"token\":\"", '"');
    let publish_tok = grab("Authorization: Bearer ", '\'');
    let body = grab("-d '", '\'');
    let key = grab("export SEALCAST_PAYLOAD_KEY=", '\n');
    let secret = grab("export SEALCAST_DEV_SECRET='", '\'');
    // The printed connect token works, and the printed curl body publishes to its channel.
    let ws = format!("ws://{}/v1/ws", p.addr);
    let (mut c, connected) = Client::connect(&ws, &connect).await.unwrap();
    assert_eq!(connected["ns"], sealcast::dev::DEV_NS);
    c.subscribe(sealcast::dev::DEV_CHANNEL, None).await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let a = Publisher::new(&format!("http://{}", p.addr))
        .post("/v1/publish", &publish_tok, &body)
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{:?}", a.body);
    let f = c.frame(WAIT).await.unwrap();
    // The printed key decrypts it, through the printed decrypt command.
    let out = run(
        &[
            "decrypt",
            "--key-env",
            "K",
            "--channel",
            sealcast::dev::DEV_CHANNEL,
            "--event",
            "Hello",
            f["data"].as_str().unwrap(),
        ],
        &[("K", key.trim())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("from the dev backend"));
    // The printed secret mints tokens the relay accepts.
    let out = run(
        &[
            "token",
            "connect",
            "--app",
            "dev",
            "--kid",
            "dev",
            "--ns",
            "dev/dashboard-1",
            "--sub",
            "x",
            "--ttl",
            "10m",
            "--secret-env",
            "S",
        ],
        &[("S", &secret)],
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(Client::connect(&ws, &token).await.is_ok());
}

#[test]
fn keygen_and_token_commands() {
    let out = run(&["keygen"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("app secret") && text.contains("payload key"));
    let out = run(
        &[
            "token",
            "publish",
            "--app",
            "acme",
            "--kid",
            "k1",
            "--ttl",
            "60s",
            "--secret-env",
            "S",
        ],
        &[("S", SECRET)],
    );
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let auth = sealcast::auth::Authenticator::new(
        [(
            sealcast::protocol::AppId::parse("acme").unwrap(),
            vec![(
                Some("k1".into()),
                &sealcast::auth::Secret::new(SECRET.into()),
            )],
        )],
        Default::default(),
    );
    let claims = auth
        .verify_publish(&token, sealcast::auth::unix_now())
        .unwrap();
    assert_eq!(claims.exp - sealcast::auth::unix_now(), 60);
    // A short secret is refused; so is an over-long lifetime, by the relay.
    let out = run(
        &["token", "publish", "--app", "acme", "--secret-env", "S"],
        &[("S", "short")],
    );
    assert!(!out.status.success());
    let out = run(
        &[
            "encrypt",
            "--key-env",
            "K",
            "--channel",
            "a#b",
            "--event",
            "E",
            "{}",
        ],
        &[("K", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")],
    );
    assert!(out.status.success());
    let data = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        sealcast::payload::decrypt(&[0u8; 32], "a#b", "E", &data).unwrap(),
        b"{}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_keys_closing_only_sessions_of_a_removed_key_with_4002() {
    const K2: &str = "acme-key-two-0123456789abcdefghijklmnop";
    let dir = temp_dir("rotate");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sealcast.toml");
    let config = |keys: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\n[shutdown]\ndrain = \"200ms\"\n[[apps]]\nid = \"acme\"\n{keys}"
        )
    };
    let k1 = "[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n";
    let k2 = "[[apps.keys]]\nkid = \"k2\"\nsecret_env = \"ACME_KEY_2\"\n";
    std::fs::write(&path, config(&format!("{k1}{k2}"))).unwrap();
    let p = spawn(
        &["serve", "--config", path.to_str().unwrap()],
        &[("ACME_KEY_1", SECRET), ("ACME_KEY_2", K2)],
    );
    let ws = format!("ws://{}/v1/ws", p.addr);
    let now = sealcast::auth::unix_now();
    let token = |kid: Option<&str>, secret: &str| {
        sealcast::auth::MintClaims::connect("acme", NS, "u", now, 600).sign(kid, secret.as_bytes())
    };
    // Both keys verify, with or without kid.
    let (mut by_k1, _) = Client::connect(&ws, &token(Some("k1"), SECRET))
        .await
        .unwrap();
    let (mut by_k1_no_kid, _) = Client::connect(&ws, &token(None, SECRET)).await.unwrap();
    let (mut by_k2, _) = Client::connect(&ws, &token(Some("k2"), K2)).await.unwrap();
    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &p.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        )
    };
    // A broken file on SIGHUP changes nothing.
    std::fs::write(&path, "this is not toml [").unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        by_k1.subscribe(&channel("a"), None).await.unwrap()["type"],
        "subscribed"
    );
    // Remove k1 and reload.
    std::fs::write(&path, config(k2)).unwrap();
    hup();
    // 4002: the token is no longer verifiable; a token minted with a current key works.
    assert_eq!(by_k1.closed(WAIT).await.unwrap(), Some(4002));
    assert_eq!(
        by_k1_no_kid.closed(WAIT).await.unwrap(),
        Some(4002),
        "verified by k1 without a kid"
    );
    assert_eq!(
        by_k2.subscribe(&channel("b"), None).await.unwrap()["type"],
        "subscribed",
        "k2 sessions stay"
    );
    let mut refused = Client::open(&ws).await.unwrap();
    refused
        .send(&json!({"type":"connect","token":token(Some("k1"), SECRET)}))
        .await
        .unwrap();
    assert_eq!(refused.closed(WAIT).await.unwrap(), Some(4001));
    assert!(Client::connect(&ws, &token(Some("k2"), K2)).await.is_ok());
    let logs = p.stderr.lock().unwrap().clone();
    assert!(logs.contains("reload refused"), "a bad file is reported");
    assert!(
        logs.contains("config_reloaded") && logs.contains("sessions_closed=2"),
        "{logs}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn ok_stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn keygen_formats_for_scripts() {
    let env = ok_stdout(&run(&["keygen", "--format", "env"], &[]));
    let lines: Vec<&str> = env.lines().collect();
    assert_eq!(lines.len(), 2, "{env}");
    let secret = lines[0].strip_prefix("SEALCAST_APP_SECRET=").unwrap();
    let key = lines[1].strip_prefix("SEALCAST_PAYLOAD_KEY=").unwrap();
    assert!(secret.len() >= 32);
    let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key).unwrap();
    assert_eq!(key.len(), 32);
    let json: serde_json::Value =
        serde_json::from_str(&ok_stdout(&run(&["keygen", "--format", "json"], &[]))).unwrap();
    assert!(json["app_secret"].as_str().unwrap().len() >= 32);
    assert!(json["payload_key"].as_str().unwrap().ends_with('='));
    assert!(!run(&["keygen", "--format", "yaml"], &[]).status.success());
}

#[test]
fn minting_refuses_tokens_the_relay_would_refuse_naming_the_limit() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["connect", "--ns", "site/1", "--sub", "u", "--ttl", "48h"],
            "tokens.max_connect_lifetime",
        ),
        (&["publish", "--ttl", "1h"], "tokens.max_publish_lifetime"),
        (
            &["connect", "--ns", "site/1#x", "--sub", "u"],
            "namespace has a character outside",
        ),
        (
            &["connect", "--ns", "site/1", "--sub", "u", "--jti", ""],
            "jti must be 1 to 128 bytes",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["token", args[0], "--app", "acme", "--secret-env", "S"];
        all.extend_from_slice(&args[1..]);
        let out = run(&all, &[("S", SECRET), ("RUST_BACKTRACE", "1")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} minted: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(stderr.contains(needle), "{needle} not in {stderr}");
        assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    }
    // The limits themselves are accepted.
    ok_stdout(&run(
        &[
            "token",
            "connect",
            "--app",
            "acme",
            "--ns",
            "site/1",
            "--sub",
            "u",
            "--ttl",
            "24h",
            "--secret-env",
            "S",
        ],
        &[("S", SECRET)],
    ));
    ok_stdout(&run(
        &[
            "token",
            "publish",
            "--app",
            "acme",
            "--ttl",
            "300s",
            "--secret-env",
            "S",
        ],
        &[("S", SECRET)],
    ));
}

#[test]
fn token_verify_prints_the_claims_or_names_the_reason() {
    use sealcast::auth::{MintClaims, sign_with_header, unix_now};
    let now = unix_now();
    let good =
        MintClaims::connect("acme", NS, "user-7", now, 600).sign(Some("k1"), SECRET.as_bytes());
    let verify = |extra: &[&str], token: &str| {
        let mut args = vec!["token", "verify", "--app", "acme", "--secret-env", "S"];
        args.extend_from_slice(extra);
        args.push(token);
        run(&args, &[("S", SECRET)])
    };
    let claims: serde_json::Value =
        serde_json::from_str(&ok_stdout(&verify(&["--kid", "k1"], &good))).unwrap();
    assert_eq!(claims["sub"], "user-7");
    assert_eq!(claims["ns"], NS);
    let expired =
        MintClaims::connect("acme", NS, "u", now - 7200, 600).sign(Some("k1"), SECRET.as_bytes());
    let long = MintClaims::connect("acme", NS, "u", now, 2 * 86_400).sign(None, SECRET.as_bytes());
    let publish = MintClaims::publish("acme", None, now, 60).sign(None, SECRET.as_bytes());
    let other_app = MintClaims::publish("other", None, now, 60).sign(None, SECRET.as_bytes());
    let forged = MintClaims::connect("acme", NS, "u", now, 600)
        .sign(Some("k1"), b"another-secret-0123456789abcdef-0123456789");
    let hs256 = sign_with_header(
        &json!({"alg":"HS256","typ":"JWT"}),
        &json!({"iss":"acme","aud":"publish","iat":now,"exp":now + 60}),
        SECRET.as_bytes(),
    );
    let cases: [(&[&str], &str, &str); 8] = [
        (&["--kid", "k1"], &expired, "token refused (expired)"),
        (&[], &long, "token refused (lifetime_too_long)"),
        (&["--kid", "k2"], &good, "token refused (unknown_key)"),
        (&[], &forged, "token refused (bad_signature)"),
        (
            &["--aud", "connect"],
            &publish,
            "token refused (wrong_audience)",
        ),
        (&[], &other_app, "token refused (unknown_app)"),
        (&[], &hs256, "token refused (unsupported_algorithm)"),
        (&[], "not-a-token", "token refused (malformed)"),
    ];
    for (extra, token, needle) in cases {
        let out = verify(extra, token);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{needle}: {stderr}");
        assert!(out.stdout.is_empty(), "{needle}");
        assert!(stderr.contains(needle), "{needle} not in {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // The lifetime rule names its limit and key.
    let stderr = String::from_utf8_lossy(&verify(&[], &long).stderr).into_owned();
    assert!(
        stderr.contains("86400 s (tokens.max_connect_lifetime)"),
        "{stderr}"
    );
    // A publish token verifies as one without --aud.
    ok_stdout(&verify(&[], &publish));
}

#[test]
fn decrypting_with_the_wrong_event_says_what_to_check() {
    let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let data = sealcast::payload::encrypt(&[0u8; 32], "a#b", "Right", b"{}").unwrap();
    let out = run(
        &[
            "decrypt",
            "--key-env",
            "K",
            "--channel",
            "a#b",
            "--event",
            "Wrong",
            &data,
        ],
        &[("K", key), ("RUST_BACKTRACE", "1")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stderr.trim(),
        "error: payload failed authentication: check the key, channel and event (all three must be the ones it was encrypted with)"
    );
}

#[test]
fn the_file_limit_warning_is_only_for_an_explicit_max_connections() {
    let dir = temp_dir("nofile");
    for (extra, warned) in [
        ("", false),
        ("[limits]\nmax_connections = 1000000000000", true),
    ] {
        let path = write_config(&dir, extra);
        let mut p = spawn(
            &["serve", "--config", path.to_str().unwrap()],
            &[("ACME_KEY_1", SECRET), ("RUST_LOG", "info")],
        );
        // The start-up lines are written before the listening line; the reader thread
        // may still be copying them.
        let deadline = std::time::Instant::now() + WAIT;
        while !p.stderr.lock().unwrap().contains("sealcast listening")
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let stderr = p.stderr.lock().unwrap().clone();
        assert!(stderr.contains("connection_ceiling"), "{stderr}");
        assert_eq!(
            stderr.contains("limits.max_connections is above what the file limit allows"),
            warned,
            "{extra}: {stderr}"
        );
        assert!(p.alive());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_token_flag_has_help_text() {
    for (kind, flags) in [
        (
            "connect",
            &["--app", "--ns", "--sub", "--kid", "--jti", "--ttl"][..],
        ),
        ("publish", &["--app", "--ns", "--kid", "--ttl"][..]),
        ("verify", &["--app", "--kid", "--aud", "--secret-env"][..]),
    ] {
        let help = ok_stdout(&run(&["token", kind, "--help"], &[]));
        let lines: Vec<&str> = help.lines().collect();
        for flag in flags {
            let at = lines
                .iter()
                .position(|l| l.trim_start().starts_with(flag))
                .unwrap_or_else(|| panic!("{kind} {flag} not in:\n{help}"));
            // The flag, its value name, then words (or, in clap's long layout, the words
            // on the next line).
            let mut words = lines[at].split_whitespace().skip(2).count();
            if words == 0 {
                words = lines
                    .get(at + 1)
                    .map_or(0, |l| l.split_whitespace().count());
            }
            assert!(words >= 3, "{kind} {flag} has no help text:\n{help}");
        }
    }
}
