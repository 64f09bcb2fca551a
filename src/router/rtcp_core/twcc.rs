//! Receiver side of transport-wide congestion control
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01): records the arrival time of every
//! transport-wide sequence number from a publisher and periodically writes RTPFB FMT=15
//! feedback so the sender's bandwidth estimator (Chrome's GCC) can ramp up.

use std::time::{Duration, Instant};

use super::build::begin_packet;
use super::{feedback_format, packet_type, SeqUnwrapper};
use crate::timing::TWCC_FEEDBACK_INTERVAL;

/// Arrival times remembered, in packets. Older packets can no longer be reported.
pub const TWCC_HISTORY: usize = 4096;
/// Upper bound for one feedback packet's size in bytes; longer windows are split.
pub const TWCC_MAX_FEEDBACK_BYTES: usize = 1100;

/// Delta unit: 250 microseconds.
const DELTA_US: u64 = 250;
/// Reference time unit: 64 ms, i.e. 256 delta units.
const REF_US: u64 = 64_000;
const MAX_RUN_LENGTH: u16 = 0x1fff;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Extended sequence number stored here, `u64::MAX` when empty.
    ext: u64,
    /// Arrival time in microseconds since the recorder's epoch.
    arrival_us: u64,
}

const EMPTY: Slot = Slot {
    ext: u64::MAX,
    arrival_us: 0,
};

/// Status symbol of one packet in a feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Symbol {
    NotReceived,
    Small(u8),
    Large(i16),
}

impl Symbol {
    fn code(self) -> u8 {
        match self {
            Symbol::NotReceived => 0,
            Symbol::Small(_) => 1,
            Symbol::Large(_) => 2,
        }
    }
}

/// Records transport-wide sequence numbers of one transport and writes feedback.
#[derive(Debug, Clone)]
pub struct TwccRecorder {
    unwrapper: SeqUnwrapper,
    slots: Box<[Slot]>,
    epoch: Option<Instant>,
    /// First extended sequence number the next feedback reports.
    window_start: Option<u64>,
    fb_pkt_count: u8,
    interval: Duration,
    last_feedback: Option<Instant>,
    next_feedback: Option<Instant>,
}

impl Default for TwccRecorder {
    fn default() -> Self {
        Self::new(TWCC_FEEDBACK_INTERVAL)
    }
}

impl TwccRecorder {
    /// A recorder sending feedback every `interval` while packets arrive.
    pub fn new(interval: Duration) -> Self {
        Self {
            unwrapper: SeqUnwrapper::new(),
            slots: vec![EMPTY; TWCC_HISTORY].into_boxed_slice(),
            epoch: None,
            window_start: None,
            fb_pkt_count: 0,
            interval,
            last_feedback: None,
            next_feedback: None,
        }
    }

    fn slot_index(ext: u64) -> usize {
        (ext % TWCC_HISTORY as u64) as usize
    }

    /// Arrival time (µs since epoch) of `ext`, if it was received and is still remembered.
    fn arrival(&self, ext: u64) -> Option<u64> {
        let slot = self.slots.get(Self::slot_index(ext))?;
        (slot.ext == ext).then_some(slot.arrival_us)
    }

