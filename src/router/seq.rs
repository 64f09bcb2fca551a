//! RTP packet view and per-consumer sequence/timestamp rewriting.
//!
//! This module owns three things on the per-packet forwarding path:
//!
//! * [`RtpView`]: a validated view over one RTP packet's bytes (RFC 3550) with in-place
//!   setters and RFC 8285 header-extension access (lookup, value read/write, id remapping).
//!   It never allocates and never copies the packet.
//! * [`SeqManager`]: mediasoup's sequence-number mapping (see `RTC/SeqManager.cpp`): dropped
//!   inputs leave no gap in the output, `sync` re-bases on a stream switch, serial-number
//!   arithmetic handles wraparound, memory is bounded. It also serves 15-bit VP8 PictureIDs
//!   and 8-bit TL0PICIDX values (see [`SeqManager::with_bits`]).
//! * [`TimestampRewriter`] and [`StreamRewriter`]: the state one consumer keeps so that pause/
//!   resume and simulcast layer switches produce one continuous outgoing stream.
//!
//! It does not own sockets, clocks, SRTP or RTCP: callers pass `now` and the packet bytes.

use std::collections::VecDeque;
use std::time::Instant;

/// Fixed RTP header length (RFC 3550 section 5.1) without CSRCs.
pub const RTP_HEADER_LEN: usize = 12;
/// Profile of the RFC 8285 one-byte header-extension form.
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// Profile of the RFC 8285 two-byte header-extension form (low 4 bits are "appbits").
pub const TWO_BYTE_PROFILE: u16 = 0x1000;

/// Why bytes are not a valid RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Fewer bytes than the fixed 12-byte header.
    #[error("packet too short: {0} bytes")]
    TooShort(usize),
    /// The version field is not 2.
    #[error("unsupported RTP version {0}")]
    BadVersion(u8),
    /// The CSRC list announced by the CC field runs past the end of the packet.
    #[error("CSRC list exceeds packet length")]
    CsrcOverflow,
    /// The header extension (its 4-byte header or announced length) runs past the end.
    #[error("header extension exceeds packet length")]
    ExtensionOverflow,
    /// The P bit is set but the padding count is zero or larger than the payload.
    #[error("invalid padding")]
    BadPadding,
}

/// Which RFC 8285 form a header-extension block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionForm {
    /// One-byte headers (profile 0xBEDE): ids 1..=14, values 1..=16 bytes.
    OneByte,
    /// Two-byte headers (profile 0x100X): ids 1..=255, values 0..=255 bytes.
    TwoByte,
    /// Some other profile: its contents are opaque to us.
    Other(u16),
}

/// A header extension block: `start..end` is the element area (after the 4-byte header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExtBlock {
    form: ExtensionForm,
    start: usize,
    end: usize,
}

/// One element found in an extension block: its header offset, id and value range.
#[derive(Debug, Clone, Copy)]
struct Elem {
    header: usize,
    id: u8,
    value_start: usize,
    value_end: usize,
}

/// Parses the element starting at or after `pos` in `buf[..end]`. Skips padding bytes.
/// Returns the element and the position after it, or `None` at the end of the block, on a
/// one-byte id 15 (RFC 8285: stop processing) or on a truncated element.
fn next_elem(buf: &[u8], mut pos: usize, end: usize, two_byte: bool) -> Option<(Elem, usize)> {
    while pos < end {
        let b = *buf.get(pos)?;
        if b == 0 {
            pos += 1;
            continue;
        }
        let (id, value_start, len) = if two_byte {
            let len = *buf.get(pos + 1).filter(|_| pos + 1 < end)? as usize;
            (b, pos + 2, len)
        } else {
            let id = b >> 4;
            if id == 15 {
                return None;
            }
            (id, pos + 1, (b & 0x0F) as usize + 1)
        };
        let value_end = value_start + len;
        if value_end > end {
            return None;
        }
        return Some((
            Elem {
                header: pos,
                id,
                value_start,
                value_end,
            },
            value_end,
        ));
    }
    None
}

/// A validated view over one RTP packet. `B` is the byte storage: `&[u8]` for reading,
/// `&mut [u8]` (or `Vec<u8>`, `BytesMut`) for the in-place setters. The view covers the whole
/// buffer: pass exactly the packet's bytes.
#[derive(Debug)]
pub struct RtpView<B> {
    buf: B,
    ext: Option<ExtBlock>,
    payload_start: usize,
    payload_end: usize,
}

