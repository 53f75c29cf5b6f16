//! The conventional `process_*` metrics (resident memory, CPU seconds, open and maximum
//! file descriptors, start time), read from `/proc/self` at each scrape. On a system
//! without `/proc` the series are simply absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads `/proc/self` when encoded.
#[derive(Debug)]
pub(super) struct ProcessCollector;

/// One reading of the process.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct ProcessSample {
    resident_bytes: Option<i64>,
    cpu_seconds: Option<f64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

impl ProcessSample {
    fn read() -> ProcessSample {
        ProcessSample {
            resident_bytes: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| resident_bytes(&s)),
            cpu_seconds: std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|s| cpu_seconds(&s, clock_ticks())),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX)),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|s| max_fds(&s)),
        }
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes(status: &str) -> Option<i64> {
    let kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// User plus system time of `/proc/self/stat` (fields 14 and 15), in seconds. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted after
/// its last `)`.
fn cpu_seconds(stat: &str, ticks_per_second: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th from here.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / ticks_per_second)
}

/// Clock ticks per second. `sysconf(_SC_CLK_TCK)` needs libc (and `unsafe`, which this
/// crate forbids); Linux has reported 100 to user space on every architecture it supports
/// since 2.6 (`USER_HZ`), whatever the kernel's internal HZ.
fn clock_ticks() -> f64 {
    100.0
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn max_fds(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_ascii_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(i64::MAX);
    }
    soft.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = ProcessSample::read();
        if let Some(v) = s.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, seconds",
                None,
                MetricType::Counter,
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory, bytes",
                s.resident_bytes,
            ),
            ("process_open_fds", "Open file descriptors", s.open_fds),
            (
                "process_max_fds",
                "Soft limit on open file descriptors",
                s.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                ConstGauge::new(v).encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tsealcast\nVmHWM:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(resident_bytes(status), Some(2048 * 1024));
        assert_eq!(resident_bytes("Name: x\n"), None);
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat = "42 (we ird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        assert_eq!(cpu_seconds(stat, 100.0), Some(3.0));
        assert_eq!(cpu_seconds("garbage", 100.0), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63704                63704                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_fds(limits), Some(1024));
        assert_eq!(
            max_fds("Max open files            unlimited            unlimited            files\n"),
            Some(i64::MAX)
        );
    }

    #[test]
    fn reads_this_process_on_linux() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let s = ProcessSample::read();
        assert!(s.resident_bytes.unwrap() > 0);
        assert!(s.open_fds.unwrap() > 0);
        assert!(s.max_fds.unwrap() >= s.open_fds.unwrap());
        assert!(s.cpu_seconds.unwrap() >= 0.0);
    }
}