    /// Records a packet carrying transport-wide sequence number `seq`, received at `now`.
    /// Reordered packets are fine; a packet older than the last feedback is reported again in
    /// the next one (the sender takes the newest information); duplicates keep the first
    /// arrival; packets more than [`TWCC_HISTORY`] behind the newest are ignored.
    pub fn on_packet(&mut self, now: Instant, seq: u16) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival_us =
            u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX);
        let ext = self.unwrapper.unwrap(seq);
        let highest = self.unwrapper.highest().unwrap_or(ext);
        if highest - ext >= TWCC_HISTORY as u64 {
            return;
        }
        let idx = Self::slot_index(ext);
        if let Some(slot) = self.slots.get_mut(idx) {
            if slot.ext == ext {
                return;
            }
            *slot = Slot { ext, arrival_us };
        }
        let oldest = highest.saturating_sub(TWCC_HISTORY as u64 - 1);
        let start = self.window_start.map_or(ext, |w| w.min(ext)).max(oldest);
        self.window_start = Some(start);
        if self.next_feedback.is_none() {
            self.next_feedback = Some(self.last_feedback.map_or(now, |t| t + self.interval));
        }
    }

    /// When [`Self::poll_feedback`] has something to write.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_feedback
    }

    /// If feedback is due at `now`, appends one or more transport-cc feedback packets (split
    /// by size and by deltas too large for the format) covering every packet since the last
    /// feedback, and returns how many were written. `media_ssrc` is the publisher's SSRC
    /// (browsers ignore it; mediasoup sends the first media SSRC of the transport).
    pub fn poll_feedback(
        &mut self,
        now: Instant,
        sender_ssrc: u32,
        media_ssrc: u32,
        out: &mut Vec<u8>,
    ) -> usize {
        if self.next_feedback.is_none_or(|t| t > now) {
            return 0;
        }
        self.next_feedback = None;
        self.last_feedback = Some(now);
        let (Some(mut start), Some(end)) = (self.window_start.take(), self.unwrapper.highest())
        else {
            return 0;
        };
        let mut written = 0;
        while start <= end {
            let Some(stop) = self.write_one(start, end, sender_ssrc, media_ssrc, out) else {
                break;
            };
            written += 1;
            start = stop + 1;
        }
        written
    }

    /// Symbol for `ext` given the previous received packet's time in delta ticks.
    fn symbol(&self, ext: u64, prev_ticks: &mut u64) -> Option<Symbol> {
        let Some(arrival) = self.arrival(ext) else {
            return Some(Symbol::NotReceived);
        };
        let ticks = arrival / DELTA_US;
        let delta = ticks as i64 - *prev_ticks as i64;
        let sym = if (0..=255).contains(&delta) {
            Symbol::Small(delta as u8)
        } else {
            Symbol::Large(i16::try_from(delta).ok()?)
        };
        *prev_ticks = ticks;
        Some(sym)
    }

    /// Writes one feedback packet starting at `start`; returns the last sequence it covers,
    /// or `None` when nothing in `start..=end` was received.
    fn write_one(
        &mut self,
        start: u64,
        end: u64,
        sender_ssrc: u32,
        media_ssrc: u32,
        out: &mut Vec<u8>,
    ) -> Option<u64> {
        let first_arrival = (start..=end).find_map(|e| self.arrival(e))?;
        let ref_units = first_arrival / REF_US;
        let ref_ticks = ref_units * (REF_US / DELTA_US);

        // Pass 1: how far this packet may go (delta range, size, status count).
        let mut prev = ref_ticks;
        let mut stop = start;
        let mut delta_bytes = 0usize;
        let mut s = start;
        while s <= end {
            let Some(sym) = self.symbol(s, &mut prev) else {
                break; // delta beyond ±8 s: the next packet gets its own reference time
            };
            delta_bytes += match sym {
                Symbol::NotReceived => 0,
                Symbol::Small(_) => 1,
                Symbol::Large(_) => 2,
            };
            let count = (s - start + 1) as usize;
            // Chunks need at most 2 bytes per 7 statuses.
            let size = 20 + count.div_ceil(7) * 2 + delta_bytes;
            if (size > TWCC_MAX_FEEDBACK_BYTES && s > start) || count > usize::from(u16::MAX) {
                break;
            }
            stop = s;
            s += 1;
        }

        let pkt_start = begin_packet(out, feedback_format::TWCC, packet_type::RTPFB);
        out.extend_from_slice(&sender_ssrc.to_be_bytes());
        out.extend_from_slice(&media_ssrc.to_be_bytes());
        out.extend_from_slice(&(start as u16).to_be_bytes());
        out.extend_from_slice(&((stop - start + 1) as u16).to_be_bytes());
        let ref24 = (ref_units as u32) & 0x00ff_ffff;
        out.extend_from_slice(&((ref24 << 8) | u32::from(self.fb_pkt_count)).to_be_bytes());
        self.fb_pkt_count = self.fb_pkt_count.wrapping_add(1);

        // Pass 2: packet status chunks.
        let mut enc = ChunkEncoder::default();
        let mut prev = ref_ticks;
        for e in start..=stop {
            let code = self.symbol(e, &mut prev).map_or(0, Symbol::code);
            if !enc.can_add(code) {
                enc.emit(out);
            }
            enc.add(code);
        }
        enc.flush(out);

        // Pass 3: receive deltas.
        let mut prev = ref_ticks;
        for e in start..=stop {
            match self.symbol(e, &mut prev) {
                Some(Symbol::Small(d)) => out.push(d),
                Some(Symbol::Large(d)) => out.extend_from_slice(&d.to_be_bytes()),
                _ => {}
            }
        }

        // Pad to 32 bits with RTCP padding (the last byte counts the padding), as libwebrtc.
        let pad = (4 - (out.len() - pkt_start) % 4) % 4;
        if pad > 0 {
            out.extend(std::iter::repeat_n(0u8, pad - 1));
            out.push(pad as u8);
            if let Some(b0) = out.get_mut(pkt_start) {
                *b0 |= 0x20;
            }
        }
        let words = ((out.len() - pkt_start) / 4 - 1) as u16; // < 1100 bytes by construction
        if let Some(len) = out.get_mut(pkt_start + 2..pkt_start + 4) {
            len.copy_from_slice(&words.to_be_bytes());
        }
        Some(stop)
    }
}

