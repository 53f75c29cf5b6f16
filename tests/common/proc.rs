//! The real `sealcast` binary as a child process: spawned with a config, its listening
//! address read from stdout, its stderr collected, killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_sealcast");

/// A running binary, killed on drop; stderr collected in the background.
pub struct Proc {
    pub child: Child,
    pub stdout_lines: Vec<String>,
    pub stderr: Arc<Mutex<String>>,
    pub addr: std::net::SocketAddr,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory from /proc, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sealcast");
    let stderr = Arc::new(Mutex::new(String::new()));
    {
        let mut err = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap();
                // Keep the tail only: the audit log of a thousand refusals is long.
                if s.len() > 1 << 20 {
                    let cut = s.len() - (1 << 19);
                    let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                    s.drain(..cut);
                }
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no listening line; stderr: {}", stderr.lock().unwrap()));
        let rest = line
            .strip_prefix("sealcast listening on http://")
            .or_else(|| line.strip_prefix("sealcast listening on https://"));
        if let Some(rest) = rest {
            break rest.parse().expect("listening address");
        }
        lines.push(line);
    };
    Proc {
        child,
        stdout_lines: lines,
        stderr,
        addr,
    }
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sealcast-cli-{name}-{}", std::process::id()))
}

pub fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The secrets of the apps [`serve`] configures (those of `tests/common`).
pub const APP_SECRETS: [(&str, &str); 3] = [
    ("ACME_KEY_1", "acme-key-one-0123456789abcdefghijklmnop"),
    ("ACME_KEY_2", "acme-key-two-0123456789abcdefghijklmnop"),
    ("OTHER_KEY_1", "other-key-one-0123456789abcdefghijklmno"),
];

/// The apps of `tests/common` (acme with k1 and k2, other with k1) as config tables.
pub const APPS_TOML: &str = "[[apps]]\nid = \"acme\"\n\
    [[apps.keys]]\nkid = \"k1\"\nsecret_env = \"ACME_KEY_1\"\n\
    [[apps.keys]]\nkid = \"k2\"\nsecret_env = \"ACME_KEY_2\"\n\
    [[apps]]\nid = \"other\"\n[[apps.keys]]\nkid = \"k1\"\nsecret_env = \"OTHER_KEY_1\"\n";

/// Writes a config file in a fresh directory named after `name` and starts
/// `serve --config` on it: `listen` on 127.0.0.1:0, then `extra` (top-level keys first,
/// then tables), then the apps of `tests/common`. Returns the process and the file.
pub fn serve(name: &str, extra: &str) -> (Proc, std::path::PathBuf) {
    let dir = temp_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sealcast.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:0\"\n{extra}\n{APPS_TOML}"),
    )
    .unwrap();
    let p = spawn(&["serve", "--config", path.to_str().unwrap()], &APP_SECRETS);
    (p, path)
}

impl Proc {
    /// The admin listener's address, from the start-up line (`admin_listen` set).
    pub fn admin_addr(&self) -> String {
        self.stdout_lines
            .iter()
            .find_map(|l| l.strip_prefix("sealcast admin listening on http://"))
            .unwrap_or_else(|| panic!("no admin line in {:?}", self.stdout_lines))
            .to_string()
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin_addr()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}
