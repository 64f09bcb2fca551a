//! CPU time of a whole process (every thread, live or exited), read from outside it.
//!
//! On 64-bit Linux this is the kernel's process CPU-time clock (`clock_getcpuclockid` +
//! `clock_gettime`), in nanoseconds. Elsewhere, or if that fails, `/proc/<pid>/stat`
//! (`utime + stime`, in 10 ms ticks: too coarse for short windows, so a warning is printed once).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// CPU time (user + system) process `pid` has used so far; `pid` 0 is this process.
pub fn process_cpu_time(pid: u32) -> io::Result<Duration> {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    if let Ok(d) = clock::process_cpu_time(pid) {
        return Ok(d);
    }
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!("bench: no process CPU clock; using /proc ticks (10 ms resolution)");
    }
    let path = if pid == 0 {
        "/proc/self/stat".to_owned()
    } else {
        format!("/proc/{pid}/stat")
    };
    let stat = std::fs::read_to_string(path)?;
    proc_stat_cpu(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
}

/// CPU time the whole host has spent busy (every core; all but idle and iowait) since boot,
/// from `/proc/stat`, and its number of cores; `None` where that file is unavailable.
/// Resolution 10 ms: enough to tell whether other work shared the machine during a window.
pub fn host_busy() -> Option<(Duration, usize)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let (busy, cores) = proc_stat_host(&stat)?;
    Some((busy, cores))
}

fn proc_stat_host(stat: &str) -> Option<(Duration, usize)> {
    let mut lines = stat.lines();
    let total: Vec<u64> = lines
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let ticks: u64 = total.iter().take(8).sum::<u64>() - total.get(3)? - total.get(4).unwrap_or(&0);
    let cores = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some((Duration::from_millis(ticks * 10), cores))
}

/// `utime + stime` of a `/proc/<pid>/stat` line ([`crate::procfs::stat_cpu_ticks`]).
fn proc_stat_cpu(stat: &str) -> Option<Duration> {
    let ticks = crate::procfs::stat_cpu_ticks(stat)?;
    Some(Duration::from_millis(
        ticks.checked_mul(1000)? / crate::procfs::USER_HZ,
    ))
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod clock {
    use std::io;
    use std::os::raw::{c_int, c_long};
    use std::time::Duration;

    /// `struct timespec` of 64-bit Linux (`time_t` and `long` are both 64-bit there).
    #[repr(C)]
    struct Timespec {
        tv_sec: c_long,
        tv_nsec: c_long,
    }

    extern "C" {
        fn clock_getcpuclockid(pid: c_int, clock_id: *mut c_int) -> c_int;
        fn clock_gettime(clock_id: c_int, tp: *mut Timespec) -> c_int;
    }

    pub(super) fn process_cpu_time(pid: u32) -> io::Result<Duration> {
        let pid = c_int::try_from(pid).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut clock: c_int = 0;
        // SAFETY: `clock` is a valid, writable `clockid_t` (an int on Linux); the function only
        // writes it. It returns an error number instead of setting errno.
        let r = unsafe { clock_getcpuclockid(pid, &mut clock) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let mut ts = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable `struct timespec` with the C layout above; the
        // function only writes it.
        if unsafe { clock_gettime(clock, &mut ts) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let secs = u64::try_from(ts.tv_sec).map_err(|_| io::ErrorKind::InvalidData)?;
        let nanos = u32::try_from(ts.tv_nsec).map_err(|_| io::ErrorKind::InvalidData)?;
        Ok(Duration::new(secs, nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_after_a_tricky_command_name() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(proc_stat_cpu(line), Some(Duration::from_millis(3250)));
        assert_eq!(proc_stat_cpu("1 (x) S 1"), None);
    }

    #[test]
    fn host_busy_from_proc_stat() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 50 0 0 500 0 0 0 0 0 0\n\
                    cpu1 50 5 50 500 20 1 2 3 7 0\nintr 1 2 3\n";
        assert_eq!(
            proc_stat_host(stat),
            Some((Duration::from_millis(161 * 10), 2))
        );
        assert_eq!(proc_stat_host("intr 1\n"), None);
    }

    #[test]
    fn own_cpu_time_advances_with_work() {
        let before = process_cpu_time(0).unwrap();
        let own = process_cpu_time(std::process::id()).unwrap();
        assert!(own >= before);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu_time(0).unwrap();
        assert!(after > before, "{before:?} -> {after:?}");
    }
}
