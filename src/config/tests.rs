//! Unit tests of configuration loading.
use super::*;

const GOOD: &str = r#"
listen = "127.0.0.1:9000"
[history]
ttl = "90s"
max_per_channel = 50
[[apps]]
id = "acme"
[[apps.keys]]
kid = "k1"
secret_env = "ACME_KEY_1"
"#;

fn env(var: &str) -> Option<std::ffi::OsString> {
    match var {
        "ACME_KEY_1" => Some("0123456789abcdef0123456789abcdef\n".into()),
        "SHORT" => Some("short".into()),
        _ => None,
    }
}

fn err(text: &str) -> String {
    Config::parse(text, env).unwrap_err().to_string()
}

#[test]
fn parses_the_documented_example() {
    let c = Config::parse(GOOD, env).unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.history.ttl, Duration::from_secs(90));
    assert_eq!(c.history.max_per_channel, 50);
    assert_eq!(
        c.apps[0].keys[0].secret.len(),
        32,
        "trailing newline trimmed"
    );
    assert_eq!(c.websocket.auth_timeout, Duration::from_secs(5));
    assert!(!format!("{c:?}").contains("0123456789abcdef"));
}

#[test]
fn refusals_name_the_key() {
    assert!(err(&GOOD.replace("max_per_channel", "max_per_chanel")).contains("max_per_chanel"));
    assert!(err(&GOOD.replace("ACME_KEY_1", "SHORT")).contains("apps[0].keys[0]"));
    assert!(err(&GOOD.replace("ACME_KEY_1", "UNSET")).contains("UNSET"));
    let dup_kid = format!("{GOOD}[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n");
    assert!(err(&dup_kid).contains("duplicate kid"));
    let dup_app = format!(
        "{GOOD}[[apps]]\nid = \"acme\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n"
    );
    assert!(err(&dup_app).contains("duplicate app id"));
    let inline = GOOD.replace(
        "secret_env = \"ACME_KEY_1\"",
        "secret = \"0123456789abcdef0123456789abcdef\"",
    );
    assert!(err(&inline).contains("secret"));
    assert!(err(&format!("{GOOD}[tokens]\nleeway = \"31s\"\n")).contains("tokens.leeway"));
    assert!(err("listen = \"127.0.0.1:1\"").contains("no app"));
    let proxies = err(&format!(
        "{GOOD}[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n"
    ));
    assert!(proxies.contains("http.trusted_proxies[1]"), "{proxies}");
    let same = err(&GOOD.replace(
        "listen = \"127.0.0.1:9000\"",
        "listen = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9000\"",
    ));
    assert!(same.contains("admin_listen"), "{same}");
    for (broker, needle) in [
        (
            "kind = \"redis\"\n",
            "exactly one of redis_url, redis_url_file or redis_url_env",
        ),
        (
            "kind = \"redis\"\nredis_url = \"redis://user:pw@10.0.0.5:6379\"\n",
            "redis_url_env",
        ),
        ("kind = \"redis\"\nredis_url_env = \"UNSET\"\n", "UNSET"),
        (
            "kind = \"redis\"\nredis_url_file = \"/nonexistent/sealcast-url\"\n",
            "broker.redis_url_file",
        ),
        (
            "kind = \"redis\"\nredis_url_env = \"X\"\nredis_url_file = \"/x\"\n",
            "exactly one of",
        ),
        ("kind = \"redis\"\nredis_url = \"http://x\"\n", "redis://"),
        ("redis_url = \"redis://127.0.0.1\"\n", "broker.kind"),
        (
            "kind = \"redis\"\nredis_url = \"redis://127.0.0.1\"\nprefix = \"a b\"\n",
            "broker.prefix",
        ),
        ("kind = \"kafka\"\n", "kind"),
        ("kind = \"redis-cluster\"\n", "exactly one of redis_urls"),
        (
            "kind = \"redis-cluster\"\nredis_urls = [\"redis://a:1\", \"redis://u:pw@b:2\"]\n",
            "broker.redis_urls[1]",
        ),
        (
            "kind = \"redis-cluster\"\nredis_urls = [\"redis://a:1\"]\nredis_url = \"redis://a:1\"\n",
            "exactly one of",
        ),
        (
            "kind = \"redis-cluster\"\nredis_urls = []\n",
            "give 1 to 64 URLs",
        ),
        (
            "kind = \"redis-cluster\"\nredis_urls = [\"http://a\"]\n",
            "redis://",
        ),
        ("redis_urls = [\"redis://a:1\"]\n", "broker.kind"),
        (
            "kind = \"redis-sentinel\"\nsentinel_master = \"m\"\n",
            "exactly one of sentinel_urls",
        ),
        (
            "kind = \"redis-sentinel\"\nsentinel_urls = [\"redis://a:1\"]\n",
            "broker.sentinel_master",
        ),
        (
            "kind = \"redis-sentinel\"\nsentinel_urls = [\"redis://a:1\"]\nsentinel_master = \"a b\"\n",
            "broker.sentinel_master",
        ),
        (
            "kind = \"redis-sentinel\"\nsentinel_urls = [\"redis://u:pw@a:1\"]\nsentinel_master = \"m\"\n",
            "broker.sentinel_urls[0]",
        ),
        ("sentinel_master = \"m\"\n", "broker.kind"),
        (
            "kind = \"redis\"\nredis_url = \"redis://a:1\"\nredis_urls_env = \"X\"\n",
            "broker.kind",
        ),
    ] {
        let e = err(&format!("{GOOD}[broker]\n{broker}"));
        assert!(e.contains(needle), "{broker}: {e}");
        assert!(!e.contains("pw@"), "the password leaked: {e}");
    }
    let env_url = |v: &str| match v {
        "REDIS_URL" => Some("redis://:hunter2-secret@127.0.0.1:6379/0".into()),
        other => env(other),
    };
    let c = Config::parse(
        &format!("{GOOD}[broker]\nkind = \"redis\"\nredis_url_env = \"REDIS_URL\"\n"),
        env_url,
    )
    .unwrap();
    assert_eq!(c.broker.kind, BrokerKind::Redis);
    assert_eq!(
        c.redis_url.as_ref().unwrap().expose(),
        b"redis://:hunter2-secret@127.0.0.1:6379/0"
    );
    assert!(
        !format!("{c:?}").contains("hunter2"),
        "Debug shows the Redis password"
    );
}

