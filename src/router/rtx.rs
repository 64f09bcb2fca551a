//! Retransmission: the per-stream buffer of sent packets, NACK answering and RFC 4588 RTX
//! encapsulation.
//!
//! This module owns [`RetransmissionBuffer`] (copies of forwarded packets in preallocated,
//! reused slots indexed by sequence number; no allocation per packet once every slot has been
//! used once), the NACK-to-resend decision with a per-packet throttle, and the pure functions
//! [`rtx_encode`] / [`rtx_decode`] that move a packet in and out of an RTX stream using caller
//! buffers. It does not own sockets, clocks, SRTP or RTCP parsing: callers pass `now`, the
//! NACK items and output buffers.

use std::time::{Duration, Instant};

use crate::router::seq::{seq_is_newer, RtpError, RtpView};

/// Why a retransmission operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtxError {
    /// The bytes are not a valid RTP packet.
    #[error("invalid RTP packet: {0}")]
    Rtp(#[from] RtpError),
    /// The caller's output buffer cannot hold the result.
    #[error("output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The packet is larger than the buffer's configured slot size.
    #[error("packet of {len} bytes exceeds the {max}-byte slot size")]
    PacketTooLarge {
        /// Packet length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The sequence number is older than the buffer's window: it cannot be stored.
    #[error("sequence number outside the buffer window")]
    TooOld,
    /// An RTX packet without the 2-byte original sequence number (e.g. padding-only probe).
    #[error("RTX packet has no original sequence number")]
    MissingOsn,
}

/// Settings of a [`RetransmissionBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmissionConfig {
    /// Number of slots; rounded up to a power of two within 16..=32768 (at most half the
    /// sequence space so that slot ownership is unambiguous).
    pub capacity: usize,
    /// Packets older than this are not resent.
    pub max_age: Duration,
    /// Largest packet stored; larger ones are refused rather than grow the slot.
    pub max_packet_len: usize,
    /// The same packet is not resent more often than this (until [`set_rtt`] tunes it).
    ///
    /// [`set_rtt`]: RetransmissionBuffer::set_rtt
    pub min_resend_interval: Duration,
    /// At most this many packets are resent for one NACK message.
    pub max_resends_per_nack: usize,
}

impl Default for RetransmissionConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            max_age: crate::timing::RTX_BUFFER_MAX_AGE,
            max_packet_len: 1500,
            min_resend_interval: Duration::from_millis(100),
            max_resends_per_nack: 64,
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    data: Vec<u8>,
    seq: u16,
    /// `None` while the slot is empty.
    stored_at: Option<Instant>,
    resent_at: Option<Instant>,
}

/// Copies of recently forwarded packets, indexed by (output) sequence number.
#[derive(Debug)]
pub struct RetransmissionBuffer {
    slots: Vec<Slot>,
    mask: usize,
    max_seq: Option<u16>,
    cfg: RetransmissionConfig,
    resend_interval: Duration,
}

