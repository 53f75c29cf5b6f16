//! The relay on Redis: the `[broker]` table of a spawned relay, an optional private
//! `redis-server` (or a three-primary Redis Cluster) started and stopped by the tool, and
//! Redis commands per publication from `INFO commandstats` read before and after a run.
//!
//! The Redis URL reaches the relay through an environment variable, never the config
//! file: a URL may carry a password.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Environment variable carrying the Redis URL (or the cluster's seeds) to a spawned relay.
pub const URL_ENV: &str = "SEALCAST_LOAD_REDIS_URL";

/// Which Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// One Redis (`[broker] kind = "redis"`).
    Redis,
    /// A Redis Cluster (`kind = "redis-cluster"`, the URLs are seeds).
    RedisCluster,
}

impl BrokerKind {
    /// The config's name.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Redis => "redis",
            BrokerKind::RedisCluster => "redis-cluster",
        }
    }
}

/// The relay's broker: kind, URLs and key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Redis or Redis Cluster.
    pub kind: BrokerKind,
    /// `redis://host:port[/db]` (the seeds of a cluster).
    pub urls: Vec<String>,
    /// `[broker] prefix`: fresh per run, so no key of an earlier run is met.
    pub prefix: String,
}

impl Broker {
    /// A broker on `urls` with a fresh key prefix.
    pub fn new(kind: BrokerKind, urls: Vec<String>) -> Broker {
        Broker {
            kind,
            urls,
            prefix: format!("sealcast-load-{}", hex::encode(rand::random::<[u8; 4]>())),
        }
    }

    /// The `[broker]` table; the URL comes from [`URL_ENV`] ([`Broker::env_value`]).
    pub fn config_table(&self) -> String {
        let key = match self.kind {
            BrokerKind::Redis => "redis_url_env",
            BrokerKind::RedisCluster => "redis_urls_env",
        };
        format!(
            "\n[broker]\nkind = \"{}\"\n{key} = \"{URL_ENV}\"\nprefix = \"{}\"\n",
            self.kind.name(),
            self.prefix
        )
    }

    /// The value of [`URL_ENV`] for the relay.
    pub fn env_value(&self) -> String {
        self.urls.join(",")
    }

    /// The primaries whose `INFO commandstats` add up to what the relay costs Redis: the
    /// server itself, or every primary a seed's `CLUSTER NODES` lists.
    pub fn primaries(&self) -> anyhow::Result<Vec<RedisAddr>> {
        let seed = RedisAddr::parse(self.urls.first().context("no Redis URL")?)?;
        match self.kind {
            BrokerKind::Redis => Ok(vec![seed]),
            BrokerKind::RedisCluster => {
                let nodes = seed.command(&["CLUSTER", "NODES"])?;
                let mut out = Vec::new();
                for line in nodes.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let (Some(addr), Some(flags)) = (f.get(1), f.get(2)) else {
                        continue;
                    };
                    if !flags.split(',').any(|x| x == "master") || flags.contains("fail") {
                        continue;
                    }
                    // ip:port@bus[,hostname]
                    let hostport = addr.split('@').next().unwrap_or_default();
                    let (host, port) = hostport.rsplit_once(':').context("CLUSTER NODES")?;
                    let host = if host.is_empty() { &seed.host } else { host };
                    out.push(RedisAddr {
                        host: host.to_string(),
                        port: port.parse()?,
                        password: seed.password.clone(),
                        user: seed.user.clone(),
                    });
                }
                anyhow::ensure!(!out.is_empty(), "CLUSTER NODES lists no primary");
                Ok(out)
            }
        }
    }

    /// Calls per command, summed over the primaries.
    pub fn commandstats(&self) -> anyhow::Result<CommandStats> {
        let mut total = CommandStats::default();
        for p in self.primaries()? {
            let info = p.command(&["INFO", "commandstats"])?;
            total.add(&CommandStats::parse(&info));
        }
        Ok(total)
    }
}

/// Commands the tool sends itself, left out of the counts.
const OWN_COMMANDS: &[&str] = &["info", "cluster|nodes", "auth", "hello"];