#[test]
fn redis_cluster_seeds_come_from_a_list_the_environment_a_file_or_one_url() {
    let env_urls = |v: &str| match v {
        "SEEDS" => {
            Some("redis://:pw-secret@10.0.0.1:6379, redis://:pw-secret@10.0.0.2:6379".into())
        }
        "ONE" => Some("redis://10.0.0.9:6379".into()),
        other => env(other),
    };
    let parse = |broker: &str| {
        Config::parse(
            &format!("{GOOD}[broker]\nkind = \"redis-cluster\"\n{broker}"),
            env_urls,
        )
        .unwrap()
    };
    let seeds = |c: &Config| -> Vec<String> {
        c.redis_seeds
            .iter()
            .map(|s| String::from_utf8(s.expose().to_vec()).unwrap())
            .collect()
    };
    let c = parse("redis_urls = [\"redis://10.0.0.1:6379\", \"redis://10.0.0.2:6379\"]\n");
    assert_eq!(c.broker.kind, BrokerKind::RedisCluster);
    assert_eq!(seeds(&c).len(), 2);
    assert!(c.redis_url.is_none());
    let c = parse("redis_urls_env = \"SEEDS\"\n");
    assert_eq!(seeds(&c)[1], "redis://:pw-secret@10.0.0.2:6379");
    assert!(
        !format!("{c:?}").contains("pw-secret"),
        "Debug shows a password"
    );
    assert_eq!(
        seeds(&parse("redis_url_env = \"ONE\"\n")),
        ["redis://10.0.0.9:6379"]
    );
    let dir = std::env::temp_dir().join(format!("sealcast-seeds-{}", std::process::id()));
    std::fs::write(&dir, "redis://10.0.0.1:6379\n\nredis://10.0.0.3:6379\n").unwrap();
    let c = parse(&format!("redis_urls_file = \"{}\"\n", dir.display()));
    std::fs::remove_file(&dir).ok();
    assert_eq!(
        seeds(&c),
        ["redis://10.0.0.1:6379", "redis://10.0.0.3:6379"]
    );
}