impl RetransmissionBuffer {
    /// An empty buffer. Slot metadata is allocated now; each slot's byte storage is reserved
    /// at `max_packet_len` on first use and reused afterwards.
    pub fn new(cfg: RetransmissionConfig) -> Self {
        let capacity = cfg.capacity.clamp(16, 32768).next_power_of_two();
        let mut slots = Vec::with_capacity(capacity);
        slots.resize_with(capacity, Slot::default);
        Self {
            slots,
            mask: capacity - 1,
            max_seq: None,
            resend_interval: cfg.min_resend_interval,
            cfg,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Newest sequence number stored.
    pub fn max_seq(&self) -> Option<u16> {
        self.max_seq
    }

    /// Adapts the resend throttle to the measured round-trip time (a retransmission needs
    /// about one RTT to arrive before a new NACK for it is meaningful). Never goes below the
    /// configured `min_resend_interval`, nor above one second.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.resend_interval = rtt.clamp(self.cfg.min_resend_interval, Duration::from_secs(1));
    }

    /// Stores a copy of a forwarded packet under `seq`. Out-of-order inserts within the
    /// window are accepted; a duplicate replaces the earlier copy.
    pub fn insert(&mut self, now: Instant, seq: u16, packet: &[u8]) -> Result<(), RtxError> {
        if packet.len() > self.cfg.max_packet_len {
            return Err(RtxError::PacketTooLarge {
                len: packet.len(),
                max: self.cfg.max_packet_len,
            });
        }
        match self.max_seq {
            Some(max) if !seq_is_newer(seq, max) => {
                if max.wrapping_sub(seq) as usize > self.mask {
                    return Err(RtxError::TooOld);
                }
            }
            _ => self.max_seq = Some(seq),
        }
        let max_len = self.cfg.max_packet_len;
        let slot = &mut self.slots[seq as usize & self.mask];
        if slot.data.capacity() == 0 {
            // First use of this slot (warm-up): the only allocation it will ever make.
            slot.data.reserve_exact(max_len);
        }
        slot.data.clear();
        slot.data.extend_from_slice(packet);
        slot.seq = seq;
        slot.stored_at = Some(now);
        slot.resent_at = None;
        Ok(())
    }

    fn slot_index(&self, now: Instant, seq: u16) -> Option<usize> {
        let max = self.max_seq?;
        if seq_is_newer(seq, max) || max.wrapping_sub(seq) as usize > self.mask {
            return None;
        }
        let idx = seq as usize & self.mask;
        let slot = &self.slots[idx];
        let stored_at = slot.stored_at?;
        if slot.seq != seq || now.saturating_duration_since(stored_at) > self.cfg.max_age {
            return None;
        }
        Some(idx)
    }

    /// The stored packet with this sequence number, unless evicted (overwritten by a newer
    /// packet, outside the window, or older than `max_age`).
    pub fn get(&self, now: Instant, seq: u16) -> Option<&[u8]> {
        self.slot_index(now, seq)
            .map(|i| self.slots[i].data.as_slice())
    }

    /// Decides which stored packets to resend for one NACK message. `items` are RFC 4585
    /// generic NACK entries `(pid, blp)`: `pid` is lost, and bit `i` of `blp` means
    /// `pid + i + 1` is lost too. Sequence numbers to resend are written to `out` (cleared
    /// first; reuse it to avoid allocation), in request order, skipping packets not stored,
    /// packets resent less than one resend interval ago, duplicates within the message, and
    /// anything beyond `max_resends_per_nack`. Returns how many were selected.
    pub fn handle_nack(
        &mut self,
        now: Instant,
        items: impl IntoIterator<Item = (u16, u16)>,
        out: &mut Vec<u16>,
    ) -> usize {
        out.clear();
        let cap = self.cfg.max_resends_per_nack;
        'items: for (pid, blp) in items {
            for i in 0..17u16 {
                if i > 0 && blp & (1 << (i - 1)) == 0 {
                    continue;
                }
                if out.len() >= cap {
                    break 'items;
                }
                let seq = pid.wrapping_add(i);
                let Some(idx) = self.slot_index(now, seq) else {
                    continue;
                };
                let slot = &mut self.slots[idx];
                if let Some(at) = slot.resent_at {
                    // A duplicate within this message was marked `now` and lands here too.
                    if now.saturating_duration_since(at) < self.resend_interval || at == now {
                        continue;
                    }
                }
                slot.resent_at = Some(now);
                out.push(seq);
            }
        }
        out.len()
    }

    /// Same as [`handle_nack`](Self::handle_nack) for the `rtcp` crate's NACK pairs.
    pub fn handle_nack_pairs(
        &mut self,
        now: Instant,
        pairs: &[rtcp::transport_feedbacks::transport_layer_nack::NackPair],
        out: &mut Vec<u16>,
    ) -> usize {
        self.handle_nack(
            now,
            pairs.iter().map(|p| (p.packet_id, p.lost_packets)),
            out,
        )
    }
}

/// RFC 4588 encapsulation: writes into `out` an RTX packet carrying `original`: same header
/// (CSRCs and header extensions kept, marker kept), RTX `ssrc`, `payload_type` and `seq`,
/// payload = original sequence number (2 bytes, big-endian) + original payload. Padding of
/// the original is not carried (the P bit is cleared). Returns the RTX packet length.
pub fn rtx_encode(
    original: &[u8],
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    out: &mut [u8],
) -> Result<usize, RtxError> {
    let view = RtpView::parse(original)?;
    let header_len = view.header_len();
    let payload = view.payload();
    let need = header_len + 2 + payload.len();
    if out.len() < need {
        return Err(RtxError::BufferTooSmall {
            need,
            have: out.len(),
        });
    }
    out[..header_len].copy_from_slice(&original[..header_len]);
    out[header_len..header_len + 2].copy_from_slice(&view.sequence_number().to_be_bytes());
    out[header_len + 2..need].copy_from_slice(payload);
    out[0] &= !0x20;
    let mut rtx = RtpView::parse(&mut out[..need])?;
    rtx.set_ssrc(ssrc);
    rtx.set_payload_type(payload_type);
    rtx.set_sequence_number(seq);
    Ok(need)
}

