//! This process's resource use as Linux reports it under `/proc/self`, for the admin API's
//! `cpuPercent` and `rssBytes` (and the benchmarks' CPU clock fallback).
//!
//! Sans-IO: the parsers take the files' text and [`CpuMeter`] takes sample times, so all of it
//! is unit-tested (and fuzzed: `fuzz/fuzz_targets/procfs.rs`). Reading the files is the
//! caller's business ([`read_cpu_ticks`], [`read_rss_bytes`]).

use std::time::Instant;

/// Clock ticks per second of the CPU times in `/proc/<pid>/stat` (Linux's `USER_HZ`, what
/// `sysconf(_SC_CLK_TCK)` answers; 100 on every architecture Linux runs pipemesh on).
pub const USER_HZ: u64 = 100;

/// `utime + stime` (user and system CPU time of every thread, in [`USER_HZ`] ticks) of a
/// `/proc/<pid>/stat` line; `None` if the text is not such a line.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Fields 14 (utime) and 15 (stime) of the line are the 12th and 13th after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// Resident set size in bytes from the `VmRSS:` line of `/proc/<pid>/status` (given in kB);
/// `None` when the line is missing or malformed. Read from `status` rather than `statm`, which
/// counts pages of a size the parser would have to be told.
pub fn status_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut words = line.split_ascii_whitespace();
    let kb: u64 = words.next()?.parse().ok()?;
    if words.next()? != "kB" || words.next().is_some() {
        return None;
    }
    kb.checked_mul(1024)
}

/// CPU time as a share of one core over the last sampling window, from successive readings
/// of the process's CPU ticks.
#[derive(Debug, Default, Clone)]
pub struct CpuMeter {
    last: Option<(Instant, u64)>,
    percent: Option<f64>,
}

impl CpuMeter {
    /// A meter with no sample yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the CPU `ticks` read at `now`. The second and later samples set
    /// [`CpuMeter::percent`]; a sample no later than the previous one, or with fewer ticks
    /// (not a reading of the same process), starts over from it.
    pub fn sample(&mut self, now: Instant, ticks: u64) {
        if let Some((then, before)) = self.last {
            let elapsed = now.saturating_duration_since(then);
            match ticks.checked_sub(before) {
                Some(used) if !elapsed.is_zero() => {
                    let cpu = used as f64 / USER_HZ as f64;
                    self.percent = Some(cpu / elapsed.as_secs_f64() * 100.0);
                }
                Some(_) => return,
                None => self.percent = None,
            }
        }
        self.last = Some((now, ticks));
    }

    /// Percent of one core used between the last two samples (200 is two busy cores);
    /// `None` before the second sample.
    pub fn percent(&self) -> Option<f64> {
        self.percent
    }
}

/// This process's CPU ticks (`/proc/self/stat`); `None` where unreadable.
pub fn read_cpu_ticks() -> Option<u64> {
    stat_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// This process's resident set size in bytes (`/proc/self/status`); `None` where unreadable.
pub fn read_rss_bytes() -> Option<u64> {
    status_rss_bytes(&std::fs::read_to_string("/proc/self/status").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cpu_ticks_after_a_tricky_command_name() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(stat_cpu_ticks(line), Some(325));
        let plain = "77 (pipemesh) R 1 77 77 0 -1 4194304 9 0 0 0 12 3 0 0 20 0 9 0 5 0 0\n";
        assert_eq!(stat_cpu_ticks(plain), Some(15));
    }

    #[test]
    fn cpu_ticks_refuse_what_is_not_a_stat_line() {
        for bad in [
            "",
            "1 (x) S 1",
            "no parenthesis at all 1 2 3 4 5 6 7 8 9 10 11 12 13 14",
            "1 (x) S 1 1 1 0 -1 0 0 0 0 0 -5 3 0",
            "1 (x) S 1 1 1 0 -1 0 0 0 0 0 12 x 0",
            "1 (x) S 1 1 1 0 -1 0 0 0 0 0 18446744073709551615 1 0",
        ] {
            assert_eq!(stat_cpu_ticks(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn own_stat_parses_where_proc_exists() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(read_cpu_ticks().is_some());
            assert!(read_rss_bytes().is_some_and(|b| b > 0));
        }
    }

    #[test]
    fn rss_from_the_vmrss_line() {
        let status = "Name:\tpipemesh\nVmPeak:\t  900 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n";
        assert_eq!(status_rss_bytes(status), Some(51200 * 1024));
        for bad in [
            "",
            "Name:\tx\n",
            "VmRSS:\n",
            "VmRSS:\t12 MB\n",
            "VmRSS:\t12\n",
            "VmRSS:\t-3 kB\n",
            "VmRSS:\t12 kB extra\n",
            "VmRSS:\t18446744073709551615 kB\n",
        ] {
            assert_eq!(status_rss_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cpu_percent_of_one_core_over_the_window() {
        let t0 = Instant::now();
        let mut m = CpuMeter::new();
        assert_eq!(m.percent(), None);
        m.sample(t0, 1000);
        assert_eq!(m.percent(), None, "one sample is no window");
        // 5 s with 250 ticks (2.5 s of CPU): half a core.
        m.sample(t0 + Duration::from_secs(5), 1250);
        assert_eq!(m.percent(), Some(50.0));
        // Two busy cores: 200.
        m.sample(t0 + Duration::from_secs(10), 2250);
        assert_eq!(m.percent(), Some(200.0));
        // Idle.
        m.sample(t0 + Duration::from_secs(15), 2250);
        assert_eq!(m.percent(), Some(0.0));
    }

    #[test]
    fn cpu_meter_ignores_a_sample_at_the_same_instant_and_restarts_on_fewer_ticks() {
        let t0 = Instant::now();
        let mut m = CpuMeter::new();
        m.sample(t0, 100);
        m.sample(t0 + Duration::from_secs(1), 150);
        assert_eq!(m.percent(), Some(50.0));
        // Same instant: no window; the previous figure stays.
        m.sample(t0 + Duration::from_secs(1), 400);
        assert_eq!(m.percent(), Some(50.0));
        // Ticks went backwards: unknown until the next window.
        m.sample(t0 + Duration::from_secs(2), 10);
        assert_eq!(m.percent(), None);
        m.sample(t0 + Duration::from_secs(3), 20);
        assert_eq!(m.percent(), Some(10.0));
    }
}