/// Greedy packet status chunk encoder (run length, 1-bit and 2-bit status vectors).
#[derive(Debug, Default)]
struct ChunkEncoder {
    /// First symbols not yet emitted (only the first 14 are stored).
    buf: [u8; 14],
    len: usize,
    all_same: bool,
    has_large: bool,
}

impl ChunkEncoder {
    fn can_add(&self, code: u8) -> bool {
        if self.len < 7 {
            return true;
        }
        if self.len < 14 && !self.has_large && code != 2 {
            return true;
        }
        self.len < usize::from(MAX_RUN_LENGTH) && self.all_same && self.buf[0] == code
    }

    fn add(&mut self, code: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = code;
        }
        self.all_same = if self.len == 0 {
            true
        } else {
            self.all_same && self.buf[0] == code
        };
        self.has_large |= code == 2;
        self.len += 1;
    }

    fn run_length(out: &mut Vec<u8>, code: u8, len: usize) {
        let v = (u16::from(code & 0x3) << 13) | (len as u16 & MAX_RUN_LENGTH);
        out.extend_from_slice(&v.to_be_bytes());
    }

    fn vector(out: &mut Vec<u8>, symbols: &[u8], two_bit: bool) {
        let mut v: u16 = 0x8000 | if two_bit { 0x4000 } else { 0 };
        let (bits, cap) = if two_bit { (2, 7) } else { (1, 14) };
        for (i, &s) in symbols.iter().take(cap).enumerate() {
            v |= u16::from(s) << (14 - bits * (i + 1));
        }
        out.extend_from_slice(&v.to_be_bytes());
    }

    /// Emits a chunk because the next symbol does not fit.
    fn emit(&mut self, out: &mut Vec<u8>) {
        if self.all_same {
            Self::run_length(out, self.buf[0], self.len);
            self.len = 0;
        } else if self.len == 14 {
            Self::vector(out, &self.buf, false);
            self.len = 0;
        } else {
            // 7..13 symbols including a large delta: emit 7, keep the rest.
            Self::vector(out, &self.buf[..7], true);
            let rest = self.len - 7;
            let old = self.buf;
            self.len = 0;
            self.has_large = false;
            for &c in old.get(7..7 + rest).unwrap_or(&[]) {
                self.add(c);
            }
            return;
        }
        self.has_large = false;
    }

    /// Emits what is left at the end of the packet.
    fn flush(&mut self, out: &mut Vec<u8>) {
        while self.len > 0 {
            if self.all_same && self.len > 7 {
                Self::run_length(out, self.buf[0], self.len);
                self.len = 0;
            } else if self.len <= 7 {
                Self::vector(out, &self.buf[..self.len], true);
                self.len = 0;
            } else if !self.has_large {
                Self::vector(out, &self.buf[..self.len], false);
                self.len = 0;
            } else {
                self.emit(out);
            }
        }
        self.has_large = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
    };

    const US: Duration = Duration::from_micros(1);

    /// Decodes feedback with the `rtcp` crate: (seq, arrival µs since epoch if received) per
    /// reported packet, plus the decoded packets.
    fn decode(buf: &[u8]) -> (Vec<(u16, Option<i64>)>, Vec<TransportLayerCc>) {
        let pkts = rtcp::packet::unmarshal(&mut Bytes::copy_from_slice(buf)).unwrap();
        let mut result = Vec::new();
        let mut tccs = Vec::new();
        for p in pkts {
            let cc = p
                .as_any()
                .downcast_ref::<TransportLayerCc>()
                .unwrap()
                .clone();
            let mut statuses = Vec::new();
            for chunk in &cc.packet_chunks {
                match chunk {
                    PacketStatusChunk::RunLengthChunk(r) => statuses.extend(std::iter::repeat_n(
                        r.packet_status_symbol,
                        r.run_length.into(),
                    )),
                    PacketStatusChunk::StatusVectorChunk(v) => {
                        if v.symbol_size == SymbolSizeTypeTcc::OneBit {
                            assert!(!v
                                .symbol_list
                                .contains(&SymbolTypeTcc::PacketReceivedLargeDelta));
                        }
                        statuses.extend(v.symbol_list.iter().copied())
                    }
                }
            }
            statuses.truncate(cc.packet_status_count.into());
            assert_eq!(statuses.len(), usize::from(cc.packet_status_count));
            let mut t = i64::from(cc.reference_time) * 64_000;
            let mut deltas = cc.recv_deltas.iter();
            for (i, st) in statuses.iter().enumerate() {
                let seq = cc.base_sequence_number.wrapping_add(i as u16);
                if *st == SymbolTypeTcc::PacketNotReceived {
                    result.push((seq, None));
                } else {
                    let d = deltas.next().unwrap();
                    assert_eq!(d.type_tcc_packet, *st);
                    t += d.delta;
                    result.push((seq, Some(t)));
                }
            }
            assert!(deltas.next().is_none());
            tccs.push(cc);
        }
        (result, tccs)
    }

    type Decoded = (Vec<(u16, Option<i64>)>, Vec<TransportLayerCc>, Vec<u8>);

    /// Feeds (seq, arrival µs after t0) and returns the feedback written at the end.
    fn run(packets: &[(u16, u64)]) -> Decoded {
        let t0 = Instant::now();
        let mut r = TwccRecorder::default();
        let mut last = t0;
        for &(seq, at) in packets {
            last = t0 + US * at as u32;
            r.on_packet(last, seq);
        }
        let mut out = Vec::new();
        assert!(r.poll_feedback(last, 1, 2, &mut out) >= 1);
        let (res, tccs) = decode(&out);
        (res, tccs, out)
    }

    #[test]
    fn in_order_packets_decode_to_arrival_times() {
        let pkts: Vec<_> = (0..20u16).map(|i| (100 + i, u64::from(i) * 1000)).collect();
        let (res, tccs, out) = run(&pkts);
        assert_eq!(tccs.len(), 1);
        assert_eq!((tccs[0].sender_ssrc, tccs[0].media_ssrc), (1, 2));
        assert_eq!(tccs[0].base_sequence_number, 100);
        assert_eq!(out.len() % 4, 0);
        let want: Vec<_> = pkts.iter().map(|&(s, t)| (s, Some(t as i64))).collect();
        assert_eq!(res, want);
        // Our own parser sees the header too.
        let item = super::super::parse_compound(&out).unwrap().next().unwrap();
        assert!(matches!(
            item,
            super::super::RtcpItem::TransportCc {
                base_seq: 100,
                status_count: 20,
                fb_pkt_count: 0,
                ..
            }
        ));
    }

    #[test]
    fn gaps_wraparound_large_and_negative_deltas() {
        // Arrival times are multiples of 250 µs so they survive quantisation exactly.
        let pkts = [
            (65532u16, 0u64),
            (65533, 70_000), // non-zero offset inside the 64 ms reference unit
            (65535, 71_000), // 65534 lost
            (0, 171_000),    // 100 ms gap: large delta
            (2, 170_750),    // 1 lost, arrives earlier than 0: negative delta
            (1, 172_000),    // reordered, fills the gap
            (10, 172_250),   // 3..=9 lost
        ];
        let (res, _, _) = run(&pkts);
        let mut want: Vec<(u16, Option<i64>)> = vec![
            (65532, Some(0)),
            (65533, Some(70_000)),
            (65534, None),
            (65535, Some(71_000)),
            (0, Some(171_000)),
            (1, Some(172_000)),
            (2, Some(170_750)),
        ];
        want.extend((3..10).map(|s| (s, None)));
        want.push((10, Some(172_250)));
        assert_eq!(res, want);
    }

    #[test]
    fn sub_tick_times_are_floored_without_drift() {
        let pkts: Vec<_> = (0..500u16).map(|i| (i, u64::from(i) * 333)).collect();
        let (res, _, _) = run(&pkts);
        for (&(s, t), &(rs, rt)) in pkts.iter().zip(&res) {
            assert_eq!(s, rs);
            assert_eq!(rt, Some((t / 250 * 250) as i64));
        }
    }

    #[test]
    fn delta_beyond_range_splits_feedback() {
        let pkts = [(1u16, 0u64), (2, 1000), (4, 9_000_000), (5, 9_001_000)];
        let (res, tccs, _) = run(&pkts);
        assert_eq!(tccs.len(), 2);
        assert_eq!(tccs[1].base_sequence_number, 4);
        assert_eq!(tccs[1].fb_pkt_count, tccs[0].fb_pkt_count.wrapping_add(1));
        assert_eq!(
            res,
            vec![
                (1, Some(0)),
                (2, Some(1000)),
                (3, None),
                (4, Some(9_000_000)),
                (5, Some(9_001_000)),
            ]
        );
    }

    #[test]
    fn large_window_is_split_by_size_and_long_runs_use_run_length() {
        // Alternating large deltas (forces 2-byte deltas and 2-bit vectors).
        let pkts: Vec<_> = (0..3000u16)
            .map(|i| (i, u64::from(i) * 70_000 + if i % 2 == 0 { 0 } else { 500 }))
            .collect();
        let (res, tccs, out) = run(&pkts);
        assert!(tccs.len() > 1);
        let mut offset = 0;
        for p in super::super::parse_compound(&out).unwrap() {
            assert!(matches!(p, super::super::RtcpItem::TransportCc { .. }));
            offset += 1;
        }
        assert_eq!(offset, tccs.len());
        for chunk in out.chunks(4).take(1) {
            assert!(chunk.len() == 4);
        }
        assert_eq!(res.len(), 3000);
        for (&(s, t), &(rs, rt)) in pkts.iter().zip(&res) {
            assert_eq!((s, Some(t as i64)), (rs, rt));
        }
        // Every packet is below the size cap.
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
            assert!(len <= TWCC_MAX_FEEDBACK_BYTES);
            rest = &rest[len..];
        }
        // A long loss run then packets: run-length chunks.
        let (res, tccs, _) = run(&[(0, 0), (3000, 1000), (3001, 1250)]);
        assert_eq!(res.len(), 3002);
        assert!(tccs[0]
            .packet_chunks
            .iter()
            .any(|c| matches!(c, PacketStatusChunk::RunLengthChunk(r) if r.run_length > 1000)));
        assert_eq!(res[3000], (3000, Some(1000)));
    }

    #[test]
    fn periodic_timing_and_late_packets() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut r = TwccRecorder::default();
        let mut out = Vec::new();
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.poll_feedback(t0, 1, 2, &mut out), 0);
        r.on_packet(t0, 10);
        r.on_packet(t0 + ms, 12);
        assert_eq!(r.poll_timeout(), Some(t0));
        assert_eq!(r.poll_feedback(t0 + ms, 1, 2, &mut out), 1);
        assert_eq!(r.poll_timeout(), None);
        // 11 arrives late: the next feedback starts at 11 again; 13 arrives too.
        r.on_packet(t0 + ms * 5, 11);
        r.on_packet(t0 + ms * 6, 13);
        assert_eq!(r.poll_timeout(), Some(t0 + ms * 51));
        assert_eq!(r.poll_feedback(t0 + ms * 50, 1, 2, &mut out), 0);
        out.clear();
        assert_eq!(r.poll_feedback(t0 + ms * 51, 1, 2, &mut out), 1);
        let (res, tccs) = decode(&out);
        assert_eq!(tccs[0].fb_pkt_count, 1);
        assert_eq!(
            res,
            vec![(11, Some(5000)), (12, Some(1000)), (13, Some(6000))]
        );
        // Duplicates keep the first arrival and packets beyond the history are ignored.
        r.on_packet(t0 + ms * 60, 13);
        r.on_packet(t0 + ms * 61, 13u16.wrapping_sub(TWCC_HISTORY as u16));
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.poll_feedback(t0 + ms * 200, 1, 2, &mut out), 0);
    }

    #[test]
    fn random_input_always_yields_decodable_feedback() {
        let t0 = Instant::now();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut r = TwccRecorder::default();
        let mut now = t0;
        let mut out = Vec::new();
        for round in 0..200 {
            for _ in 0..(next() % 50) {
                now += Duration::from_micros(
                    next() % if round % 7 == 0 { 20_000_000 } else { 30_000 },
                );
                let seq = if next() % 5 == 0 {
                    next() as u16
                } else {
                    round * 40 + (next() % 60) as u16
                };
                r.on_packet(now, seq);
            }
            out.clear();
            if r.poll_feedback(now, 1, 2, &mut out) > 0 {
                let (res, _) = decode(&out);
                assert!(!res.is_empty());
                assert!(super::super::parse_compound(&out).is_ok());
            }
        }
    }
}