/// RFC 4588 decapsulation: writes into `out` the original packet carried by the RTX packet
/// `rtx`: header kept, sequence number taken from the OSN, payload type and SSRC supplied by
/// the caller (from the negotiated apt and the RTX→media SSRC association), padding dropped.
/// Returns the original packet length.
pub fn rtx_decode(
    rtx: &[u8],
    payload_type: u8,
    ssrc: u32,
    out: &mut [u8],
) -> Result<usize, RtxError> {
    let view = RtpView::parse(rtx)?;
    let header_len = view.header_len();
    let payload = view.payload();
    let (Some(&hi), Some(&lo)) = (payload.first(), payload.get(1)) else {
        return Err(RtxError::MissingOsn);
    };
    let need = header_len + payload.len() - 2;
    if out.len() < need {
        return Err(RtxError::BufferTooSmall {
            need,
            have: out.len(),
        });
    }
    out[..header_len].copy_from_slice(&rtx[..header_len]);
    out[header_len..need].copy_from_slice(&payload[2..]);
    out[0] &= !0x20;
    let mut orig = RtpView::parse(&mut out[..need])?;
    orig.set_ssrc(ssrc);
    orig.set_payload_type(payload_type);
    orig.set_sequence_number(u16::from_be_bytes([hi, lo]));
    Ok(need)
}

/// The sending side of one RTX stream: its SSRC, payload type and own sequence counter.
#[derive(Debug, Clone)]
pub struct RtxEncoder {
    ssrc: u32,
    payload_type: u8,
    next_seq: u16,
}

impl RtxEncoder {
    /// An encoder whose first RTX packet gets `first_seq` (pick it at random).
    pub fn new(ssrc: u32, payload_type: u8, first_seq: u16) -> Self {
        Self {
            ssrc,
            payload_type,
            next_seq: first_seq,
        }
    }

