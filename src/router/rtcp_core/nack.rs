//! NACK generation for streams received from publishers (mediasoup's NackGenerator semantics):
//! gap detection on received sequence numbers, a bounded list of missing packets, per-packet
//! retry counting and RTT-paced resends. Produces sequence numbers only; the caller packs them
//! with [`super::write_nack`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::SeqUnwrapper;

/// Tunables of a [`NackGenerator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackConfig {
    /// Most packets kept in the missing list; a larger gap clears it and asks for a keyframe.
    pub max_missing: usize,
    /// NACKs sent for one packet before giving up on it.
    pub max_retries: u8,
    /// Resend interval when no RTT is known.
    pub default_rtt: Duration,
    /// Missing packets further than this behind the newest one are dropped.
    pub max_packet_age: u64,
}

impl Default for NackConfig {
    fn default() -> Self {
        Self {
            max_missing: 1000,
            max_retries: 10,
            default_rtt: Duration::from_millis(100),
            max_packet_age: 10_000,
        }
    }
}

/// What [`NackGenerator::on_packet`] learned from one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NackOutcome {
    /// The packet was in the missing list (it arrived late or was retransmitted).
    pub recovered: bool,
    /// Too many packets are missing to repair: the list was cleared and the caller should
    /// request a keyframe from the publisher.
    pub request_keyframe: bool,
    /// Newly detected missing packets.
    pub new_missing: u64,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    ext: u64,
    retries: u8,
    /// When the packet was detected missing (never NACKed) or last NACKed.
    last: Instant,
    nacked: bool,
}

/// Tracks missing packets of one incoming stream and decides when to NACK them.
#[derive(Debug, Clone)]
pub struct NackGenerator {
    cfg: NackConfig,
    unwrapper: SeqUnwrapper,
    /// Missing packets, ascending by extended sequence number.
    missing: VecDeque<Missing>,
}

impl Default for NackGenerator {
    fn default() -> Self {
        Self::new(NackConfig::default())
    }
}

impl NackGenerator {
    /// A generator with the given tunables (the missing list is allocated once, here).
    pub fn new(cfg: NackConfig) -> Self {
        Self {
            cfg,
            unwrapper: SeqUnwrapper::new(),
            missing: VecDeque::with_capacity(cfg.max_missing),
        }
    }

    /// Records a received packet (original or retransmitted, after RTX unwrapping).
    pub fn on_packet(&mut self, now: Instant, seq: u16) -> NackOutcome {
        let mut outcome = NackOutcome::default();
        let Some(last) = self.unwrapper.highest() else {
            self.unwrapper.unwrap(seq);
            return outcome;
        };
        let ext = self.unwrapper.unwrap(seq);
        if ext == last {
            return outcome; // duplicate
        }
        if ext < last {
            if let Ok(i) = self.missing.binary_search_by_key(&ext, |m| m.ext) {
                self.missing.remove(i);
                outcome.recovered = true;
            }
            return outcome;
        }
        // Forget packets too old to be useful any more.
        let oldest = ext.saturating_sub(self.cfg.max_packet_age);
        while self.missing.front().is_some_and(|m| m.ext < oldest) {
            self.missing.pop_front();
        }
        let gap = ext - last - 1;
        if gap == 0 {
            return outcome;
        }
        if self.missing.len() as u64 + gap > self.cfg.max_missing as u64 {
            self.missing.clear();
            outcome.request_keyframe = true;
            return outcome;
        }
        for e in last + 1..ext {
            self.missing.push_back(Missing {
                ext: e,
                retries: 0,
                last: now,
                nacked: false,
            });
        }
        outcome.new_missing = gap;
        outcome
    }

    /// Appends to `out` the sequence numbers to NACK at `now`, ascending: packets never NACKed,
    /// and packets last NACKed at least one RTT ago (`rtt` from reports;
    /// [`NackConfig::default_rtt`] when unknown or zero). Packets NACKed `max_retries` times are given up. Does not allocate beyond
    /// `out`'s growth. Large outputs should be split over several NACK packets by the caller.
    pub fn poll_nacks(&mut self, now: Instant, rtt: Option<Duration>, out: &mut Vec<u16>) {
        let interval = self.interval(rtt);
        let max_retries = self.cfg.max_retries;
        self.missing.retain_mut(|m| {
            if m.nacked && now.saturating_duration_since(m.last) < interval {
                return true;
            }
            out.push(m.ext as u16);
            m.retries = m.retries.saturating_add(1);
            m.last = now;
            m.nacked = true;
            m.retries < max_retries
        });
    }

