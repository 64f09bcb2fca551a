//! Reception statistics of one incoming RTP stream (RFC 3550 A.1, A.3, A.8) and the
//! mediasoup-like 0..=10 stream score derived from them.

use std::time::{Duration, Instant};

use super::{duration_to_q16, ReportBlock};

/// RFC 3550 A.1: a jump larger than this is treated as a possible restart of the source.
const MAX_DROPOUT: u16 = 3000;
/// Packets this far behind the highest sequence number count as reordered or duplicated
/// (mediasoup's value; RFC 3550 suggests 100).
const MAX_MISORDER: u16 = 1500;
/// RFC 3550 A.1: sequential packets required before a source is valid.
const MIN_SEQUENTIAL: u32 = 2;
/// Largest positive and negative values of the signed 24-bit cumulative loss field.
const MAX_TOTAL_LOST: i64 = 0x7f_ffff;
const MIN_TOTAL_LOST: i64 = -0x80_0000;

/// Number of buckets and bucket width of the sliding bitrate window (one second in total).
const RATE_BUCKETS: usize = 10;
const RATE_BUCKET_WIDTH: Duration = Duration::from_millis(100);

/// A fixed-size sliding window of byte counts, used for bitrates. Never allocates.
#[derive(Debug, Clone)]
pub struct RateWindow {
    buckets: [u64; RATE_BUCKETS],
    /// Index (in bucket widths since `origin`) of the newest bucket.
    newest: u64,
    origin: Option<Instant>,
}

impl Default for RateWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl RateWindow {
    /// An empty window of one second.
    pub fn new() -> Self {
        Self {
            buckets: [0; RATE_BUCKETS],
            newest: 0,
            origin: None,
        }
    }

    fn bucket_index(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let idx = now.saturating_duration_since(origin).as_nanos() / RATE_BUCKET_WIDTH.as_nanos();
        u64::try_from(idx).unwrap_or(u64::MAX)
    }

    fn advance(&mut self, idx: u64) {
        if idx <= self.newest {
            return;
        }
        let steps = (idx - self.newest).min(RATE_BUCKETS as u64);
        for i in 1..=steps {
            self.buckets[((self.newest + i) % RATE_BUCKETS as u64) as usize] = 0;
        }
        self.newest = idx;
    }

    /// Adds `bytes` at `now`. Times earlier than the newest bucket count into the newest one.
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let idx = self.bucket_index(now);
        self.advance(idx);
        let slot = &mut self.buckets[(self.newest % RATE_BUCKETS as u64) as usize];
        *slot = slot.saturating_add(bytes as u64);
    }

    /// Bits per second over the last second ending at `now`.
    pub fn bitrate_bps(&mut self, now: Instant) -> u64 {
        if self.origin.is_none() {
            return 0;
        }
        let idx = self.bucket_index(now);
        self.advance(idx);
        let bytes = self.buckets.iter().fold(0u64, |a, b| a.saturating_add(*b));
        let window_ms = RATE_BUCKET_WIDTH.as_millis() as u64 * RATE_BUCKETS as u64;
        bytes.saturating_mul(8 * 1000) / window_ms
    }
}

/// How [`ReceiveStats::on_packet`] classified a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// The packet was counted (in order, or an acceptable reorder/duplicate).
    Valid,
    /// The source is still on probation (RFC 3550 A.1); the packet was not counted.
    Probation,
    /// A large jump that is not yet confirmed by a following sequential packet.
    BadSequence,
    /// A large jump was confirmed: the stream restarted and statistics were reset.
    Restarted,
}

/// Weighted history of scores, newest weighted highest (mediasoup-like).
#[derive(Debug, Clone, Default)]
pub struct ScoreHistory {
    samples: [u8; 8],
    len: usize,
    next: usize,
}