/// Calls per command name (`INFO commandstats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStats(pub BTreeMap<String, u64>);

impl CommandStats {
    /// Parses `cmdstat_<name>:calls=N,...` lines.
    pub fn parse(info: &str) -> CommandStats {
        let mut m = BTreeMap::new();
        for line in info.lines() {
            let Some((name, rest)) = line
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(c) = calls {
                m.insert(name.to_string(), c);
            }
        }
        CommandStats(m)
    }

    fn add(&mut self, o: &CommandStats) {
        for (k, v) in &o.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    /// What was called since `before`, without the tool's own commands, most called first.
    pub fn since(&self, before: &CommandStats) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .0
            .iter()
            .filter(|(k, _)| !OWN_COMMANDS.contains(&k.as_str()))
            .map(|(k, n)| (k.clone(), n.saturating_sub(*before.0.get(k).unwrap_or(&0))))
            .filter(|(_, n)| *n > 0)
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

/// One Redis server to talk to (plain TCP; `rediss://` is not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAddr {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// ACL user, when the URL names one.
    pub user: Option<String>,
    /// Password, when the URL carries one.
    pub password: Option<String>,
}

impl RedisAddr {
    /// Parses `redis://[[user]:password@]host[:port][/db]`.
    pub fn parse(url: &str) -> anyhow::Result<RedisAddr> {
        let rest = url
            .strip_prefix("redis://")
            .with_context(|| "only redis:// URLs are read for INFO commandstats")?;
        let rest = rest.split(['/', '?']).next().unwrap_or_default();
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (user, password) = match auth.map(|a| a.split_once(':').unwrap_or(("", a))) {
            Some((u, p)) => (
                (!u.is_empty()).then(|| u.to_string()),
                (!p.is_empty()).then(|| p.to_string()),
            ),
            None => (None, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                (h.trim_matches(['[', ']']).to_string(), p.parse()?)
            }
            _ => (hostport.to_string(), 6379),
        };
        Ok(RedisAddr {
            host,
            port,
            user,
            password,
        })
    }

