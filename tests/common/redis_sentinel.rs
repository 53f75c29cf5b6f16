//! A private Redis primary, one replica and three sentinels on 127.0.0.1 for a test, with a
//! short `down-after-milliseconds` so a killed primary is replaced within seconds; every
//! process killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MASTER: &str = "mymaster";

pub struct RedisSentinel {
    pub primary: u16,
    pub replica: u16,
    pub sentinels: Vec<u16>,
    children: Vec<(u16, Child)>,
    dir: std::path::PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl RedisSentinel {
    pub fn start(name: &str) -> RedisSentinel {
        let dir = std::env::temp_dir().join(format!("sealcast-rs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = RedisSentinel {
            primary: free_port(),
            replica: free_port(),
            sentinels: Vec::new(),
            children: Vec::new(),
            dir,
        };
        let server = |port: u16, extra: &[String]| {
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--repl-diskless-sync-delay", "0"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (install it: apt-get install redis-server)")
        };
        let primary = server(s.primary, &[]);
        s.children.push((s.primary, primary));
        let replica = server(
            s.replica,
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                s.primary.to_string(),
            ],
        );
        s.children.push((s.replica, replica));
        wait_for("the replica syncs", Duration::from_secs(15), || {
            cli(s.replica, &["INFO", "replication"]).contains("master_link_status:up")
        });
        for i in 0..3 {
            let port = free_port();
            let conf = s.dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 5000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    s.dir.display(),
                    s.primary
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .args([conf.to_str().unwrap(), "--sentinel"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel");
            s.children.push((port, child));
            s.sentinels.push(port);
        }
        // Every sentinel has found the two others (so a failover can be authorized).
        for p in s.sentinels.clone() {
            wait_for("the sentinels meet", Duration::from_secs(20), || {
                cli(p, &["SENTINEL", "MASTER", MASTER])
                    .lines()
                    .collect::<Vec<_>>()
                    .windows(2)
                    .any(|w| w[0] == "num-other-sentinels" && w[1] == "2")
            });
        }
        s
    }

    /// The sentinels' URLs, comma-separated (`sentinel_urls_env`).
    pub fn urls(&self) -> String {
        self.sentinels
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs the process on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(i) = self.children.iter().position(|(p, _)| *p == port) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