impl<B: AsRef<[u8]>> RtpView<B> {
    /// Validates the header (version, CSRC count, extension length, padding) against the
    /// buffer length. Never panics.
    pub fn parse(buf: B) -> Result<Self, RtpError> {
        let b = buf.as_ref();
        let len = b.len();
        if len < RTP_HEADER_LEN {
            return Err(RtpError::TooShort(len));
        }
        let version = b[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let mut pos = RTP_HEADER_LEN + 4 * (b[0] & 0x0F) as usize;
        if pos > len {
            return Err(RtpError::CsrcOverflow);
        }
        let mut ext = None;
        if b[0] & 0x10 != 0 {
            if pos + 4 > len {
                return Err(RtpError::ExtensionOverflow);
            }
            let profile = u16::from_be_bytes([b[pos], b[pos + 1]]);
            let words = u16::from_be_bytes([b[pos + 2], b[pos + 3]]) as usize;
            let start = pos + 4;
            let end = start + 4 * words;
            if end > len {
                return Err(RtpError::ExtensionOverflow);
            }
            let form = if profile == ONE_BYTE_PROFILE {
                ExtensionForm::OneByte
            } else if profile & 0xFFF0 == TWO_BYTE_PROFILE {
                ExtensionForm::TwoByte
            } else {
                ExtensionForm::Other(profile)
            };
            ext = Some(ExtBlock { form, start, end });
            pos = end;
        }
        let mut payload_end = len;
        if b[0] & 0x20 != 0 {
            // RFC 3550: the last octet counts the padding, itself included.
            let pad = b[len - 1] as usize;
            if pad == 0 || pos + pad > len {
                return Err(RtpError::BadPadding);
            }
            payload_end = len - pad;
        }
        Ok(Self {
            buf,
            ext,
            payload_start: pos,
            payload_end,
        })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &[u8] {
        self.b()
    }

    /// Gives the storage back.
    pub fn into_inner(self) -> B {
        self.buf
    }

    /// Total packet length in bytes.
    pub fn len(&self) -> usize {
        self.b().len()
    }

    /// Always false: a parsed packet has at least a 12-byte header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Marker bit.
    pub fn marker(&self) -> bool {
        self.b()[1] & 0x80 != 0
    }

    /// Payload type (7 bits).
    pub fn payload_type(&self) -> u8 {
        self.b()[1] & 0x7F
    }

    /// Sequence number.
    pub fn sequence_number(&self) -> u16 {
        let b = self.b();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// Synchronization source.
    pub fn ssrc(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }

    /// Whether the P bit is set.
    pub fn has_padding(&self) -> bool {
        self.b()[0] & 0x20 != 0
    }

    /// Length of the header: fixed part, CSRCs and extension block.
    pub fn header_len(&self) -> usize {
        self.payload_start
    }

    /// Offset of the payload in the buffer.
    pub fn payload_offset(&self) -> usize {
        self.payload_start
    }

    /// Payload length, padding excluded.
    pub fn payload_len(&self) -> usize {
        self.payload_end - self.payload_start
    }

    /// The payload, padding excluded.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.payload_start..self.payload_end]
    }

    /// The header-extension form, if the packet has an extension block.
    pub fn extension_form(&self) -> Option<ExtensionForm> {
        self.ext.map(|e| e.form)
    }

    fn find_elem(&self, id: u8) -> Option<Elem> {
        let ext = self.ext?;
        let two = match ext.form {
            ExtensionForm::OneByte => false,
            ExtensionForm::TwoByte => true,
            ExtensionForm::Other(_) => return None,
        };
        if id == 0 {
            return None;
        }
        let mut pos = ext.start;
        while let Some((e, next)) = next_elem(self.b(), pos, ext.end, two) {
            if e.id == id {
                return Some(e);
            }
            pos = next;
        }
        None
    }

    /// Value of the RFC 8285 extension element with this id, if present.
    pub fn extension(&self, id: u8) -> Option<&[u8]> {
        let e = self.find_elem(id)?;
        Some(&self.b()[e.value_start..e.value_end])
    }

    /// Calls `f(id, value)` for each RFC 8285 element, in order.
    pub fn for_each_extension(&self, mut f: impl FnMut(u8, &[u8])) {
        let Some(ext) = self.ext else { return };
        let two = match ext.form {
            ExtensionForm::OneByte => false,
            ExtensionForm::TwoByte => true,
            ExtensionForm::Other(_) => return,
        };
        let mut pos = ext.start;
        while let Some((e, next)) = next_elem(self.b(), pos, ext.end, two) {
            f(e.id, &self.b()[e.value_start..e.value_end]);
            pos = next;
        }
    }

    /// An SDES string extension (mid, rid, repaired-rid) as UTF-8. Trailing NUL bytes, which
    /// some senders use to fill the value, are trimmed.
    pub fn sdes_str(&self, id: u8) -> Option<&str> {
        let v = self.extension(id)?;
        let trimmed_len = v.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
        let s = std::str::from_utf8(&v[..trimmed_len]).ok()?;
        (!s.is_empty()).then_some(s)
    }

    /// Transport-wide sequence number (draft-holmer-rmcat-transport-wide-cc-extensions-01).
    pub fn transport_wide_seq(&self, id: u8) -> Option<u16> {
        let v = self.extension(id)?;
        Some(u16::from_be_bytes([*v.first()?, *v.get(1)?]))
    }

    /// abs-send-time: 24-bit 6.18 fixed-point seconds.
    pub fn abs_send_time(&self, id: u8) -> Option<u32> {
        let v = self.extension(id)?;
        Some(u32::from_be_bytes([0, *v.first()?, *v.get(1)?, *v.get(2)?]))
    }

    /// RFC 6464 audio level: (voice activity flag, level in -dBov 0..=127).
    pub fn audio_level(&self, id: u8) -> Option<(bool, u8)> {
        let v = *self.extension(id)?.first()?;
        Some((v & 0x80 != 0, v & 0x7F))
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> RtpView<B> {
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// Mutable payload, padding excluded (e.g. for VP8 PictureID rewriting).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (s, e) = (self.payload_start, self.payload_end);
        &mut self.bm()[s..e]
    }

    /// Sets the marker bit.
    pub fn set_marker(&mut self, marker: bool) {
        let b = self.bm();
        b[1] = (b[1] & 0x7F) | if marker { 0x80 } else { 0 };
    }

    /// Sets the payload type (only the low 7 bits of `pt` are used).
    pub fn set_payload_type(&mut self, pt: u8) {
        let b = self.bm();
        b[1] = (b[1] & 0x80) | (pt & 0x7F);
    }

    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, seq: u16) {
        self.bm()[2..4].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the RTP timestamp.
    pub fn set_timestamp(&mut self, ts: u32) {
        self.bm()[4..8].copy_from_slice(&ts.to_be_bytes());
    }

    /// Sets the SSRC.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        self.bm()[8..12].copy_from_slice(&ssrc.to_be_bytes());
    }

    /// Mutable value of the extension element with this id, if present.
    pub fn extension_mut(&mut self, id: u8) -> Option<&mut [u8]> {
        let e = self.find_elem(id)?;
        Some(&mut self.bm()[e.value_start..e.value_end])
    }

    /// Writes a transport-wide sequence number into the existing extension element.
    /// Returns false when the packet has no such element (or it is shorter than 2 bytes).
    pub fn set_transport_wide_seq(&mut self, id: u8, seq: u16) -> bool {
        match self.extension_mut(id) {
            Some(v) if v.len() >= 2 => {
                v[..2].copy_from_slice(&seq.to_be_bytes());
                true
            }
            _ => false,
        }
    }

    /// Writes a 24-bit abs-send-time into the existing element; false if absent or short.
    pub fn set_abs_send_time(&mut self, id: u8, value: u32) -> bool {
        match self.extension_mut(id) {
            Some(v) if v.len() >= 3 => {
                v[..3].copy_from_slice(&value.to_be_bytes()[1..]);
                true
            }
            _ => false,
        }
    }

    /// Rewrites every RFC 8285 element id through `map` (`map[old] = new`, 0 = not mapped).
    ///
    /// Elements whose id is unmapped, or whose new id cannot be expressed in the block's form
    /// (one-byte ids are 1..=14), are erased by zeroing their header and value bytes: RFC 8285
    /// defines a zero byte as padding in both forms, and receivers (libwebrtc included) skip
    /// zero bytes one by one, so the erased element disappears without changing the block's
    /// length or shifting the payload. Reusing an id the receiver did not negotiate would be
    /// fragile (we do not know which ids are free on its side); padding is always safe.
    /// Blocks of other profiles are left alone. Never panics.
    pub fn remap_extension_ids(&mut self, map: &[u8; 256]) {
        let Some(ext) = self.ext else { return };
        let two = match ext.form {
            ExtensionForm::OneByte => false,
            ExtensionForm::TwoByte => true,
            ExtensionForm::Other(_) => return,
        };
        let mut pos = ext.start;
        while let Some((e, next)) = next_elem(self.b(), pos, ext.end, two) {
            let new = map[e.id as usize];
            let b = self.bm();
            if two && new != 0 {
                b[e.header] = new;
            } else if !two && (1..=14).contains(&new) {
                b[e.header] = (new << 4) | (b[e.header] & 0x0F);
            } else {
                b[e.header..e.value_end].fill(0);
            }
            pos = next;
        }
    }
}

/// Serial-number "a is newer than b" for values of `mask`'s width (RFC 1982 style).
#[inline]
fn is_newer(a: u16, b: u16, mask: u16) -> bool {
    let d = a.wrapping_sub(b) & mask;
    d != 0 && d <= mask / 2
}

/// `a` is newer than `b` in 16-bit serial arithmetic (e.g. 0 is newer than 65000).
#[inline]
pub fn seq_is_newer(a: u16, b: u16) -> bool {
    is_newer(a, b, u16::MAX)
}

/// `a` is newer than `b` in 32-bit serial arithmetic (RTP timestamps).
#[inline]
pub fn ts_is_newer(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d <= u32::MAX / 2
}

/// How many dropped inputs a [`SeqManager`] remembers; older ones are forgotten and inputs
/// at or before them are refused (they could no longer be mapped correctly).
pub const SEQ_MANAGER_MAX_DROPPED: usize = 512;

/// Maps input sequence numbers (of `bits` width) to output numbers, mediasoup-style.
///
/// * Inputs announced with [`drop`](Self::drop) leave no gap: later outputs shift down.
/// * [`sync`](Self::sync)`(x)` re-bases so that input `x + 1` maps to the last output + 1.
/// * A late input older than a dropped one still maps to its original place; a late input
///   that was itself dropped, or that is older than the remembered drops, is refused.
///
/// Memory is bounded: at most [`SEQ_MANAGER_MAX_DROPPED`] drops preallocated, no allocation
/// after construction.
#[derive(Debug, Clone)]
pub struct SeqManager {
    mask: u16,
    /// Offset for inputs newer than every remembered drop (already minus those drops).
    base: u16,
    max_input: u16,
    max_output: u16,
    started: bool,
    /// Dropped inputs, oldest first, all newer than `floor` and not newer than `max_input`.
    dropped: VecDeque<u16>,
    /// Newest forgotten drop: late inputs at or before it are refused.
    floor: Option<u16>,
}

impl Default for SeqManager {
    fn default() -> Self {
        Self::new()
    }
}

impl SeqManager {
    /// A 16-bit manager (RTP sequence numbers). Before any `sync`, output = input.
    pub fn new() -> Self {
        Self::with_bits(16)
    }

    /// A manager for `bits`-wide numbers, `bits` clamped to 1..=16 (15 for VP8 PictureID,
    /// 8 for TL0PICIDX).
    pub fn with_bits(bits: u32) -> Self {
        let bits = bits.clamp(1, 16);
        Self {
            mask: (u32::MAX >> (32 - bits)) as u16,
            base: 0,
            max_input: 0,
            max_output: 0,
            started: false,
            dropped: VecDeque::with_capacity(SEQ_MANAGER_MAX_DROPPED),
            floor: None,
        }
    }

    /// Like [`with_bits`](Self::with_bits), but an initial `sync` yields `first_output` first
    /// (mediasoup consumers start their outgoing sequence at a random value).
    pub fn with_initial_output(bits: u32, first_output: u16) -> Self {
        let mut m = Self::with_bits(bits);
        m.max_output = first_output.wrapping_sub(1) & m.mask;
        m
    }

    /// Largest input seen (forwarded or dropped).
    pub fn max_input(&self) -> u16 {
        self.max_input
    }

    /// Largest output produced so far.
    pub fn max_output(&self) -> u16 {
        self.max_output
    }

    /// Maps `input`; `None` if it must not be forwarded (it was dropped, or is too old to be
    /// mapped correctly).
    pub fn input(&mut self, input: u16) -> Option<u16> {
        let m = self.mask;
        let input = input & m;
        // Drops are never newer than `max_input`, so a newer input skips the drop bookkeeping
        // (and serial comparisons across more than half the range never happen).
        let mut newer_drops: u16 = 0;
        if self.started && !is_newer(input, self.max_input, m) {
            let behind = self.max_input.wrapping_sub(input) & m;
            if let Some(floor) = self.floor {
                if behind >= self.max_input.wrapping_sub(floor) & m {
                    return None;
                }
            }
            // Count drops newer than `input`: they did not shift it. Few iterations: late
            // packets are usually only slightly late.
            for &d in self.dropped.iter().rev() {
                if d == input {
                    return None;
                }
                if !is_newer(d, input, m) {
                    break;
                }
                newer_drops = newer_drops.wrapping_add(1);
            }
        }
        let output = input.wrapping_add(self.base).wrapping_add(newer_drops) & m;
        if !self.started {
            self.started = true;
            self.max_input = input;
            self.max_output = output;
        } else {
            if is_newer(input, self.max_input, m) {
                self.max_input = input;
                self.forget_old_drops();
            }
            if is_newer(output, self.max_output, m) {
                self.max_output = output;
            }
        }
        Some(output)
    }

    /// Marks `input` as not forwarded so it leaves no gap. Only inputs newer than every input
    /// seen so far are recorded (older ones already have outputs around them).
    pub fn drop(&mut self, input: u16) {
        let m = self.mask;
        let input = input & m;
        if self.started && !is_newer(input, self.max_input, m) {
            return;
        }
        if !self.started {
            // Treat as the first input seen: the next input continues as if it followed it.
            self.started = true;
            self.max_output = input.wrapping_add(self.base).wrapping_sub(1) & m;
        }
        self.max_input = input;
        self.base = self.base.wrapping_sub(1) & m;
        if self.dropped.len() == SEQ_MANAGER_MAX_DROPPED {
            self.floor = self.dropped.pop_front();
        }
        self.dropped.push_back(input);
        self.forget_old_drops();
    }

    /// Re-bases after a stream switch: input `input + 1` will map to `max_output + 1`.
    /// mediasoup calls this with (first sequence number of the new stream) - 1.
    pub fn sync(&mut self, input: u16) {
        let m = self.mask;
        let input = input & m;
        self.base = self.max_output.wrapping_sub(input) & m;
        self.max_input = input;
        self.started = true;
        self.dropped.clear();
        self.floor = None;
    }

    /// Forgets drops so old that serial comparisons with them become ambiguous.
    fn forget_old_drops(&mut self) {
        let m = self.mask;
        let window = m / 4;
        while let Some(&d) = self.dropped.front() {
            if self.max_input.wrapping_sub(d) & m > window {
                self.floor = Some(d);
                self.dropped.pop_front();
            } else {
                break;
            }
        }
        if let Some(f) = self.floor {
            if self.max_input.wrapping_sub(f) & m > m / 2 {
                self.floor = None;
            }
        }
    }
}

/// Rewrites RTP timestamps so the output stays continuous across source switches.
///
/// On the first packet after [`request_sync`](Self::request_sync) the output timestamp
/// continues from the last output timestamp plus the wall-clock time elapsed since that
/// timestamp was first sent, in clock-rate units (at least 1 tick so it moves forward).
#[derive(Debug, Clone)]
pub struct TimestampRewriter {
    clock_rate: u32,
    offset: u32,
    sync_pending: bool,
    /// Newest output timestamp and when it was first produced.
    last: Option<(u32, Instant)>,
}

impl TimestampRewriter {
    /// A rewriter for a stream with this clock rate (Hz). The first source passes through
    /// unchanged (offset 0), as mediasoup does.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            offset: 0,
            sync_pending: false,
            last: None,
        }
    }

