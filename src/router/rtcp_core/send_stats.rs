//! Counters of one outgoing RTP stream: Sender Reports, and what the remote's Receiver
//! Reports say about it (RTT, loss, score).

use std::time::{Duration, Instant};

use super::{ntp_middle_32, q16_to_duration, ReportBlock, ScoreHistory, SenderReport};

/// Statistics of one outgoing RTP stream (one SSRC).
#[derive(Debug, Clone)]
pub struct SendStats {
    clock_rate: u32,
    packets: u64,
    octets: u64,
    /// RTP timestamp of the newest packet sent and when it was sent.
    last_rtp: Option<(u32, Instant)>,
    rtt: Option<Duration>,
    remote_fraction_lost: u8,
    remote_total_lost: i32,
    /// Extended highest sequence number and loss of the previous RR, for interval scoring.
    prev_rr: Option<(u32, i32)>,
    score: ScoreHistory,
}

impl SendStats {
    /// New counters for a stream whose codec runs at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            packets: 0,
            octets: 0,
            last_rtp: None,
            rtt: None,
            remote_fraction_lost: 0,
            remote_total_lost: 0,
            prev_rr: None,
            score: ScoreHistory::default(),
        }
    }

    /// Records a packet sent at `now` with `payload_bytes` of payload (RFC 3550 counts payload
    /// octets only, no header or padding). Retransmissions should not be counted here.
    pub fn on_packet_sent(&mut self, now: Instant, rtp_timestamp: u32, payload_bytes: usize) {
        self.packets += 1;
        self.octets = self.octets.saturating_add(payload_bytes as u64);
        self.last_rtp = Some((rtp_timestamp, now));
    }

    /// Packets sent.
    pub fn packets_sent(&self) -> u64 {
        self.packets
    }

    /// Payload octets sent.
    pub fn octets_sent(&self) -> u64 {
        self.octets
    }

    /// RTP timestamp of the newest packet sent and when it was sent.
    pub fn last_rtp_timestamp(&self) -> Option<(u32, Instant)> {
        self.last_rtp
    }

    /// Builds a Sender Report for `ssrc`: `ntp_now` is the wall clock at `now` (64-bit NTP);
    /// the RTP timestamp is the newest one sent, extrapolated to `now` with the clock rate.
    /// `None` before the first packet (there is nothing to map the clock to).
    pub fn sender_report(&self, now: Instant, ntp_now: u64, ssrc: u32) -> Option<SenderReport> {
        let (ts, at) = self.last_rtp?;
        let elapsed = now.saturating_duration_since(at);
        let ticks = elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000;
        Some(SenderReport {
            ssrc,
            ntp_time: ntp_now,
            rtp_time: ts.wrapping_add(ticks as u32),
            packet_count: self.packets as u32,
            octet_count: self.octets as u32,
        })
    }

    /// Takes a reception report block the remote sent about this stream. `ntp_now` is the wall
    /// clock at arrival; RTT = now - LSR - DLSR (RFC 3550 6.4.1), skipped when LSR is 0 or the
    /// result is negative (clock skew, forged values).
    pub fn on_receiver_report(&mut self, _now: Instant, block: &ReportBlock, ntp_now: u64) {
        if block.last_sender_report != 0 {
            let rtt = ntp_middle_32(ntp_now)
                .wrapping_sub(block.last_sender_report)
                .wrapping_sub(block.delay);
            // More than ~9 hours means the subtraction went negative.
            if rtt < 1 << 31 {
                self.rtt = Some(q16_to_duration(rtt));
            }
        }
        self.remote_fraction_lost = block.fraction_lost;
        self.remote_total_lost = block.total_lost;
        if let Some((prev_seq, prev_lost)) = self.prev_rr {
            let expected = block.extended_highest_seq.wrapping_sub(prev_seq);
            // Ignore reports that go backwards or jump absurdly (reordered or forged RRs).
            if expected > 0 && expected < 1 << 20 {
                let lost = (i64::from(block.total_lost) - i64::from(prev_lost)).max(0) as u64;
                self.score
                    .push(ScoreHistory::score_for_loss(lost, u64::from(expected)));
            }
        }
        self.prev_rr = Some((block.extended_highest_seq, block.total_lost));
    }

    /// Round-trip time from the latest usable report.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Fraction lost (out of 256) the remote reported last.
    pub fn remote_fraction_lost(&self) -> u8 {
        self.remote_fraction_lost
    }

    /// Cumulative loss the remote reported last.
    pub fn remote_total_lost(&self) -> i32 {
        self.remote_total_lost
    }

    /// Score 0..=10 of the path to the remote (consumerScore); 10 before two reports.
    pub fn score(&self) -> u8 {
        self.score.current().unwrap_or(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_report_extrapolates_rtp_time() {
        let t0 = Instant::now();
        let mut s = SendStats::new(90_000);
        assert!(s.sender_report(t0, 1, 1).is_none());
        s.on_packet_sent(t0, u32::MAX - 100, 1000);
        s.on_packet_sent(t0, u32::MAX - 100, 500);
        let sr = s
            .sender_report(t0 + Duration::from_millis(100), 0xabc, 7)
            .unwrap();
        // 100 ms at 90 kHz = 9000 ticks, wrapping past u32::MAX.
        assert_eq!(sr.rtp_time, 9000 - 101);
        assert_eq!(
            (sr.ssrc, sr.ntp_time, sr.packet_count, sr.octet_count),
            (7, 0xabc, 2, 1500)
        );
    }

    #[test]
    fn rtt_from_lsr_and_dlsr() {
        let t0 = Instant::now();
        let mut s = SendStats::new(48_000);
        let sr_ntp: u64 = 0x0000_1000_8000_0000; // middle = 0x1000_8000
        let block = ReportBlock {
            last_sender_report: ntp_middle_32(sr_ntp),
            delay: 65536 / 2, // 500 ms held by the remote
            ..Default::default()
        };
        // Arrives 600 ms after the SR: RTT 100 ms.
        let now_ntp = sr_ntp + ((6u64 << 32) / 10);
        s.on_receiver_report(t0, &block, now_ntp);
        let rtt = s.rtt().unwrap();
        assert!(
            rtt >= Duration::from_millis(99) && rtt <= Duration::from_millis(101),
            "{rtt:?}"
        );
        // A DLSR larger than the elapsed time (negative RTT) is ignored.
        let forged = ReportBlock {
            delay: 65536 * 10,
            ..block
        };
        s.on_receiver_report(t0, &forged, now_ntp);
        assert_eq!(s.rtt(), Some(rtt));
        // LSR 0 means no SR was received: no RTT.
        let mut s2 = SendStats::new(48_000);
        s2.on_receiver_report(t0, &ReportBlock::default(), now_ntp);
        assert_eq!(s2.rtt(), None);
    }

    #[test]
    fn score_follows_remote_loss() {
        let t0 = Instant::now();
        let mut s = SendStats::new(90_000);
        let mut block = ReportBlock::default();
        s.on_receiver_report(t0, &block, 0);
        assert_eq!(s.score(), 10);
        for i in 1..=8u32 {
            block.extended_highest_seq = i * 100;
            block.total_lost = (i * 20) as i32; // 20% loss per interval
            block.fraction_lost = 51;
            s.on_receiver_report(t0, &block, 0);
        }
        assert_eq!(s.score(), 4);
        assert_eq!(s.remote_fraction_lost(), 51);
        for i in 9..=40u32 {
            block.extended_highest_seq = i * 100;
            s.on_receiver_report(t0, &block, 0);
        }
        assert_eq!(s.score(), 10);
        // A report going backwards does not produce a sample.
        block.extended_highest_seq = 10;
        block.total_lost = 100_000;
        s.on_receiver_report(t0, &block, 0);
        assert_eq!(s.score(), 10);
    }
}