#[test]
fn the_shipped_example_config_loads() {
    let text = include_str!("../../deploy/sealcast.example.toml");
    let env = |v: &str| {
        v.starts_with("ACME_KEY_")
            .then(|| "0123456789abcdef0123456789abcdef-example".into())
    };
    let c = Config::parse(text, env).unwrap();
    assert_eq!(c.apps[0].keys.len(), 2);
    assert_eq!(c.limits.max_connections, 19000);
    assert!(c.allowed_origins.is_some());
    assert_eq!(c.http.trusted_proxies, ["10.0.0.0/8"]);
    assert_eq!(c.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
}

#[test]
fn the_shipped_cluster_config_loads() {
    let text = include_str!("../../deploy/sealcast.cluster.toml");
    let env = |v: &str| match v {
        "ACME_KEY_1" => Some("0123456789abcdef0123456789abcdef-example".into()),
        "SEALCAST_REDIS_URL" => Some("redis://redis:6379/0".into()),
        _ => None,
    };
    let c = Config::parse(text, env).unwrap();
    assert_eq!(c.broker.kind, BrokerKind::Redis);
    assert_eq!(c.redis_url.unwrap().expose(), b"redis://redis:6379/0");
    let origins = crate::http::origin::OriginPolicy::from_config(c.allowed_origins.as_deref());
    assert!(
        origins.allows(Some("http://localhost:5173")),
        "a page on a laptop"
    );
    let text = include_str!("../../deploy/sealcast.redis-cluster.toml");
    let env = |v: &str| match v {
        "ACME_KEY_1" => Some("0123456789abcdef0123456789abcdef-example".into()),
        "SEALCAST_REDIS_URLS" => Some("redis://redis-1:6379,redis://redis-2:6379".into()),
        _ => None,
    };
    let c = Config::parse(text, env).unwrap();
    assert_eq!(c.broker.kind, BrokerKind::RedisCluster);
    assert_eq!(c.redis_seeds.len(), 2);
}

#[test]
fn secret_from_file() {
    let dir = std::env::temp_dir().join(format!("sealcast-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("k");
    std::fs::write(&f, "abcdefghijklmnopqrstuvwxyz0123456789\n").unwrap();
    let text = GOOD.replace(
        "secret_env = \"ACME_KEY_1\"",
        &format!("secret_file = {:?}", f.display().to_string()),
    );
    let c = Config::parse(&text, env).unwrap();
    assert_eq!(
        c.apps[0].keys[0].secret.expose(),
        b"abcdefghijklmnopqrstuvwxyz0123456789"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn per_app_quotas_default_from_limits_and_an_app_may_override_them() {
    let text = r#"
[limits]
max_channels_per_app = 50
max_revocations_per_app = 7
[[apps]]
id = "acme"
max_channels = 5
max_history_bytes = 4096
[[apps.keys]]
kid = "k1"
secret_env = "ACME_KEY_1"
[[apps]]
id = "other"
[[apps.keys]]
kid = "k1"
secret_env = "ACME_KEY_1"
"#;
    let c = Config::parse(text, env).unwrap();
    let q = crate::quota::Quotas::from_config(&c);
    let acme = q.of(&AppId::parse("acme").unwrap());
    let other = q.of(&AppId::parse("other").unwrap());
    assert_eq!(
        (
            acme.max_channels,
            acme.max_history_bytes,
            acme.max_revocations
        ),
        (5, 4096, 7)
    );
    assert_eq!(
        (
            other.max_channels,
            other.max_history_bytes,
            other.max_revocations
        ),
        (50, 256 << 20, 7)
    );
    let zero = text.replace("max_channels = 5", "max_channels = 0");
    assert!(
        err(&zero).contains("apps[0].max_channels"),
        "{}",
        err(&zero)
    );
}

#[test]
fn a_redis_url_with_a_password_comes_from_a_file() {
    let dir = std::env::temp_dir().join(format!("sealcast-cfg-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("redis-url");
    std::fs::write(&file, "redis://:hunter2-secret@127.0.0.1:6379/3\n").unwrap();
    let c = Config::parse(
        &format!(
            "{GOOD}[broker]\nkind = \"redis\"\nredis_url_file = \"{}\"\n",
            file.display()
        ),
        env,
    )
    .unwrap();
    assert_eq!(
        c.redis_url.as_ref().unwrap().expose(),
        b"redis://:hunter2-secret@127.0.0.1:6379/3",
        "trailing newline trimmed"
    );
    assert!(!format!("{c:?}").contains("hunter2"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_kubernetes_configs_load() {
    let dir = std::env::temp_dir().join(format!("sealcast-k8s-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("acme-k1");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef-example\n").unwrap();
    let env = |v: &str| match v {
        "SEALCAST_REDIS_URL" => Some("rediss://:pw@redis.internal:6380/0".into()),
        _ => None,
    };
    for (text, kind) in [
        (
            include_str!("../../deploy/k8s/base/sealcast.toml"),
            BrokerKind::Memory,
        ),
        (
            include_str!("../../deploy/k8s/overlays/redis/sealcast.toml"),
            BrokerKind::Redis,
        ),
    ] {
        // The pod mounts the Secret at /etc/sealcast/keys.
        let text = text.replace("/etc/sealcast/keys/acme-k1", &key.display().to_string());
        let c = Config::parse(&text, env).unwrap();
        assert_eq!(c.broker.kind, kind);
        assert!(c.admin_listen.is_some() && !c.http.public_metrics);
        assert!(c.shutdown.drain + c.shutdown.grace < std::time::Duration::from_secs(40));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tls_resumption_keys_default_on_and_bounded_and_can_be_set() {
    let tls = "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
    let with = |extra: &str| GOOD.replace("[history]", &format!("{tls}{extra}[history]"));
    let t = Config::parse(&with(""), env).unwrap().tls.unwrap();
    assert!(t.session_tickets);
    assert_eq!(t.session_cache_size, 10_000);
    let set = with("session_tickets = false\nsession_cache_size = 0\n");
    let t = Config::parse(&set, env).unwrap().tls.unwrap();
    assert!(!t.session_tickets);
    assert_eq!(t.session_cache_size, 0);
    assert_eq!(
        TlsConfig::from_files("c".into(), "k".into()).session_cache_size,
        10_000
    );
}