    /// The next timestamp comes from a new source (layer switch, resume).
    pub fn request_sync(&mut self) {
        self.sync_pending = true;
    }

    /// Newest output timestamp so far.
    pub fn last_output(&self) -> Option<u32> {
        self.last.map(|(ts, _)| ts)
    }

    /// Maps an input timestamp to the output timestamp.
    pub fn rewrite(&mut self, now: Instant, ts: u32) -> u32 {
        if self.sync_pending {
            self.sync_pending = false;
            if let Some((last_ts, at)) = self.last {
                let nanos = now.saturating_duration_since(at).as_nanos();
                let ticks = nanos * self.clock_rate as u128 / 1_000_000_000;
                // Cap at a quarter of the range so the new timestamp stays "newer".
                let ticks = ticks.clamp(1, (u32::MAX / 4) as u128) as u32;
                self.offset = last_ts.wrapping_add(ticks).wrapping_sub(ts);
            }
        }
        let out = ts.wrapping_add(self.offset);
        match self.last {
            Some((last_ts, _)) if !ts_is_newer(out, last_ts) => {}
            _ => self.last = Some((out, now)),
        }
        out
    }
}

/// What [`StreamRewriter::rewrite`] wrote into a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Output sequence number.
    pub seq: u16,
    /// Output timestamp.
    pub timestamp: u32,
}