    fn interval(&self, rtt: Option<Duration>) -> Duration {
        rtt.filter(|r| !r.is_zero()).unwrap_or(self.cfg.default_rtt)
    }

    /// The earliest time a NACK is due with the given RTT, if any packet is missing.
    pub fn poll_timeout(&self, rtt: Option<Duration>) -> Option<Instant> {
        let interval = self.interval(rtt);
        self.missing
            .iter()
            .map(|m| if m.nacked { m.last + interval } else { m.last })
            .min()
    }

    /// Number of packets currently considered missing.
    pub fn missing_len(&self) -> usize {
        self.missing.len()
    }

    /// Forgets everything (e.g. after the publisher's stream restarted).
    pub fn reset(&mut self) {
        self.unwrapper = SeqUnwrapper::new();
        self.missing.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn nacks(g: &mut NackGenerator, now: Instant, rtt: Option<Duration>) -> Vec<u16> {
        let mut v = Vec::new();
        g.poll_nacks(now, rtt, &mut v);
        v
    }

    #[test]
    fn gap_is_nacked_at_once_and_recovery_removes() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        assert_eq!(g.poll_timeout(None), None);
        g.on_packet(t0, 10);
        let o = g.on_packet(t0, 14);
        assert_eq!(o.new_missing, 3);
        assert_eq!(g.poll_timeout(None), Some(t0));
        assert_eq!(nacks(&mut g, t0, None), vec![11, 12, 13]);
        assert!(nacks(&mut g, t0 + MS * 99, None).is_empty());
        assert_eq!(g.poll_timeout(None), Some(t0 + MS * 100));
        assert!(g.on_packet(t0, 12).recovered);
        assert!(!g.on_packet(t0, 12).recovered); // duplicate of a recovered packet
        assert_eq!(nacks(&mut g, t0 + MS * 100, None), vec![11, 13]);
        // A known RTT paces resends.
        assert_eq!(nacks(&mut g, t0 + MS * 130, Some(MS * 30)), vec![11, 13]);
        assert!(nacks(&mut g, t0 + MS * 150, Some(MS * 30)).is_empty());
    }

    #[test]
    fn wraparound_gap() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        g.on_packet(t0, 65533);
        g.on_packet(t0, 2);
        assert_eq!(nacks(&mut g, t0, None), vec![65534, 65535, 0, 1]);
        assert!(g.on_packet(t0, 0).recovered);
        assert_eq!(g.missing_len(), 3);
    }

    #[test]
    fn reordering_and_duplicates_do_not_add_gaps() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        for s in [1u16, 2, 2, 3, 1, 4] {
            assert_eq!(g.on_packet(t0, s).new_missing, 0);
        }
        assert_eq!(g.missing_len(), 0);
    }

    #[test]
    fn retries_are_bounded() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        g.on_packet(t0, 0);
        g.on_packet(t0, 2);
        let mut sent = 0;
        for i in 0..50u32 {
            sent += nacks(&mut g, t0 + MS * 100 * i, None).len();
        }
        assert_eq!(sent, 10);
        assert_eq!(g.missing_len(), 0);
        assert_eq!(g.poll_timeout(None), None);
    }

    #[test]
    fn overflow_clears_and_requests_keyframe() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        g.on_packet(t0, 0);
        assert!(!g.on_packet(t0, 901).request_keyframe);
        assert_eq!(g.missing_len(), 900);
        // 200 more missing would exceed 1000.
        let o = g.on_packet(t0, 1102);
        assert!(o.request_keyframe);
        assert_eq!(g.missing_len(), 0);
        // A huge jump (or a stream restart) does the same.
        assert!(g.on_packet(t0, 1102 + 20_000).request_keyframe);
        assert_eq!(g.missing_len(), 0);
        // Afterwards gaps are tracked from the new position.
        g.on_packet(t0, 1102 + 20_002);
        assert_eq!(nacks(&mut g, t0, None), vec![1102 + 20_001]);
    }

    #[test]
    fn old_entries_age_out() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(NackConfig {
            max_packet_age: 100,
            ..NackConfig::default()
        });
        g.on_packet(t0, 0);
        g.on_packet(t0, 5); // 1..=4 missing
        for s in 6..=104u16 {
            g.on_packet(t0, s);
        }
        // 104 - 100 = 4: entries below 4 are gone.
        assert_eq!(nacks(&mut g, t0, None), vec![4]);
    }
}
