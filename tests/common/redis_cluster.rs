//! A private Redis Cluster for a test: 3 primaries and 3 replicas on 127.0.0.1, ports
//! below 55535 (each node's cluster bus is its port + 10000), a short node timeout so a
//! killed primary is replaced within seconds, every process killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: std::path::PathBuf,
}

/// Six consecutive ports whose bus ports (+10000) are free too.
fn free_ports() -> Vec<u16> {
    for _ in 0..200 {
        let base: u16 = 20000 + rand::random::<u16>() % 25000;
        let ports: Vec<u16> = (base..base + 6).collect();
        let free = ports.iter().all(|p| {
            TcpListener::bind(("127.0.0.1", *p)).is_ok()
                && TcpListener::bind(("127.0.0.1", *p + 10000)).is_ok()
        });
        if free {
            return ports;
        }
    }
    panic!("no free ports for a Redis Cluster");
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    /// Starts the six nodes, creates the cluster and waits (bounded) until every node
    /// reports it ok.
    pub fn start(name: &str) -> RedisCluster {
        let ports = free_ports();
        let dir = std::env::temp_dir().join(format!(
            "sealcast-rc-{name}-{}-{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = RedisCluster {
            children: Vec::new(),
            ports: ports.clone(),
            dir,
        };
        for p in &ports {
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &p.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{p}.conf"),
                    "--cluster-node-timeout",
                    "2000",
                    // A fresh replica may not have heard from its primary lately: let it
                    // take over whatever its data age (the test writes little).
                    "--cluster-replica-validity-factor",
                    "0",
                    "--dir",
                    c.dir.to_str().unwrap(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--repl-diskless-sync-delay",
                    "0",
                    "--maxmemory-policy",
                    "noeviction",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (install it: apt-get install redis-server)");
            c.children.push(Some(child));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in &ports {
            while cli(*p, &["PING"]).trim() != "PONG" {
                assert!(Instant::now() < deadline, "redis-server {p} did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        c.wait_ok(&ports, Duration::from_secs(20));
        let deadline = Instant::now() + Duration::from_secs(20);
        for p in c.primaries() {
            while !cli(p, &["INFO", "replication"]).contains("state=online") {
                assert!(Instant::now() < deadline, "the replica of {p} never synced");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        c
    }

    /// Waits (bounded) until every node in `ports` says `cluster_state:ok`.
    pub fn wait_ok(&self, ports: &[u16], within: Duration) {
        let deadline = Instant::now() + within;
        for p in ports {
            while !cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster not ok on {p}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The seed URLs, comma-separated (`redis_urls_env`).
    pub fn seeds(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The ports of the current primaries (by `ROLE` of every live node).
    pub fn primaries(&self) -> Vec<u16> {
        self.live()
            .into_iter()
            .filter(|p| cli(*p, &["ROLE"]).starts_with("master"))
            .collect()
    }

    /// The ports of the nodes still running.
    pub fn live(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .collect()
    }

    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, args)
    }

    /// Sends a signal (`STOP`, `CONT`) to the node on `port`.
    pub fn signal(&self, port: u16, signal: &str) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        let pid = self.children[i].as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// The port of the primary that holds `key` (the one that answers without MOVED).
    pub fn owner_of(&self, key: &str) -> u16 {
        self.primaries()
            .into_iter()
            .find(|p| !cli(*p, &["TYPE", key]).contains("MOVED"))
            .expect("an owner")
    }

    /// The port of `primary`'s replica.
    pub fn replica_of(&self, primary: u16) -> u16 {
        let info = cli(primary, &["INFO", "replication"]);
        let line = info
            .lines()
            .find(|l| l.starts_with("slave0:"))
            .expect("a replica");
        line.split(',')
            .find_map(|kv| kv.strip_prefix("port="))
            .and_then(|p| p.parse().ok())
            .expect("its port")
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
