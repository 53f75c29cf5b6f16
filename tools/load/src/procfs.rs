//! What `/proc` says about a process: resident memory, its peak, CPU time; and the
//! open-files limit of this one.

/// One reading of a process's memory and CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// Resident set, bytes.
    pub rss: u64,
    /// Peak resident set since start or the last [`reset_peak`], bytes.
    pub hwm: u64,
    /// User plus system CPU seconds.
    pub cpu_secs: f64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat` (`pid` 0 means this process).
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let base = if pid == 0 {
        "/proc/self".to_string()
    } else {
        format!("/proc/{pid}")
    };
    let status = std::fs::read_to_string(format!("{base}/status"))?;
    let kb = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let stat = std::fs::read_to_string(format!("{base}/stat"))?;
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on every Linux ABI the relay targets.
    let cpu_secs = (ticks(14) + ticks(15)) as f64 / 100.0;
    Ok(ProcSample {
        rss: kb("VmRSS:"),
        hwm: kb("VmHWM:"),
        cpu_secs,
    })
}

/// Resets the peak resident set of `pid` (writes 5 to `clear_refs`); false if refused.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Raises this process's soft open-files limit to the hard one; returns the new limit.
pub fn raise_fd_limit() -> u64 {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((_, hard)) => {
            let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard);
            hard
        }
        Err(_) => 1024,
    }
}
