//! One directed inter-region link: delay, jitter, random loss and a rate limit with a
//! bounded tail-drop queue. Sans-IO: the caller passes `now` and the randomness.

use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Impairments of one directed link. All zero means a transparent link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkParams {
    /// One-way propagation delay, milliseconds.
    pub delay_ms: f64,
    /// Jitter: each packet's delay is `delay_ms` plus a uniform value in
    /// `[-jitter_ms, +jitter_ms]`, never below zero.
    pub jitter_ms: f64,
    /// Probability in `[0, 1]` that a packet is dropped.
    pub loss: f64,
    /// Rate limit in kilobits per second (1000 bits); 0 means unlimited.
    pub rate_kbps: f64,
    /// Bytes the rate limiter may hold unsent (including the packet being serialised); a
    /// packet that would exceed this is tail-dropped. A packet offered to an idle link is
    /// always accepted.
    pub queue_bytes: usize,
    /// Let jitter reorder packets. When false (the default) a packet is never delivered
    /// before the one that entered the link before it.
    pub reorder: bool,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            delay_ms: 0.0,
            jitter_ms: 0.0,
            loss: 0.0,
            rate_kbps: 0.0,
            queue_bytes: 256 * 1024,
            reorder: false,
        }
    }
}

impl LinkParams {
    /// Checks the values are in range (finite, non-negative, loss at most 1).
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("delay_ms", self.delay_ms),
            ("jitter_ms", self.jitter_ms),
            ("loss", self.loss),
            ("rate_kbps", self.rate_kbps),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        if self.loss > 1.0 {
            return Err(format!("loss must be at most 1, got {}", self.loss));
        }
        Ok(())
    }
}

/// What happens to a packet offered to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the packet on at this time.
    DeliverAt(Instant),
    /// Dropped by random loss.
    DropLoss,
    /// Dropped because the rate limiter's queue was full.
    DropQueue,
}

/// Counters of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Packets offered to the link.
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Packets accepted for delivery.
    pub packets_out: u64,
    pub bytes_out: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
}

/// A directed link's state.
#[derive(Debug, Clone)]
pub struct Link {
    params: LinkParams,
    /// When the rate limiter finishes sending what it has accepted.
    busy_until: Option<Instant>,
    /// Latest delivery time handed out, to keep order when reordering is off.
    last_delivery: Option<Instant>,
    pub stats: LinkStats,
}

impl Link {
    pub fn new(params: LinkParams) -> Self {
        Link {
            params,
            busy_until: None,
            last_delivery: None,
            stats: LinkStats::default(),
        }
    }

    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// Changes the impairments; packets already accepted keep their delivery times.
    pub fn set_params(&mut self, params: LinkParams) {
        self.params = params;
    }

