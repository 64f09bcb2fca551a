//! RTCP and receive-side feedback cores, all sans-IO.
//!
//! This module owns the per-stream RTCP state of the router and the wire format of the RTCP
//! packets it reads and writes:
//!
//! - [`ReceiveStats`]: statistics of one incoming RTP stream (RFC 3550 A.1, A.3, A.8): the
//!   extended highest sequence number, loss, jitter, bitrate, LSR/DLSR and a 0..=10 score.
//! - [`SendStats`]: counters of one outgoing stream, Sender Reports, RTT from Receiver Reports.
//! - [`NackGenerator`]: detects gaps in a publisher's stream and schedules NACKs (mediasoup
//!   semantics: bounded list, per-sequence retries, keyframe request on overflow).
//! - [`TwccRecorder`]: records transport-wide sequence numbers and writes transport-wide-cc
//!   feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).
//! - [`KeyFrameRequestManager`]: coalesces PLI/FIR requests of many consumers per producer SSRC.
//! - [`parse_compound`] and the `write_*` builders: RTCP parsing and serialisation.
//!
//! None of these types read the clock, touch sockets or know about transports, producers or
//! consumers: callers pass `now` (and NTP wall-clock values where the protocol needs them) and
//! act on what the cores return. Parsing never panics on untrusted bytes; our own parser is
//! used for incoming packets (the `rtcp` crate can panic on some malformed input) and the `rtcp`
//! crate serves as an independent decoder in the tests.

mod build;
mod keyframe_request;
mod nack;
mod parse;
mod receive_stats;
mod send_stats;
mod twcc;

pub use build::*;
pub use keyframe_request::*;
pub use nack::*;
pub use parse::*;
pub use receive_stats::*;
pub use send_stats::*;
pub use twcc::*;

/// The middle 32 bits of a 64-bit NTP timestamp, as carried in LSR fields (RFC 3550 6.4.1).
pub fn ntp_middle_32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Converts a duration to units of 1/65536 s (the DLSR unit), saturating at `u32::MAX`.
pub fn duration_to_q16(d: std::time::Duration) -> u32 {
    let units = (d.as_nanos() << 16) / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// Converts units of 1/65536 s to a duration.
pub fn q16_to_duration(units: u32) -> std::time::Duration {
    std::time::Duration::from_nanos((u64::from(units) * 1_000_000_000) >> 16)
}

/// Unwraps 16-bit sequence numbers into a monotonic 64-bit space, choosing for each value the
/// candidate closest to the highest value seen so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqUnwrapper {
    highest: Option<u64>,
}

impl SeqUnwrapper {
    /// A fresh unwrapper; the first value maps to `65536 + seq` so that values slightly below
    /// it can still be represented.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the extended value of `seq` and raises the highest value if `seq` is newer.
    pub fn unwrap(&mut self, seq: u16) -> u64 {
        let ext = self.peek(seq);
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }

    /// Returns the extended value `seq` would get, without changing state.
    pub fn peek(&self, seq: u16) -> u64 {
        match self.highest {
            None => (1 << 16) + u64::from(seq),
            Some(h) => {
                let delta = seq.wrapping_sub(h as u16) as i16;
                // `h` starts at >= 65536 and only grows, and |delta| <= 32768, so this stays
                // positive.
                (h as i64 + i64::from(delta)) as u64
            }
        }
    }

    /// The highest extended value seen, if any.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unwrapper_handles_wrap_and_reorder() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(65534);
        assert_eq!(u.unwrap(65535), a + 1);
        assert_eq!(u.unwrap(1), a + 3);
        assert_eq!(u.unwrap(0), a + 2);
        assert_eq!(u.highest(), Some(a + 3));
        // A value just below the first one stays representable.
        let mut u = SeqUnwrapper::new();
        let b = u.unwrap(0);
        assert_eq!(u.unwrap(65535), b - 1);
    }

    #[test]
    fn q16_conversions() {
        assert_eq!(duration_to_q16(Duration::from_secs(1)), 65536);
        assert_eq!(duration_to_q16(Duration::from_millis(500)), 32768);
        assert_eq!(q16_to_duration(65536), Duration::from_secs(1));
        assert_eq!(duration_to_q16(Duration::from_secs(1 << 20)), u32::MAX);
        assert_eq!(ntp_middle_32(0x1122_3344_5566_7788), 0x3344_5566);
    }
}