impl ScoreHistory {
    /// Score from a loss ratio: `round(delivered^4 * 10)`, so that moderate loss is already
    /// punished clearly (1% -> 10, 5% -> 8, 10% -> 7, 20% -> 4).
    pub fn score_for_loss(lost: u64, expected: u64) -> u8 {
        if expected == 0 {
            return 10;
        }
        let delivered = 1.0 - (lost.min(expected) as f64 / expected as f64);
        (delivered.powi(4) * 10.0).round().clamp(0.0, 10.0) as u8
    }

    /// Adds one sample and returns the new weighted average.
    pub fn push(&mut self, sample: u8) -> u8 {
        self.samples[self.next] = sample.min(10);
        self.next = (self.next + 1) % self.samples.len();
        self.len = (self.len + 1).min(self.samples.len());
        self.current().unwrap_or(10)
    }

    /// Weighted average of the samples, or `None` without samples.
    pub fn current(&self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let n = self.samples.len();
        let (mut sum, mut weights) = (0u32, 0u32);
        for age in 0..self.len {
            let idx = (self.next + n - 1 - age) % n;
            let w = (self.len - age) as u32;
            sum += u32::from(self.samples[idx]) * w;
            weights += w;
        }
        Some(((sum as f64) / (weights as f64)).round() as u8)
    }
}

/// Statistics of one incoming RTP stream (one SSRC).
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    /// Whether a first packet arrived.
    started: bool,
    max_seq: u16,
    /// Shifted count of sequence number wraps (multiples of 65536).
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Relative transit time of the previous packet, in RTP units (wrapping).
    transit: Option<u32>,
    /// Interarrival jitter scaled by 16 (RFC 3550 A.8 integer version).
    jitter_q4: u64,
    /// Time origin for converting arrival times to RTP units.
    epoch: Option<Instant>,
    octets: u64,
    rate: RateWindow,
    /// Middle 32 bits of the NTP time of the last SR and when it arrived.
    last_sr: Option<(u32, Instant)>,
    last_fraction_lost: u8,
    score: ScoreHistory,
}

impl Default for ReceiveStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ReceiveStats {
    /// Fresh statistics; the stream starts on probation.
    pub fn new() -> Self {
        Self {
            started: false,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: 0,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
            epoch: None,
            octets: 0,
            rate: RateWindow::new(),
            last_sr: None,
            last_fraction_lost: 0,
            score: ScoreHistory::default(),
        }
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = (1 << 16) + 1; // cannot equal any 16-bit value
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// Records one received packet: RTP sequence number and timestamp, the clock rate of its
    /// codec and its size in bytes (used for the bitrate). Retransmissions (RTX) should not be
    /// fed here, they would distort jitter.
    pub fn on_packet(
        &mut self,
        now: Instant,
        seq: u16,
        rtp_timestamp: u32,
        clock_rate: u32,
        bytes: usize,
    ) -> SeqOutcome {
        self.rate.add(now, bytes);
        self.octets = self.octets.saturating_add(bytes as u64);
        if !self.started {
            self.started = true;
            self.init_seq(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
        }
        let outcome = self.update_seq(seq);
        let advanced =
            matches!(outcome, SeqOutcome::Valid | SeqOutcome::Restarted) && seq == self.max_seq;
        if advanced {
            self.update_jitter(now, rtp_timestamp, clock_rate);
        }
        outcome
    }

    /// RFC 3550 A.1 `update_seq`.
    fn update_seq(&mut self, seq: u16) -> SeqOutcome {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return SeqOutcome::Valid;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqOutcome::Probation;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a jump: the source restarted.
                self.init_seq(seq);
                self.transit = None;
                self.received += 1;
                return SeqOutcome::Restarted;
            }
            self.bad_seq = u32::from(seq.wrapping_add(1));
            return SeqOutcome::BadSequence;
        }
        // else: duplicate or reordered packet, counted.
        self.received += 1;
        SeqOutcome::Valid
    }