    /// RTX SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Encapsulates `original` into `out` with the next RTX sequence number (consumed only
    /// on success). Returns the RTX packet length.
    pub fn encode(&mut self, original: &[u8], out: &mut [u8]) -> Result<usize, RtxError> {
        let n = rtx_encode(original, self.ssrc, self.payload_type, self.next_seq, out)?;
        self.next_seq = self.next_seq.wrapping_add(1);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x90, 0x80 | 96, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1];
        v[2..4].copy_from_slice(&seq.to_be_bytes());
        // one-byte extension block: id 3 (twcc) = 0x0102
        v.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x31, 0x01, 0x02, 0]);
        v.extend_from_slice(payload);
        v
    }

    fn buf(cap: usize) -> RetransmissionBuffer {
        RetransmissionBuffer::new(RetransmissionConfig {
            capacity: cap,
            ..Default::default()
        })
    }

    #[test]
    fn capacity_rounded_and_clamped() {
        assert_eq!(buf(1000).capacity(), 1024);
        assert_eq!(buf(0).capacity(), 16);
        assert_eq!(buf(1 << 20).capacity(), 32768);
    }

    #[test]
    fn insert_get_and_overwrite_by_capacity() {
        let t = Instant::now();
        let mut b = buf(16);
        for s in 0..16u16 {
            b.insert(t, s, &pkt(s, &[s as u8])).unwrap();
        }
        assert_eq!(b.get(t, 3).unwrap(), &pkt(3, &[3])[..]);
        b.insert(t, 16, &pkt(16, &[16])).unwrap();
        assert!(b.get(t, 0).is_none(), "slot 0 now holds seq 16");
        assert!(b.get(t, 16).is_some());
        assert!(b.get(t, 17).is_none(), "newer than anything stored");
        assert_eq!(b.insert(t, 0, &[0; 20]), Err(RtxError::TooOld));
    }

    #[test]
    fn wraparound_and_big_jump() {
        let t = Instant::now();
        let mut b = buf(16);
        for s in [65534u16, 65535, 0, 1] {
            b.insert(t, s, &pkt(s, &[])).unwrap();
        }
        assert_eq!(b.max_seq(), Some(1));
        assert!(b.get(t, 65534).is_some());
        assert!(b.get(t, 65535).is_some());
        // Jump by exactly the capacity: old entries would alias the same slots.
        b.insert(t, 17, &pkt(17, &[])).unwrap();
        assert!(b.get(t, 1).is_none());
        assert!(b.get(t, 65535).is_none());
        // Late insert within the window.
        b.insert(t, 10, &pkt(10, &[])).unwrap();
        assert!(b.get(t, 10).is_some());
        assert_eq!(b.max_seq(), Some(17));
    }

    #[test]
    fn age_eviction_and_size_limit() {
        let t = Instant::now();
        let mut b = buf(16);
        b.insert(t, 1, &pkt(1, &[])).unwrap();
        assert!(b.get(t + Duration::from_millis(2000), 1).is_some());
        assert!(b.get(t + Duration::from_millis(2001), 1).is_none());
        assert!(matches!(
            b.insert(t, 2, &[0; 1501]),
            Err(RtxError::PacketTooLarge { len: 1501, .. })
        ));
    }

    #[test]
    fn no_allocation_after_warmup() {
        let t = Instant::now();
        let mut b = buf(16);
        for s in 0..16u16 {
            b.insert(t, s, &pkt(s, &[0; 100])).unwrap();
        }
        let ptrs: Vec<_> = b.slots.iter().map(|s| s.data.as_ptr()).collect();
        for s in 16..200u16 {
            b.insert(t, s, &pkt(s, &[0; 1000])).unwrap();
        }
        let after: Vec<_> = b.slots.iter().map(|s| s.data.as_ptr()).collect();
        assert_eq!(ptrs, after);
    }

    #[test]
    fn nack_bitmask_throttle_and_cap() {
        let t = Instant::now();
        let mut b = RetransmissionBuffer::new(RetransmissionConfig {
            capacity: 64,
            max_resends_per_nack: 5,
            ..Default::default()
        });
        for s in 0..40u16 {
            b.insert(t, s, &pkt(s, &[])).unwrap();
        }
        let mut out = Vec::new();
        // pid 10, blp bits 0 and 2 => 10, 11, 13. Seq 50 not stored.
        assert_eq!(b.handle_nack(t, [(10, 0b101), (50, 0)], &mut out), 3);
        assert_eq!(out, vec![10, 11, 13]);
        // Asked again at once: throttled.
        assert_eq!(
            b.handle_nack(t + Duration::from_millis(50), [(10, 0)], &mut out),
            0
        );
        // After the interval: resent again.
        assert_eq!(
            b.handle_nack(t + Duration::from_millis(100), [(10, 0)], &mut out),
            1
        );
        // Duplicate within one message is sent once.
        assert_eq!(b.handle_nack(t, [(20, 0), (20, 0)], &mut out), 1);
        // Cap: 17 requested, 5 selected.
        assert_eq!(b.handle_nack(t, [(21, 0xFFFF)], &mut out), 5);
        assert_eq!(out, vec![21, 22, 23, 24, 25]);
        // RTT raises the throttle.
        b.set_rtt(Duration::from_millis(300));
        let t2 = t + Duration::from_millis(250);
        assert_eq!(b.handle_nack(t2, [(21, 0)], &mut out), 0);
        assert_eq!(
            b.handle_nack(t + Duration::from_millis(300), [(21, 0)], &mut out),
            1
        );
    }

    #[test]
    fn nack_wraps_around() {
        let t = Instant::now();
        let mut b = buf(16);
        for s in [65534u16, 65535, 0, 1] {
            b.insert(t, s, &pkt(s, &[])).unwrap();
        }
        let mut out = Vec::new();
        b.handle_nack(t, [(65535, 0b11)], &mut out);
        assert_eq!(out, vec![65535, 0, 1]);
    }

    #[test]
    fn rtx_roundtrip_keeps_extensions() {
        let orig = pkt(4242, &[0xDE, 0xAD, 0xBE]);
        let mut enc = RtxEncoder::new(0x5555, 97, 65535);
        let mut out = [0u8; 1500];
        let n = enc.encode(&orig, &mut out).unwrap();
        assert_eq!(n, orig.len() + 2);
        let rtx = RtpView::parse(&out[..n]).unwrap();
        assert_eq!(rtx.ssrc(), 0x5555);
        assert_eq!(rtx.payload_type(), 97);
        assert!(rtx.marker());
        assert_eq!(rtx.sequence_number(), 65535);
        assert_eq!(rtx.payload(), &[0x10, 0x92, 0xDE, 0xAD, 0xBE]);
        assert_eq!(rtx.transport_wide_seq(3), Some(0x0102));
        let n2 = enc.encode(&orig, &mut out[..]).unwrap();
        assert_eq!(RtpView::parse(&out[..n2]).unwrap().sequence_number(), 0);

        let mut back = [0u8; 1500];
        let m = rtx_decode(&out[..n2], 96, 1, &mut back).unwrap();
        assert_eq!(&back[..m], &orig[..]);
    }

    #[test]
    fn rtx_drops_padding() {
        let mut orig = pkt(7, &[1, 2]);
        orig[0] |= 0x20;
        orig.extend_from_slice(&[0, 0, 3]);
        let mut out = [0u8; 64];
        let n = rtx_encode(&orig, 1, 97, 1, &mut out).unwrap();
        let rtx = RtpView::parse(&out[..n]).unwrap();
        assert!(!rtx.has_padding());
        assert_eq!(rtx.payload(), &[0, 7, 1, 2]);
        // Padded RTX packet decodes without the padding.
        let mut padded = out[..n].to_vec();
        padded[0] |= 0x20;
        padded.extend_from_slice(&[0, 2]);
        let mut back = [0u8; 64];
        let m = rtx_decode(&padded, 96, 1, &mut back).unwrap();
        let o = RtpView::parse(&back[..m]).unwrap();
        assert!(!o.has_padding());
        assert_eq!(o.payload(), &[1, 2]);
        assert_eq!(o.sequence_number(), 7);
    }

    #[test]
    fn rtx_errors() {
        let orig = pkt(1, &[1, 2, 3]);
        let mut small = [0u8; 10];
        assert!(matches!(
            rtx_encode(&orig, 1, 97, 1, &mut small),
            Err(RtxError::BufferTooSmall { .. })
        ));
        assert!(matches!(
            rtx_encode(&[0u8; 5], 1, 97, 1, &mut [0u8; 64]),
            Err(RtxError::Rtp(RtpError::TooShort(5)))
        ));
        let mut enc = RtxEncoder::new(1, 97, 10);
        assert!(enc.encode(&orig, &mut small).is_err());
        let mut out = [0u8; 64];
        let n = enc.encode(&orig, &mut out).unwrap();
        assert_eq!(RtpView::parse(&out[..n]).unwrap().sequence_number(), 10);
        // Padding-only / 1-byte RTX payload has no OSN.
        let probe = pkt(1, &[9]);
        assert_eq!(
            rtx_decode(&probe, 96, 1, &mut out),
            Err(RtxError::MissingOsn)
        );
        let full = pkt(1, &[0, 5, 1, 2, 3]);
        assert!(matches!(
            rtx_decode(&full, 96, 1, &mut small),
            Err(RtxError::BufferTooSmall { .. })
        ));
    }

    /// Mirrors fuzz/fuzz_targets/rtp.rs with a seeded generator biased towards packets that
    /// parse (version 2, extension blocks in both forms), so `cargo test` exercises it too.
    #[test]
    fn random_packets_never_panic_and_keep_layout() {
        use crate::router::keyframe::{layer_info, VideoCodec, Vp8Rewriter};
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut data = [0u8; 64];
        let mut copy = [0u8; 64];
        let mut rtx = [0u8; 66];
        let mut back = [0u8; 66];
        let mut parsed = 0;
        for _ in 0..50_000 {
            let len = (next() % 65) as usize;
            for b in data.iter_mut() {
                *b = next() as u8;
            }
            let keep = if next() % 4 == 0 { 0x3F } else { 0x20 };
            data[0] = 0x80 | (data[0] & keep);
            if next() % 2 == 0 && len > 16 {
                data[0] = 0x90 | (data[0] & 0x20);
                let profile: u16 = if next() % 2 == 0 { 0xBEDE } else { 0x1000 };
                data[12..14].copy_from_slice(&profile.to_be_bytes());
                data[14] = 0;
                data[15] = (next() % 4) as u8;
            }
            let data = &data[..len];
            let Ok(view) = RtpView::parse(data) else {
                continue;
            };
            parsed += 1;
            for id in 0..=255u8 {
                let _ = view.extension(id);
            }
            for c in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264] {
                let _ = layer_info(c, view.payload());
            }
            let copy = &mut copy[..len];
            copy.copy_from_slice(data);
            let mut m = RtpView::parse(&mut copy[..]).unwrap();
            m.set_payload_type(0xFF);
            m.set_sequence_number(1);
            let _ = m.set_transport_wide_seq((next() % 15) as u8, 7);
            let mut map = [0u8; 256];
            for v in map.iter_mut() {
                *v = next() as u8;
            }
            m.remap_extension_ids(&map);
            let _ = Vp8Rewriter::new().rewrite(m.payload_mut());
            let again = RtpView::parse(&copy[..]).unwrap();
            assert_eq!(again.header_len(), view.header_len());
            assert_eq!(again.payload_len(), view.payload_len());
            let n = rtx_encode(data, 1, 97, 5, &mut rtx).unwrap();
            let k = rtx_decode(&rtx[..n], 96, 2, &mut back).unwrap();
            let orig = RtpView::parse(&back[..k]).unwrap();
            assert_eq!(orig.payload(), view.payload());
            assert_eq!(orig.sequence_number(), view.sequence_number());
        }
        assert!(
            parsed > 10_000,
            "generator must reach the parsed path ({parsed})"
        );
    }
}
