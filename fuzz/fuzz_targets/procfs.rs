//! `/proc/self` parsers of the admin API's process figures: arbitrary text into the stat and
//! status parsers (nothing may panic), stat lines built around an arbitrary command name with
//! chosen CPU times (which must be read back exactly), and the CPU meter fed the results
//! (its percentage, when known, is finite and not negative).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pipemesh::procfs::{stat_cpu_ticks, status_rss_bytes, CpuMeter};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let raw = stat_cpu_ticks(&text);
    let _ = status_rss_bytes(&text);

    // A well-formed line whose command name is the input: utime and stime come back summed.
    let word = |i: usize| {
        let mut b = [0u8; 8];
        for (j, slot) in b.iter_mut().enumerate() {
            *slot = data.get(i * 8 + j).copied().unwrap_or(0);
        }
        u64::from_le_bytes(b)
    };
    let (utime, stime) = (word(0), word(1));
    let line =
        format!("4242 ({text}) S 1 4242 4242 0 -1 4194304 9 0 0 0 {utime} {stime} 0 0 20 0 9 0");
    assert_eq!(stat_cpu_ticks(&line), utime.checked_add(stime), "{line:?}");

    let mut meter = CpuMeter::new();
    let t0 = Instant::now();
    let samples = [raw, Some(utime), Some(stime), utime.checked_add(stime)];
    for (i, ticks) in samples.into_iter().enumerate() {
        if let Some(t) = ticks {
            meter.sample(
                t0 + Duration::from_millis(
                    i as u64 * u64::from(data.first().copied().unwrap_or(1)),
                ),
                t,
            );
        }
        if let Some(p) = meter.percent() {
            assert!(p.is_finite() && p >= 0.0, "{p}");
        }
    }
});
