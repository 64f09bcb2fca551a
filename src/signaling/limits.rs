//! Per-peer limits (sans-IO): how much one signaling session may allocate and how fast it may
//! ask. The worker enforces the allocation limits where transports, producers and consumers
//! are made; the signaling glue enforces message size and request rate before a request
//! reaches the worker.

use std::time::{Duration, Instant};

/// Limits applied to every peer. Defaults suit mediasoup-demo clients (two transports, a
/// camera with three simulcast layers, a microphone, a screen share) with room to spare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLimits {
    /// WebRtcTransports open at once (mediasoup-demo uses two: send and receive).
    pub max_transports: usize,
    /// Producers open at once.
    pub max_producers: usize,
    /// Consumers open at once. Past it, further producers are not offered to the peer
    /// (no `newConsumer`): consumers are created by the server, so there is no request to
    /// refuse.
    pub max_consumers: usize,
    /// Largest signaling message, in bytes; a larger one closes the connection (WebSocket
    /// close code 1009 with the reason).
    pub max_message_bytes: usize,
    /// Sustained signaling requests per second.
    pub requests_per_sec: u32,
    /// Requests allowed in a burst above the sustained rate.
    pub request_burst: u32,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            max_transports: 4,
            max_producers: 16,
            max_consumers: 500,
            max_message_bytes: 64 * 1024,
            requests_per_sec: 50,
            request_burst: 100,
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `rate` per second. One request takes one.
/// Counts in millionths of a token so that refills are exact.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    micros: u64,
    last: Instant,
}

const UNIT: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(now: Instant, rate: u32, burst: u32) -> Self {
        let burst = u64::from(burst.max(1)) * UNIT;
        Self {
            rate: u64::from(rate),
            burst,
            micros: burst,
            last: now,
        }
    }

    /// Takes a token if one is left at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        // nanoseconds * tokens/s / 1000 = millionths of a token.
        let refill = elapsed.saturating_mul(u128::from(self.rate)) / 1000;
        let refill = u64::try_from(refill).unwrap_or(u64::MAX);
        self.micros = self.micros.saturating_add(refill).min(self.burst);
        if self.micros >= UNIT {
            self.micros -= UNIT;
            true
        } else {
            false
        }
    }

    /// How long until the next token (zero when one is available or never refilled).
    pub fn wait(&self) -> Duration {
        if self.micros >= UNIT || self.rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((UNIT - self.micros) * 1000 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 10, 5);
        assert!((0..5).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert_eq!(b.wait(), Duration::from_millis(100));
        assert!(!b.try_take(t0 + Duration::from_millis(99)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        // A long pause refills no more than the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 5);
        // Time going backwards (never with Instant, but cheap to guard) takes nothing extra.
        assert!(!b.try_take(t0));
    }

    #[test]
    fn a_zero_rate_bucket_never_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 0, 2);
        assert!(b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_secs(3600)));
    }
}