    /// RFC 3550 A.8, only for packets that advanced the highest sequence number.
    fn update_jitter(&mut self, now: Instant, rtp_timestamp: u32, clock_rate: u32) {
        if clock_rate == 0 {
            return;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let elapsed = now.saturating_duration_since(epoch);
        let arrival = (elapsed.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u32;
        let transit = arrival.wrapping_sub(rtp_timestamp);
        if let Some(prev) = self.transit {
            let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            // jitter += (|d| - jitter) / 16, kept scaled by 16; |d| < 2^31 bounds it below
            // 2^35, so u64 cannot overflow whatever the timestamps.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Records the arrival of a Sender Report for this stream (`ntp_middle_32` is the middle
    /// of its NTP timestamp, see [`super::ntp_middle_32`]).
    pub fn on_sender_report(&mut self, now: Instant, ntp_middle_32: u32) {
        self.last_sr = Some((ntp_middle_32, now));
    }

    /// Extended highest sequence number received (cycles << 16 | max seq).
    pub fn extended_highest_seq(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Whether the source passed probation.
    pub fn is_valid(&self) -> bool {
        self.started && self.probation == 0
    }

    /// Packets counted as received (duplicates included, as in RFC 3550).
    pub fn packets_received(&self) -> u64 {
        self.received
    }

    /// Packets expected from the base to the extended highest sequence number.
    pub fn packets_expected(&self) -> u64 {
        if !self.is_valid() {
            return 0;
        }
        (u64::from(self.cycles) + u64::from(self.max_seq) + 1)
            .saturating_sub(u64::from(self.base_seq))
    }

    /// Cumulative packets lost, clamped to the signed 24-bit range of the report field.
    pub fn packets_lost(&self) -> i32 {
        let lost = self.packets_expected() as i64 - self.received as i64;
        lost.clamp(MIN_TOTAL_LOST, MAX_TOTAL_LOST) as i32
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// Bytes received in total.
    pub fn octets_received(&self) -> u64 {
        self.octets
    }

    /// Received bitrate over the last second, bits per second.
    pub fn bitrate_bps(&mut self, now: Instant) -> u64 {
        self.rate.bitrate_bps(now)
    }

    /// Fraction lost (0..=255 out of 256) computed by the last [`Self::report_block`].
    pub fn fraction_lost(&self) -> u8 {
        self.last_fraction_lost
    }

    /// Stream score 0..=10 (10 without any report interval yet).
    pub fn score(&self) -> u8 {
        self.score.current().unwrap_or(10)
    }

    /// Builds the reception report block for this stream and starts a new report interval
    /// (fraction lost and the score are computed over the interval). `None` while the source
    /// is not valid yet.
    pub fn report_block(&mut self, now: Instant, ssrc: u32) -> Option<ReportBlock> {
        if !self.is_valid() {
            return None;
        }
        let expected = self.packets_expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        self.last_fraction_lost = fraction_lost;
        if expected_interval > 0 {
            let lost = lost_interval.max(0) as u64;
            self.score
                .push(ScoreHistory::score_for_loss(lost, expected_interval));
        }
        let (last_sender_report, delay) = match self.last_sr {
            Some((lsr, at)) => (lsr, duration_to_q16(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            total_lost: self.packets_lost(),
            extended_highest_seq: self.extended_highest_seq(),
            jitter: self.jitter(),
            last_sender_report,
            delay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `seqs` 20 ms apart with timestamps matching a 90 kHz clock.
    fn feed(s: &mut ReceiveStats, t0: Instant, seqs: &[u16]) {
        for (i, &seq) in seqs.iter().enumerate() {
            s.on_packet(t0 + MS * 20 * i as u32, seq, 1800 * i as u32, 90_000, 1000);
        }
    }

    #[test]
    fn probation_then_counting_across_wrap() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        assert_eq!(
            s.on_packet(t0, 65530, 0, 90_000, 100),
            SeqOutcome::Probation
        );
        assert!(s.report_block(t0, 1).is_none());
        assert_eq!(s.on_packet(t0, 65531, 0, 90_000, 100), SeqOutcome::Valid);
        for seq in [65532u16, 65533, 65534, 65535, 0, 1, 2] {
            assert_eq!(s.on_packet(t0, seq, 0, 90_000, 100), SeqOutcome::Valid);
        }
        assert_eq!(s.extended_highest_seq(), (1 << 16) + 2);
        assert_eq!(s.packets_expected(), 8);
        assert_eq!(s.packets_lost(), 0);
        let rb = s.report_block(t0, 9).unwrap();
        assert_eq!((rb.ssrc, rb.fraction_lost, rb.total_lost), (9, 0, 0));
        assert_eq!(rb.extended_highest_seq, 65538);
    }

    #[test]
    fn probation_restarts_on_non_sequential() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        assert_eq!(s.on_packet(t0, 10, 0, 90_000, 1), SeqOutcome::Probation);
        assert_eq!(s.on_packet(t0, 50, 0, 90_000, 1), SeqOutcome::Probation);
        assert_eq!(s.on_packet(t0, 51, 0, 90_000, 1), SeqOutcome::Valid);
        assert!(s.is_valid());
    }

    #[test]
    fn loss_fraction_and_duplicates() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        // 0..=9 with 3 and 7 missing: 10 expected from base 1 (seq 0 is probation) ... base
        // is 1, max 9 -> expected 9, received 7.
        feed(&mut s, t0, &[0, 1, 2, 4, 5, 6, 8, 9]);
        assert_eq!(s.packets_expected(), 9);
        assert_eq!(s.packets_received(), 7);
        let rb = s.report_block(t0, 1).unwrap();
        assert_eq!(rb.total_lost, 2);
        assert_eq!(rb.fraction_lost, ((2 << 8) / 9) as u8);
        // Next interval: duplicates make received > expected: fraction 0, total may go down.
        feed(&mut s, t0, &[10, 10, 10, 3]);
        let rb = s.report_block(t0, 1).unwrap();
        assert_eq!(rb.fraction_lost, 0);
        assert_eq!(rb.total_lost, -1);
        // Empty interval keeps fraction 0.
        assert_eq!(s.report_block(t0, 1).unwrap().fraction_lost, 0);
    }

    #[test]
    fn total_lost_clamps_to_24_bits() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        feed(&mut s, t0, &[0, 1]);
        // Advance by 2999 at a time (below MAX_DROPOUT) without sending the packets between.
        let mut seq = 1u16;
        for _ in 0..3000 {
            seq = seq.wrapping_add(2999);
            s.on_packet(t0, seq, 0, 90_000, 1);
        }
        assert!(s.packets_expected() > 0x7f_ffff);
        assert_eq!(s.packets_lost(), 0x7f_ffff);
        assert_eq!(s.report_block(t0, 1).unwrap().fraction_lost, 255);
    }

    #[test]
    fn big_jump_needs_confirmation_then_restarts() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        feed(&mut s, t0, &[100, 101, 102]);
        assert_eq!(
            s.on_packet(t0, 30_000, 0, 90_000, 1),
            SeqOutcome::BadSequence
        );
        assert_eq!(s.extended_highest_seq(), 102);
        // Old reordered packet within MAX_MISORDER is accepted.
        assert_eq!(s.on_packet(t0, 90, 0, 90_000, 1), SeqOutcome::Valid);
        assert_eq!(
            s.on_packet(t0, 30_000, 0, 90_000, 1),
            SeqOutcome::BadSequence
        );
        assert_eq!(s.on_packet(t0, 30_001, 0, 90_000, 1), SeqOutcome::Restarted);
        assert_eq!(s.extended_highest_seq(), 30_001);
        assert_eq!(s.packets_expected(), 1);
        assert_eq!(s.packets_lost(), 0);
    }

    #[test]
    fn jitter_zero_for_perfect_pacing_and_grows_with_variation() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        let seqs: Vec<u16> = (0..50).collect();
        feed(&mut s, t0, &seqs);
        assert_eq!(s.jitter(), 0);
        // Alternate arrivals 10 ms early/late: |D| = 20 ms = 1800 ticks; jitter -> ~1800.
        let mut s = ReceiveStats::new();
        for i in 0..400u32 {
            let skew = if i % 2 == 0 { 0 } else { 20 };
            s.on_packet(t0 + MS * (40 * i + skew), i as u16, 3600 * i, 90_000, 1);
        }
        assert!((1700..=1800).contains(&s.jitter()), "{}", s.jitter());
        // Timestamp wraparound does not produce a spike.
        let mut s = ReceiveStats::new();
        for i in 0..100u32 {
            let ts = (u32::MAX - 50 * 1800).wrapping_add(1800 * i);
            s.on_packet(t0 + MS * 20 * i, i as u16, ts, 90_000, 1);
        }
        assert_eq!(s.jitter(), 0);
    }

    #[test]
    fn lsr_dlsr_and_bitrate() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        feed(&mut s, t0, &[0, 1, 2]);
        s.on_sender_report(t0, 0x1234_5678);
        let rb = s.report_block(t0 + MS * 1500, 1).unwrap();
        assert_eq!(rb.last_sender_report, 0x1234_5678);
        assert_eq!(rb.delay, 65536 * 3 / 2);
        // 50 packets of 1000 bytes in the last second: 400 kbit/s.
        let mut s = ReceiveStats::new();
        for i in 0..100u32 {
            s.on_packet(t0 + MS * 20 * i, i as u16, 0, 90_000, 1000);
        }
        let bps = s.bitrate_bps(t0 + MS * 1999);
        assert!((380_000..=420_000).contains(&bps), "{bps}");
        assert_eq!(s.bitrate_bps(t0 + MS * 5000), 0);
        assert_eq!(ReceiveStats::new().bitrate_bps(t0), 0);
    }

    #[test]
    fn score_drops_with_loss_and_recovers() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        assert_eq!(s.score(), 10);
        let mut seq = 0u16;
        for _ in 0..8 {
            // Send 4 of every 5 packets: 20% loss.
            for _ in 0..100 {
                if seq % 5 != 4 {
                    s.on_packet(t0, seq, 0, 90_000, 1);
                }
                seq = seq.wrapping_add(1);
            }
            s.report_block(t0, 1);
        }
        assert_eq!(s.score(), 4);
        for _ in 0..30 {
            for _ in 0..100 {
                s.on_packet(t0, seq, 0, 90_000, 1);
                seq = seq.wrapping_add(1);
            }
            s.report_block(t0, 1);
        }
        assert_eq!(s.score(), 10);
        assert_eq!(ScoreHistory::score_for_loss(0, 0), 10);
        assert_eq!(ScoreHistory::score_for_loss(100, 100), 0);
        assert_eq!(ScoreHistory::score_for_loss(500, 100), 0);
    }

    #[test]
    fn hostile_timestamps_and_clock_rates_do_not_panic() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        for i in 0..10_000u32 {
            let ts = if i % 2 == 0 { 0 } else { 0x8000_0000 };
            s.on_packet(t0 + MS * i, i as u16, ts, u32::MAX, usize::MAX);
        }
        assert!(s.jitter() > 0);
        let _ = s.bitrate_bps(t0 + MS * 10_000);
        let _ = s.report_block(t0, 1);
        // Clock rate 0 skips jitter; time going backwards saturates.
        let mut s = ReceiveStats::new();
        s.on_packet(t0 + MS * 10, 1, 5, 0, 1);
        s.on_packet(t0, 2, 50, 0, 1);
        assert_eq!(s.jitter(), 0);
    }
}