/// Per-consumer outgoing stream state: rewrites ssrc, payload type, sequence number and
/// timestamp of forwarded packets in place.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    ssrc: u32,
    seq: SeqManager,
    ts: TimestampRewriter,
    sync_pending: bool,
}

impl StreamRewriter {
    /// `ssrc` of the outgoing stream, its `clock_rate`, and the first outgoing sequence
    /// number (mediasoup picks it at random).
    pub fn new(ssrc: u32, clock_rate: u32, first_seq: u16) -> Self {
        Self {
            ssrc,
            seq: SeqManager::with_initial_output(16, first_seq),
            ts: TimestampRewriter::new(clock_rate),
            sync_pending: true,
        }
    }

    /// Outgoing SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The next packet starts a new source (simulcast switch, resume after pause, producer
    /// replaced): its sequence number continues from the last output + 1 and its timestamp
    /// from the last output timestamp + elapsed time.
    pub fn request_sync(&mut self) {
        self.sync_pending = true;
        self.ts.request_sync();
    }

    /// An input packet of the current source is not forwarded: the output leaves no gap.
    pub fn drop_input(&mut self, seq: u16) {
        if !self.sync_pending {
            self.seq.drop(seq);
        }
    }

    /// Rewrites `pkt` in place for this consumer. `None` means the packet must not be sent
    /// (its input sequence number was dropped or is too old to map).
    pub fn rewrite<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        now: Instant,
        pkt: &mut RtpView<B>,
        payload_type: u8,
    ) -> Option<Rewritten> {
        let in_seq = pkt.sequence_number();
        if self.sync_pending {
            self.sync_pending = false;
            self.seq.sync(in_seq.wrapping_sub(1));
        }
        let seq = self.seq.input(in_seq)?;
        let timestamp = self.ts.rewrite(now, pkt.timestamp());
        pkt.set_ssrc(self.ssrc);
        pkt.set_payload_type(payload_type);
        pkt.set_sequence_number(seq);
        pkt.set_timestamp(timestamp);
        Some(Rewritten { seq, timestamp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Builds a packet: header, optional extension block (profile, element bytes padded to
    /// 32 bits), payload, optional padding.
    fn packet(ext: Option<(u16, &[u8])>, payload: &[u8], pad: u8) -> Vec<u8> {
        let mut v = vec![0x80, 96, 0x12, 0x34, 0, 0, 0x10, 0, 0xAA, 0xBB, 0xCC, 0xDD];
        if let Some((profile, elems)) = ext {
            v[0] |= 0x10;
            let words = elems.len().div_ceil(4);
            v.extend_from_slice(&profile.to_be_bytes());
            v.extend_from_slice(&(words as u16).to_be_bytes());
            v.extend_from_slice(elems);
            v.resize(v.len() + words * 4 - elems.len(), 0);
        }
        v.extend_from_slice(payload);
        if pad > 0 {
            v[0] |= 0x20;
            v.resize(v.len() + pad as usize - 1, 0);
            v.push(pad);
        }
        v
    }

    #[test]
    fn parses_basic_fields_and_setters() {
        let mut buf = packet(None, &[1, 2, 3], 0);
        let mut p = RtpView::parse(&mut buf[..]).unwrap();
        assert_eq!(p.payload_type(), 96);
        assert!(!p.marker());
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 0x1000);
        assert_eq!(p.ssrc(), 0xAABBCCDD);
        assert_eq!(p.payload(), &[1, 2, 3]);
        p.set_marker(true);
        p.set_payload_type(0xFF);
        p.set_sequence_number(65535);
        p.set_timestamp(7);
        p.set_ssrc(9);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 0x7F);
        assert_eq!(p.sequence_number(), 65535);
        assert_eq!(p.timestamp(), 7);
        assert_eq!(p.ssrc(), 9);
        p.set_marker(false);
        assert!(!p.marker());
        assert_eq!(p.payload_type(), 0x7F);
        assert_eq!(p.payload(), &[1, 2, 3]);
    }

    #[test]
    fn padding_excluded_from_payload() {
        let buf = packet(None, &[9, 9], 4);
        let p = RtpView::parse(&buf[..]).unwrap();
        assert_eq!(p.payload(), &[9, 9]);
        assert_eq!(p.payload_len(), 2);
        assert!(p.has_padding());
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            RtpView::parse(&[0x80u8; 11][..]).unwrap_err(),
            RtpError::TooShort(11)
        );
        let mut b = packet(None, &[], 0);
        b[0] = 0x40;
        assert_eq!(RtpView::parse(&b[..]).unwrap_err(), RtpError::BadVersion(1));
        let mut b = packet(None, &[0; 4], 0);
        b[0] = 0x82; // 2 CSRCs = 8 bytes, only 4 present.
        assert_eq!(RtpView::parse(&b[..]).unwrap_err(), RtpError::CsrcOverflow);
        let mut b = packet(Some((ONE_BYTE_PROFILE, &[0x10, 1])), &[], 0);
        b[15] = 5; // 5 words announced.
        assert_eq!(
            RtpView::parse(&b[..]).unwrap_err(),
            RtpError::ExtensionOverflow
        );
        let mut b = packet(None, &[], 0);
        b[0] |= 0x10; // X set but no room for the extension header.
        assert_eq!(
            RtpView::parse(&b[..]).unwrap_err(),
            RtpError::ExtensionOverflow
        );
        let mut b = packet(None, &[1, 2], 0);
        b[0] |= 0x20; // padding count 2 covers payload only: fine.
        assert_eq!(RtpView::parse(&b[..]).unwrap().payload_len(), 0);
        *b.last_mut().unwrap() = 3; // would eat into the header.
        assert_eq!(RtpView::parse(&b[..]).unwrap_err(), RtpError::BadPadding);
        *b.last_mut().unwrap() = 0;
        assert_eq!(RtpView::parse(&b[..]).unwrap_err(), RtpError::BadPadding);
    }

    #[test]
    fn csrcs_shift_payload() {
        let mut b = packet(None, &[0; 8], 0);
        b[0] = 0x81;
        let p = RtpView::parse(&b[..]).unwrap();
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.payload_len(), 4);
    }

    #[test]
    fn one_byte_extensions() {
        // id 1: mid "ab" (len 2), padding byte, id 3: twcc 0x0102, id 5: audio level.
        let elems = [0x11, b'a', b'b', 0x00, 0x31, 0x01, 0x02, 0x50, 0x85];
        let mut b = packet(Some((ONE_BYTE_PROFILE, &elems)), &[7], 0);
        let mut p = RtpView::parse(&mut b[..]).unwrap();
        assert_eq!(p.extension_form(), Some(ExtensionForm::OneByte));
        assert_eq!(p.sdes_str(1), Some("ab"));
        assert_eq!(p.transport_wide_seq(3), Some(0x0102));
        assert_eq!(p.audio_level(5), Some((true, 5)));
        assert_eq!(p.extension(2), None);
        assert_eq!(p.extension(0), None);
        assert!(p.set_transport_wide_seq(3, 0xBEEF));
        assert_eq!(p.transport_wide_seq(3), Some(0xBEEF));
        assert!(!p.set_transport_wide_seq(4, 1));
        assert!(!p.set_transport_wide_seq(5, 1)); // 1-byte value: too short.
        assert_eq!(p.payload(), &[7]);
        let mut seen = Vec::new();
        p.for_each_extension(|id, v| seen.push((id, v.len())));
        assert_eq!(seen, vec![(1, 2), (3, 2), (5, 1)]);
    }

    #[test]
    fn one_byte_id_15_stops_and_truncated_element_ignored() {
        let elems = [0xF0, 0x11, 1, 2];
        let b = packet(Some((ONE_BYTE_PROFILE, &elems)), &[], 0);
        let p = RtpView::parse(&b[..]).unwrap();
        assert_eq!(p.extension(1), None);
        // id 2 claims 16 bytes in a 4-byte block.
        let b = packet(Some((ONE_BYTE_PROFILE, &[0x2F, 0, 0, 0])), &[], 0);
        assert_eq!(RtpView::parse(&b[..]).unwrap().extension(2), None);
    }

    #[test]
    fn two_byte_extensions_and_abs_send_time() {
        // id 20 len 3 abs-send-time, id 200 len 0, id 7 len 2.
        let elems = [20, 3, 0x12, 0x34, 0x56, 200, 0, 7, 2, 0xAB, 0xCD];
        let mut b = packet(Some((0x1001, &elems)), &[1], 0);
        let mut p = RtpView::parse(&mut b[..]).unwrap();
        assert_eq!(p.extension_form(), Some(ExtensionForm::TwoByte));
        assert_eq!(p.abs_send_time(20), Some(0x123456));
        assert_eq!(p.extension(200), Some(&[][..]));
        assert_eq!(p.transport_wide_seq(7), Some(0xABCD));
        assert!(p.set_abs_send_time(20, 0xFF_000001));
        assert_eq!(p.abs_send_time(20), Some(0x000001));
        // A two-byte element whose length byte is outside the block.
        let b = packet(Some((0x1000, &[0, 0, 0, 9])), &[], 0);
        assert_eq!(RtpView::parse(&b[..]).unwrap().extension(9), None);
    }

    #[test]
    fn unknown_profile_is_opaque() {
        let b = packet(Some((0x1234, &[0x11, 1, 2, 3])), &[], 0);
        let p = RtpView::parse(&b[..]).unwrap();
        assert_eq!(p.extension_form(), Some(ExtensionForm::Other(0x1234)));
        assert_eq!(p.extension(1), None);
    }

    #[test]
    fn remap_one_byte_ids_and_erase_unknown() {
        let elems = [0x11, b'a', b'b', 0x31, 0x01, 0x02, 0x50, 0x85];
        let mut b = packet(Some((ONE_BYTE_PROFILE, &elems)), &[7], 0);
        let mut map = [0u8; 256];
        map[1] = 4; // mid 1 -> 4
        map[3] = 3; // twcc stays
        map[5] = 15; // not expressible in one-byte form: erased
        let mut p = RtpView::parse(&mut b[..]).unwrap();
        p.remap_extension_ids(&map);
        assert_eq!(p.sdes_str(4), Some("ab"));
        assert_eq!(p.extension(1), None);
        assert_eq!(p.transport_wide_seq(3), Some(0x0102));
        assert_eq!(p.extension(5), None);
        assert_eq!(p.payload(), &[7]);
        let mut n = 0;
        p.for_each_extension(|_, _| n += 1);
        assert_eq!(n, 2);
        // Still parses identically from scratch (no shifting).
        let q = RtpView::parse(p.as_bytes()).unwrap();
        assert_eq!(q.sdes_str(4), Some("ab"));
    }

    #[test]
    fn remap_two_byte_ids() {
        let elems = [20, 3, 1, 2, 3, 7, 2, 0xAB, 0xCD];
        let mut b = packet(Some((0x1000, &elems)), &[], 0);
        let mut map = [0u8; 256];
        map[7] = 250;
        let mut p = RtpView::parse(&mut b[..]).unwrap();
        p.remap_extension_ids(&map);
        assert_eq!(p.extension(20), None);
        assert_eq!(p.transport_wide_seq(250), Some(0xABCD));
    }

    #[test]
    fn sdes_rejects_invalid_utf8_and_trims_nul() {
        let b = packet(Some((ONE_BYTE_PROFILE, &[0x12, b'r', 0, 0])), &[], 0);
        assert_eq!(RtpView::parse(&b[..]).unwrap().sdes_str(1), Some("r"));
        let b = packet(Some((ONE_BYTE_PROFILE, &[0x11, 0xFF, 0xFE])), &[], 0);
        assert_eq!(RtpView::parse(&b[..]).unwrap().sdes_str(1), None);
    }

    #[test]
    fn serial_comparisons() {
        assert!(seq_is_newer(0, 65000));
        assert!(!seq_is_newer(65000, 0));
        assert!(!seq_is_newer(5, 5));
        assert!(is_newer(0, 32500, 0x7FFF));
        assert!(ts_is_newer(1, u32::MAX));
    }

    /// (input, expected output or None for a drop, sync before?) as in TestSeqManager.cpp.
    fn run(m: &mut SeqManager, steps: &[(u16, Option<u16>, bool)]) {
        for &(input, out, sync) in steps {
            if sync {
                m.sync(input.wrapping_sub(1));
            }
            match out {
                None => m.drop(input),
                Some(o) => assert_eq!(m.input(input), Some(o), "input {input}"),
            }
        }
    }

    #[test]
    fn seq_ordered_and_sync() {
        let mut m = SeqManager::new();
        run(
            &mut m,
            &[
                (0, Some(0), false),
                (1, Some(1), false),
                (2, Some(2), false),
                (80, Some(3), true),
                (81, Some(4), false),
            ],
        );
    }

    #[test]
    fn seq_drops_leave_no_gap() {
        let mut m = SeqManager::new();
        run(
            &mut m,
            &[
                (0, Some(0), false),
                (1, Some(1), false),
                (6, Some(2), true),
                (7, Some(3), false),
                (8, None, false),
                (9, Some(4), false),
                (11, None, false),
                (10, Some(5), false),
                (12, Some(6), false),
            ],
        );
    }

    #[test]
    fn seq_late_packet_older_than_drop_and_dropped_refused() {
        let mut m = SeqManager::new();
        run(
            &mut m,
            &[
                (0, Some(0), false),
                (2, None, false),
                (3, Some(2), false),
                (4, Some(3), false),
                (1, Some(1), false),
            ],
        );
        assert_eq!(m.input(2), None);
        // Big jump with drops before and after.
        let mut m = SeqManager::new();
        run(
            &mut m,
            &[
                (0, Some(0), false),
                (1, None, false),
                (100, Some(99), false),
                (100, Some(99), false),
                (103, None, false),
                (101, Some(100), false),
            ],
        );
    }

    #[test]
    fn seq_wraparound_with_sync_and_drop() {
        let mut m = SeqManager::new();
        run(
            &mut m,
            &[
                (65530, Some(1), true),
                (65531, Some(2), false),
                (65532, Some(3), false),
                (65533, None, false),
                (65534, None, false),
                (65535, Some(4), false),
                (0, Some(5), false),
                (1, Some(6), false),
            ],
        );
        let mut m = SeqManager::new();
        run(
            &mut m,
            &[
                (65534, Some(65534), false),
                (65535, Some(65535), false),
                (0, Some(0), false),
            ],
        );
    }

    #[test]
    fn seq_15_and_8_bit_wrap() {
        let mut m = SeqManager::with_bits(15);
        run(
            &mut m,
            &[
                (32762, Some(1), true),
                (32763, Some(2), false),
                (32765, None, false),
                (32766, None, false),
                // 32764 was lost (not dropped): its gap stays.
                (32767, Some(4), false),
                (0, Some(5), false),
                (1, Some(6), false),
            ],
        );
        let mut m = SeqManager::with_bits(8);
        run(
            &mut m,
            &[
                (1, Some(1), false),
                (2, None, false),
                (3, None, false),
                (120, Some(118), false),
            ],
        );
        assert_eq!(m.input(200), Some(198));
        assert_eq!(m.input(255), Some(253));
        assert_eq!(m.input(0), Some(254));
        // Inputs wider than the width are masked.
        assert_eq!(m.input(0x101), Some(255));
    }

    #[test]
    fn seq_far_ahead_input_ignores_remembered_drops() {
        // 8-bit: drops stay remembered while a new input jumps almost half the range ahead;
        // comparing it with those drops would wrap and miscount.
        let mut m = SeqManager::with_bits(8);
        assert_eq!(m.input(0), Some(0));
        for i in 1..=10 {
            m.drop(i);
        }
        assert_eq!(m.input(60), Some(50));
        assert_eq!(m.input(187), Some(177));
        // Late, but after every drop: still maps correctly.
        assert_eq!(m.input(59), Some(49));
    }

    #[test]
    fn seq_many_drops_memory_bounded_and_old_refused() {
        let mut m = SeqManager::new();
        assert_eq!(m.input(0), Some(0));
        // Drop every odd input for a long stretch.
        for i in 1..5000u16 {
            if i % 2 == 1 {
                m.drop(i);
            } else {
                assert_eq!(m.input(i), Some(i / 2));
            }
        }
        assert!(m.dropped.len() <= SEQ_MANAGER_MAX_DROPPED);
        assert!(m.dropped.capacity() <= SEQ_MANAGER_MAX_DROPPED * 2);
        // A very late packet before the remembered drops is refused, not mis-mapped.
        assert_eq!(m.input(2), None);
        // Recent late packets still map.
        assert_eq!(m.input(4996), Some(2498));
    }

    #[test]
    fn seq_drop_before_start() {
        let mut m = SeqManager::with_initial_output(16, 100);
        m.sync(9);
        m.drop(10);
        assert_eq!(m.input(11), Some(100));
        let mut m = SeqManager::new();
        m.drop(5);
        assert_eq!(m.input(6), Some(5));
    }

    #[test]
    fn timestamp_continues_with_elapsed_time() {
        let t0 = Instant::now();
        let mut r = TimestampRewriter::new(90_000);
        assert_eq!(r.rewrite(t0, 1000), 1000);
        assert_eq!(r.rewrite(t0 + Duration::from_millis(10), 1900), 1900);
        // Same frame's later packet does not move the reference time.
        assert_eq!(r.rewrite(t0 + Duration::from_millis(15), 1900), 1900);
        r.request_sync();
        // 100 ms after ts 1900 was first sent: +9000 ticks.
        let out = r.rewrite(t0 + Duration::from_millis(110), 5_000_000);
        assert_eq!(out, 1900 + 9000);
        assert_eq!(
            r.rewrite(t0 + Duration::from_millis(120), 5_000_900),
            1900 + 9900
        );
        // Immediate switch still moves forward by one tick.
        r.request_sync();
        assert_eq!(r.rewrite(t0 + Duration::from_millis(110), 42), 1900 + 9901);
    }

    #[test]
    fn timestamp_wraps() {
        let t0 = Instant::now();
        let mut r = TimestampRewriter::new(48_000);
        assert_eq!(r.rewrite(t0, u32::MAX - 10), u32::MAX - 10);
        r.request_sync();
        assert_eq!(r.rewrite(t0 + Duration::from_millis(1), 77), 37);
        assert_eq!(r.last_output(), Some(37));
    }

    #[test]
    fn stream_rewriter_switch_keeps_continuity() {
        let t0 = Instant::now();
        let mut s = StreamRewriter::new(0x1111, 90_000, 500);
        let mut out = Vec::new();
        for (i, seq) in [10u16, 11, 12].iter().enumerate() {
            let mut b = packet(None, &[0], 0);
            b[2..4].copy_from_slice(&seq.to_be_bytes());
            b[4..8].copy_from_slice(&(3000 * i as u32).to_be_bytes());
            let mut p = RtpView::parse(&mut b[..]).unwrap();
            let r = s.rewrite(t0 + Duration::from_millis(33 * i as u64), &mut p, 101);
            out.push(r.unwrap());
            assert_eq!(p.ssrc(), 0x1111);
            assert_eq!(p.payload_type(), 101);
        }
        assert_eq!(out[0].seq, 500);
        assert_eq!(out[2].seq, 502);
        s.drop_input(13);
        s.request_sync();
        let mut b = packet(None, &[0], 0);
        b[2..4].copy_from_slice(&60000u16.to_be_bytes());
        let mut p = RtpView::parse(&mut b[..]).unwrap();
        let r = s
            .rewrite(t0 + Duration::from_millis(100), &mut p, 101)
            .unwrap();
        assert_eq!(r.seq, 503);
        assert_eq!(r.timestamp, 6000 + 90 * 34);
        assert_eq!(p.sequence_number(), 503);
        assert_eq!(p.timestamp(), r.timestamp);
    }
}