    /// Runs one command (after `AUTH` when the URL had a password) and returns the reply
    /// as text; every wait bounded by 5 s.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut s = TcpStream::connect((self.host.as_str(), self.port))
            .with_context(|| format!("Redis at {}:{}", self.host, self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut r = BufReader::new(s.try_clone()?);
        if let Some(p) = &self.password {
            match &self.user {
                Some(u) => send(&mut s, &["AUTH", u, p])?,
                None => send(&mut s, &["AUTH", p])?,
            }
            reply(&mut r)?;
        }
        send(&mut s, args)?;
        reply(&mut r)
    }
}

fn send(s: &mut TcpStream, args: &[&str]) -> std::io::Result<()> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    s.write_all(&out)
}

/// Reads a simple string, integer or bulk string reply (the only kinds asked for).
fn reply(r: &mut BufReader<TcpStream>) -> anyhow::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end();
    match line.as_bytes().first() {
        Some(b'+') | Some(b':') => Ok(line[1..].to_string()),
        Some(b'-') => bail!("Redis: {}", &line[1..]),
        Some(b'$') => {
            let n: i64 = line[1..].parse()?;
            if n < 0 {
                return Ok(String::new());
            }
            anyhow::ensure!(n <= 64 << 20, "Redis reply too long");
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        _ => bail!("Redis: unexpected reply {line:?}"),
    }
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `redis-server` processes started by the tool, killed (and their files removed) on drop.
#[derive(Debug)]
pub struct RedisServers {
    children: Vec<Child>,
    dir: PathBuf,
    /// The broker on them.
    pub broker: Broker,
}

impl RedisServers {
    /// Starts one `redis-server` (kind `redis`) or a cluster of three primaries without
    /// replicas (kind `redis-cluster`), each on a free port of 127.0.0.1 with no
    /// persistence, and waits (at most 30 s) until it serves.
    pub fn start(binary: &str, kind: BrokerKind) -> anyhow::Result<RedisServers> {
        let dir = std::env::temp_dir().join(format!(
            "sealcast-load-redis-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        ));
        std::fs::create_dir_all(&dir)?;
        let mut me = RedisServers {
            children: Vec::new(),
            dir,
            broker: Broker::new(kind, Vec::new()),
        };
        let nodes = match kind {
            BrokerKind::Redis => 1,
            BrokerKind::RedisCluster => 3,
        };
        let mut addrs = Vec::new();
        for i in 0..nodes {
            let port = free_port()?;
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--dir",
                me.dir.to_str().context("temp dir")?,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if kind == BrokerKind::RedisCluster {
                let bus = free_port()?;
                args.extend(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        &bus.to_string(),
                        "--cluster-config-file",
                        &format!("nodes-{i}.conf"),
                        "--cluster-node-timeout",
                        "5000",
                    ]
                    .iter()
                    .map(|s| s.to_string()),
                );
            }
            let child = Command::new(binary)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {binary}"))?;
            me.children.push(child);
            addrs.push(RedisAddr {
                host: "127.0.0.1".into(),
                port,
                user: None,
                password: None,
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for a in &addrs {
            while a.command(&["PING"]).ok().as_deref() != Some("PONG") {
                anyhow::ensure!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if kind == BrokerKind::RedisCluster {
            let slots = 16384 / nodes;
            for (i, a) in addrs.iter().enumerate() {
                let first = i * slots;
                let last = if i + 1 == nodes {
                    16383
                } else {
                    first + slots - 1
                };
                a.command(&[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ])?;
            }
            for a in &addrs[1..] {
                addrs[0].command(&["CLUSTER", "MEET", "127.0.0.1", &a.port.to_string()])?;
            }
            let known = format!("cluster_known_nodes:{nodes}");
            for a in &addrs {
                loop {
                    let info = a.command(&["CLUSTER", "INFO"]).unwrap_or_default();
                    if info.contains("cluster_state:ok") && info.contains(&known) {
                        break;
                    }
                    anyhow::ensure!(Instant::now() < deadline, "the Redis Cluster never formed");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        me.broker.urls = addrs
            .iter()
            .map(|a| format!("redis://127.0.0.1:{}", a.port))
            .collect();
        Ok(me)
    }
}

impl Drop for RedisServers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_commandstats() {
        let a = RedisAddr::parse("redis://:pw@10.0.0.1:6380/0").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("10.0.0.1", 6380));
        assert_eq!(a.password.as_deref(), Some("pw"));
        assert_eq!(a.user, None);
        let a = RedisAddr::parse("redis://u:p@h").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("h", 6379));
        assert_eq!(a.user.as_deref(), Some("u"));
        assert!(RedisAddr::parse("rediss://h:1").is_err());

        let before = CommandStats::parse(
            "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=5,usec_per_call=0.5\r\n\
             cmdstat_info:calls=3,usec=1\r\n",
        );
        let after = CommandStats::parse(
            "# Commandstats\r\ncmdstat_evalsha:calls=30,usec=5\r\n\
             cmdstat_publish:calls=20,usec=1\r\ncmdstat_info:calls=9,usec=1\r\n\
             cmdstat_ping:calls=1,usec=1\r\n",
        );
        assert_eq!(
            after.since(&before),
            vec![
                ("evalsha".to_string(), 20),
                ("publish".to_string(), 20),
                ("ping".to_string(), 1)
            ]
        );
    }

    #[test]
    fn the_broker_table_names_the_url_variable_only() {
        let b = Broker::new(BrokerKind::RedisCluster, vec!["redis://:secret@h:1".into()]);
        let t = b.config_table();
        assert!(t.contains("kind = \"redis-cluster\""), "{t}");
        assert!(
            t.contains(&format!("redis_urls_env = \"{URL_ENV}\"")),
            "{t}"
        );
        assert!(!t.contains("secret"), "{t}");
        assert_eq!(b.env_value(), "redis://:secret@h:1");
    }
}