    /// Decides the fate of a packet of `len` bytes entering the link at `now`.
    pub fn on_packet<R: Rng + ?Sized>(&mut self, now: Instant, len: usize, rng: &mut R) -> Verdict {
        let p = self.params;
        self.stats.packets_in += 1;
        self.stats.bytes_in += len as u64;
        if p.loss > 0.0 && rng.random::<f64>() < p.loss {
            self.stats.dropped_loss += 1;
            return Verdict::DropLoss;
        }
        let mut t = now;
        if p.rate_kbps > 0.0 {
            let bytes_per_sec = p.rate_kbps * 1000.0 / 8.0;
            let start = match self.busy_until {
                Some(b) if b > now => b,
                _ => now,
            };
            let backlog = (start - now).as_secs_f64() * bytes_per_sec;
            if backlog + len as f64 > p.queue_bytes as f64 + 0.5 && start > now {
                self.stats.dropped_queue += 1;
                return Verdict::DropQueue;
            }
            let done = start + Duration::from_secs_f64(len as f64 / bytes_per_sec);
            self.busy_until = Some(done);
            t = done;
        }
        let mut delay = p.delay_ms;
        if p.jitter_ms > 0.0 {
            delay += rng.random_range(-p.jitter_ms..=p.jitter_ms);
        }
        t += Duration::from_secs_f64(delay.max(0.0) / 1000.0);
        if !p.reorder {
            if let Some(last) = self.last_delivery {
                t = t.max(last);
            }
        }
        if self.last_delivery.is_none_or(|last| t > last) {
            self.last_delivery = Some(t);
        }
        self.stats.packets_out += 1;
        self.stats.bytes_out += len as u64;
        Verdict::DeliverAt(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    #[test]
    fn transparent_link_delivers_now() {
        let mut l = Link::new(LinkParams::default());
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(l.on_packet(now, 100, &mut rng), Verdict::DeliverAt(now));
    }

    #[test]
    fn fixed_delay() {
        let mut l = Link::new(LinkParams {
            delay_ms: 40.0,
            ..Default::default()
        });
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        for i in 0..10 {
            let t = now + ms(i as f64);
            assert_eq!(
                l.on_packet(t, 1200, &mut rng),
                Verdict::DeliverAt(t + ms(40.0))
            );
        }
    }

    #[test]
    fn jitter_stays_in_bounds_and_keeps_order() {
        let mut l = Link::new(LinkParams {
            delay_ms: 50.0,
            jitter_ms: 10.0,
            ..Default::default()
        });
        let base = Instant::now();
        let mut rng = StdRng::seed_from_u64(7);
        let mut last = base;
        let (mut lo, mut hi) = (f64::MAX, 0.0f64);
        for i in 0..10_000 {
            let now = base + ms(i as f64 * 5.0);
            let Verdict::DeliverAt(t) = l.on_packet(now, 100, &mut rng) else {
                panic!("dropped")
            };
            assert!(t >= last, "reordered at {i}");
            last = t;
            let d = (t - now).as_secs_f64() * 1000.0;
            lo = lo.min(d);
            hi = hi.max(d);
            // Sent every 5 ms with at most 20 ms spread: ordering can hold a packet back
            // by at most the spread, never beyond the upper bound.
            assert!((40.0 - 1e-6..=60.0 + 1e-6).contains(&d), "delay {d}");
        }
        assert!(lo < 41.0 && hi > 59.0, "jitter spread {lo}..{hi}");
    }

    #[test]
    fn reorder_allows_overtaking() {
        let mut l = Link::new(LinkParams {
            delay_ms: 50.0,
            jitter_ms: 20.0,
            reorder: true,
            ..Default::default()
        });
        let base = Instant::now();
        let mut rng = StdRng::seed_from_u64(3);
        let mut times = Vec::new();
        for i in 0..1000 {
            if let Verdict::DeliverAt(t) = l.on_packet(base + ms(i as f64), 100, &mut rng) {
                times.push(t);
            }
        }
        assert!(times.windows(2).any(|w| w[1] < w[0]));
    }

    #[test]
    fn loss_rate_is_within_tolerance() {
        let mut l = Link::new(LinkParams {
            loss: 0.2,
            ..Default::default()
        });
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(42);
        let n = 100_000;
        for _ in 0..n {
            l.on_packet(now, 100, &mut rng);
        }
        let rate = l.stats.dropped_loss as f64 / n as f64;
        // Standard deviation is about 0.00126; allow five of them.
        assert!((rate - 0.2).abs() < 0.0065, "loss rate {rate}");
        assert_eq!(l.stats.packets_out + l.stats.dropped_loss, n);
    }

    #[test]
    fn same_seed_same_drops() {
        let run = || {
            let mut l = Link::new(LinkParams {
                loss: 0.3,
                ..Default::default()
            });
            let mut rng = StdRng::seed_from_u64(9);
            let now = Instant::now();
            (0..1000)
                .map(|_| l.on_packet(now, 1, &mut rng) == Verdict::DropLoss)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn rate_limit_paces_and_tail_drops() {
        // 8000 kbit/s = 1 MB/s; 1000-byte packets take 1 ms each.
        let mut l = Link::new(LinkParams {
            rate_kbps: 8000.0,
            queue_bytes: 10_000,
            ..Default::default()
        });
        let base = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        // A burst of 20 at once: ten packets' worth of unsent bytes fit the queue.
        let mut delivered = Vec::new();
        for _ in 0..20 {
            if let Verdict::DeliverAt(t) = l.on_packet(base, 1000, &mut rng) {
                delivered.push(t);
            }
        }
        assert_eq!(delivered.len(), 10);
        assert_eq!(l.stats.dropped_queue, 10);
        for (i, t) in delivered.iter().enumerate() {
            let d = (*t - base).as_secs_f64() * 1000.0;
            assert!((d - (i + 1) as f64).abs() < 1e-3, "packet {i} at {d} ms");
        }
    }

    #[test]
    fn rate_limit_throughput_under_overload() {
        // Offer 2 MB/s to a 1 MB/s link for 10 s: about 10 MB get through.
        let mut l = Link::new(LinkParams {
            rate_kbps: 8000.0,
            queue_bytes: 50_000,
            delay_ms: 20.0,
            ..Default::default()
        });
        let base = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let mut last = base;
        for i in 0..20_000 {
            if let Verdict::DeliverAt(t) = l.on_packet(base + ms(i as f64 * 0.5), 1000, &mut rng) {
                last = t;
            }
        }
        let secs = (last - base).as_secs_f64() - 0.020;
        let rate = l.stats.bytes_out as f64 / secs;
        assert!((rate - 1e6).abs() < 1e4, "throughput {rate} B/s");
        assert!(l.stats.dropped_queue > 9_000);
    }

    #[test]
    fn under_rate_nothing_queues() {
        let mut l = Link::new(LinkParams {
            rate_kbps: 8000.0,
            queue_bytes: 1000,
            ..Default::default()
        });
        let base = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        for i in 0..1000 {
            let now = base + ms(i as f64 * 2.0);
            assert_eq!(
                l.on_packet(now, 1000, &mut rng),
                Verdict::DeliverAt(now + ms(1.0))
            );
        }
    }

    #[test]
    fn validate_rejects_bad_values() {
        assert!(LinkParams::default().validate().is_ok());
        let bad = |f: fn(&mut LinkParams)| {
            let mut p = LinkParams::default();
            f(&mut p);
            p.validate().is_err()
        };
        assert!(bad(|p| p.loss = 1.5));
        assert!(bad(|p| p.delay_ms = -1.0));
        assert!(bad(|p| p.rate_kbps = f64::NAN));
    }
}
