//! Rates over a sliding window, from periodic samples of a monotonic counter (bytes or packets
//! of a pipe link). Sans-IO: the caller passes `now`; [`crate::pipe::endpoint`] samples every
//! link every [`PIPE_RATE_SAMPLE_INTERVAL`] and reads the window on demand, so an operator's
//! one-off request sees the last few seconds rather than the time since some earlier request.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::timing::{PIPE_RATE_SAMPLE_INTERVAL, PIPE_RATE_WINDOW};

/// Samples kept at most: a window's worth at the sampling interval, plus slack for late ticks.
const MAX_SAMPLES: usize = 8;
const _: () = assert!(
    PIPE_RATE_WINDOW.as_millis() / PIPE_RATE_SAMPLE_INTERVAL.as_millis() + 2 <= MAX_SAMPLES as u128
);

/// The last [`PIPE_RATE_WINDOW`] of samples of one counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    width: Duration,
    /// (when, counter value), oldest first; at most [`MAX_SAMPLES`].
    samples: VecDeque<(Instant, u64)>,
}

impl Default for Window {
    fn default() -> Self {
        Self::new(PIPE_RATE_WINDOW)
    }
}

impl Window {
    /// An empty window of this width.
    pub fn new(width: Duration) -> Self {
        Self {
            width,
            samples: VecDeque::with_capacity(MAX_SAMPLES),
        }
    }

    /// Records that the counter reads `total` at `now`. A counter that went backwards (reset)
    /// or a sample older than the last one starts the window again.
    pub fn sample(&mut self, now: Instant, total: u64) {
        if let Some(&(t, v)) = self.samples.back() {
            if total < v || now < t {
                self.samples.clear();
            }
        }
        self.samples.push_back((now, total));
        // Keep the newest sample at least one window old, so the window spans its full width.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|&(t, _)| now.saturating_duration_since(t) >= self.width)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// How much the counter grew across the window, and over how long; `None` before two
    /// samples.
    pub fn delta(&self) -> Option<(u64, Duration)> {
        let (&(t0, v0), &(t1, v1)) = (self.samples.front()?, self.samples.back()?);
        let span = t1.saturating_duration_since(t0);
        (!span.is_zero()).then(|| (v1.saturating_sub(v0), span))
    }

    /// Growth per second across the window (0 before two samples).
    pub fn per_second(&self) -> u64 {
        self.delta().map_or(0, |(d, span)| {
            let per_s = u128::from(d) * 1_000_000 / span.as_micros().max(1);
            u64::try_from(per_s).unwrap_or(u64::MAX)
        })
    }
}

/// Fraction of `sent` lost, in percent, from the growth of both counters across their windows
/// (sampled together); 0 when nothing was sent.
pub fn loss_percent(lost: &Window, sent: &Window) -> f64 {
    match (lost.delta(), sent.delta()) {
        (Some((l, _)), Some((s, _))) if s > 0 => (l as f64 * 100.0 / s as f64).min(100.0),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn empty_and_single_sample_have_no_rate() {
        let t0 = Instant::now();
        let mut w = Window::new(5 * S);
        assert_eq!(w.delta(), None);
        assert_eq!(w.per_second(), 0);
        w.sample(t0, 1_000);
        assert_eq!(w.delta(), None);
        assert_eq!(w.per_second(), 0);
        // Two samples at the same instant: no span, no rate.
        w.sample(t0, 2_000);
        assert_eq!(w.per_second(), 0);
    }

    #[test]
    fn steady_counter_gives_its_rate() {
        let t0 = Instant::now();
        let mut w = Window::new(5 * S);
        for i in 0..20u32 {
            w.sample(t0 + i * S, u64::from(i) * 125_000);
        }
        assert_eq!(w.per_second(), 125_000);
        let (d, span) = w.delta().expect("two samples");
        assert_eq!(span, 5 * S, "the window spans its width");
        assert_eq!(d, 625_000);
        assert!(w.samples.len() <= MAX_SAMPLES);
    }

    #[test]
    fn old_traffic_leaves_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(5 * S);
        // 10 s at 1000/s, then the counter stops.
        for i in 0..=10u32 {
            w.sample(t0 + i * S, u64::from(i) * 1_000);
        }
        assert_eq!(w.per_second(), 1_000);
        for i in 11..=13u32 {
            w.sample(t0 + i * S, 10_000);
        }
        // 3 idle seconds of the 5: 2000 over 5 s.
        assert_eq!(w.per_second(), 400);
        for i in 14..=20u32 {
            w.sample(t0 + i * S, 10_000);
        }
        assert_eq!(w.per_second(), 0);
    }

    #[test]
    fn late_and_irregular_samples_keep_the_span_honest() {
        let t0 = Instant::now();
        let mut w = Window::new(5 * S);
        w.sample(t0, 0);
        // A tick 3.5 s late.
        w.sample(t0 + Duration::from_millis(4_500), 9_000);
        assert_eq!(w.per_second(), 2_000);
        w.sample(t0 + Duration::from_millis(5_000), 10_000);
        assert_eq!(w.per_second(), 2_000);
    }

    #[test]
    fn reset_or_backwards_time_restarts_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(5 * S);
        w.sample(t0, 5_000);
        w.sample(t0 + S, 6_000);
        w.sample(t0 + 2 * S, 10);
        assert_eq!(w.delta(), None, "a counter that went back starts over");
        w.sample(t0 + 3 * S, 1_010);
        assert_eq!(w.per_second(), 1_000);
        w.sample(t0 + S, 2_000);
        assert_eq!(w.delta(), None, "time that went back starts over");
    }

    #[test]
    fn huge_counters_do_not_overflow() {
        let t0 = Instant::now();
        let mut w = Window::new(5 * S);
        w.sample(t0, 0);
        w.sample(t0 + Duration::from_micros(1), u64::MAX);
        assert_eq!(w.per_second(), u64::MAX);
    }

    #[test]
    fn loss_is_lost_over_sent_in_the_window() {
        let t0 = Instant::now();
        let (mut lost, mut sent) = (Window::new(5 * S), Window::new(5 * S));
        assert_eq!(loss_percent(&lost, &sent), 0.0);
        for i in 0..10u32 {
            // 1000 packets a second; 10 lost a second until 4 s, none since: out of the window.
            sent.sample(t0 + i * S, u64::from(i) * 1_000);
            lost.sample(t0 + i * S, u64::from(i.min(4)) * 10);
        }
        assert_eq!(loss_percent(&lost, &sent), 0.0);
        let (mut lost, mut sent) = (Window::new(5 * S), Window::new(5 * S));
        for i in 0..10u32 {
            sent.sample(t0 + i * S, u64::from(i) * 1_000);
            lost.sample(t0 + i * S, u64::from(i) * 20);
        }
        assert!((loss_percent(&lost, &sent) - 2.0).abs() < 1e-9);
        // Nothing sent in the window: no loss figure to speak of.
        let (mut lost, mut sent) = (Window::new(5 * S), Window::new(5 * S));
        for i in 0..3u32 {
            sent.sample(t0 + i * S, 7);
            lost.sample(t0 + i * S, 1);
        }
        assert_eq!(loss_percent(&lost, &sent), 0.0);
    }
}
