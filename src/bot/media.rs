//! Synthetic media sources for the bot: Opus-shaped audio and VP8-shaped video, written as
//! complete RTP packets (header, optional RFC 8285 one-byte extensions, payload; no SRTP) into a
//! caller buffer.
//!
//! The payloads are not decodable media, but every byte a middlebox looks at is well formed: the
//! Opus TOC byte (RFC 6716 §3.1), the VP8 payload descriptor and payload header (RFC 7741 §4.2,
//! §4.3, with a keyframe start code and dimensions), marker bits, per-frame timestamps, and the
//! `mid` / `rid` / transport-wide-cc / abs-send-time extensions. So the node's keyframe detection,
//! simulcast/SVC logic and bandwidth estimation see what a browser would send.
//!
//! Each packet carries a 16-byte [`Probe`] (magic, sender wall clock, frame counter) at a fixed
//! place the codec format allows, which [`read_probe`] finds on the receiving side to measure
//! one-way latency (see `super::stats`).
//!
//! Drive rule: a source never reads the clock. Ask [`AudioSource::next_packet_time`] (or the
//! video one) when to wake up, then call `poll(now, wall_us, ..)` until it returns `Ok(None)`.
//! Virtual time starts at the `now` passed to `new`; if the caller falls behind by more than
//! [`BOT_MAX_CATCH_UP`], the missed frames are skipped (RTP timestamps still advance, as after a
//! sender stall) instead of being sent in one burst.
//!
//! This module owns packetisation only; it may not touch sockets, SRTP or the clock.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::router::seq::ONE_BYTE_PROFILE;
use crate::timing::BOT_MAX_CATCH_UP;

/// Size of a fixed RTP header without CSRCs (the router's constant, re-exported).
pub use crate::router::seq::RTP_HEADER_LEN;

/// Magic at the start of every [`Probe`].
pub const PROBE_MAGIC: [u8; 4] = *b"PMSH";
/// Size of an encoded [`Probe`]: magic (4), wall-clock microseconds (8, big endian), frame
/// counter (4, big endian).
pub const PROBE_LEN: usize = 16;
/// RTP clock rate of Opus (RFC 7587 §4.1: always 48 kHz).
pub const OPUS_CLOCK_RATE: u32 = 48_000;
/// RTP clock rate of VP8 (RFC 7741 §6.1).
pub const VP8_CLOCK_RATE: u32 = 90_000;
/// Duration of one Opus packet produced by [`AudioSource`].
pub const OPUS_FRAME_DURATION: Duration = Duration::from_millis(20);
/// RTP timestamp increment of one 20 ms Opus packet.
pub const OPUS_FRAME_TICKS: u32 = 960;

/// Opus TOC configuration 31: CELT-only, fullband, 20 ms frames (RFC 6716 Table 2).
const OPUS_CONFIG_CELT_FB_20MS: u8 = 31;
/// Size of the VP8 payload descriptor we write: required byte, X byte, 15-bit PictureID.
const VP8_DESCRIPTOR_LEN: usize = 4;
/// VP8 payload header of an interframe (RFC 7741 §4.3).
const VP8_INTER_HEADER_LEN: usize = 3;
/// VP8 payload header plus start code and dimensions of a keyframe (RFC 6386 §9.1).
const VP8_KEY_HEADER_LEN: usize = 10;
/// VP8 keyframe start code (RFC 6386 §9.1).
const VP8_START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];
/// Keyframes are this many times the average frame size, roughly what libvpx produces.
const KEYFRAME_SIZE_FACTOR: usize = 4;

/// Errors of source configuration and packet writing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// A header extension id outside 1..=14, the range of the RFC 8285 one-byte form.
    #[error("header extension id {0} outside 1..=14")]
    InvalidExtensionId(u8),
    /// Two header extensions were configured with the same id.
    #[error("header extension id {0} configured twice")]
    DuplicateExtensionId(u8),
    /// The MID (or RID) must be 1..=16 bytes to fit one one-byte extension element.
    #[error("mid or rid of {0} bytes does not fit a one-byte extension (1..=16)")]
    InvalidMid(usize),
    /// An RTP payload type must be at most 127.
    #[error("payload type {0} above 127")]
    InvalidPayloadType(u8),
    /// The video frame rate must be in 1..=240.
    #[error("frame rate {0} outside 1..=240")]
    InvalidFrameRate(u32),
    /// The video bitrate must be non-zero.
    #[error("video bitrate must be non-zero")]
    InvalidBitrate,
    /// VP8 dimensions are 14-bit and must be non-zero.
    #[error("video size {width}x{height} outside 1..=16383")]
    InvalidDimensions {
        /// Configured width.
        width: u16,
        /// Configured height.
        height: u16,
    },
    /// The maximum video payload must leave room for descriptor, frame header and probe.
    #[error("max payload {0} below the minimum of 64 bytes")]
    MaxPayloadTooSmall(usize),
    /// The audio payload must hold the TOC byte and the probe and stay under 1200 bytes.
    #[error("audio payload size {0} outside 17..=1200")]
    InvalidPayloadSize(usize),
    /// The caller's buffer cannot hold the next packet; nothing was consumed, retry with a
    /// larger buffer.
    #[error("buffer of {available} bytes cannot hold a {needed}-byte packet")]
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

/// Send-time probe embedded in every synthetic payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Sender wall clock when the packet was written, microseconds since the UNIX epoch.
    pub wall_us: u64,
    /// Per-source frame counter (one per Opus packet, one per VP8 frame), wrapping.
    pub frame: u32,
}

impl Probe {
    /// Encodes the probe into its 16-byte wire form.
    pub fn encode(&self) -> [u8; PROBE_LEN] {
        let mut out = [0u8; PROBE_LEN];
        out[..4].copy_from_slice(&PROBE_MAGIC);
        out[4..12].copy_from_slice(&self.wall_us.to_be_bytes());
        out[12..16].copy_from_slice(&self.frame.to_be_bytes());
        out
    }

    /// Decodes a probe from the start of `bytes`; `None` if too short or the magic is absent.
    pub fn decode(bytes: &[u8]) -> Option<Probe> {
        let b: &[u8; PROBE_LEN] = bytes.get(..PROBE_LEN)?.try_into().ok()?;
        if b[..4] != PROBE_MAGIC {
            return None;
        }
        let mut wall = [0u8; 8];
        wall.copy_from_slice(&b[4..12]);
        let mut frame = [0u8; 4];
        frame.copy_from_slice(&b[12..16]);
        Some(Probe {
            wall_us: u64::from_be_bytes(wall),
            frame: u32::from_be_bytes(frame),
        })
    }
}

/// Finds the probe of an RTP payload written by [`AudioSource`] or [`VideoSource`], looking
/// only where they put it: after the Opus TOC byte, or after the VP8 payload descriptor (and the
/// VP8 payload header on a frame's first packet). `None` for foreign or malformed payloads.
pub fn read_probe(payload: &[u8]) -> Option<Probe> {
    if let Some(p) = payload.get(1..).and_then(Probe::decode) {
        return Some(p);
    }
    let vp8 = parse_vp8(payload)?;
    let offset = vp8.descriptor_len + vp8.frame_header.map_or(0, |h| h.header_len);
    Probe::decode(payload.get(offset..)?)
}

/// The VP8 payload header of a frame's first packet (RFC 7741 §4.3, RFC 6386 §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8FrameHeader {
    /// P bit 0: a keyframe (with a valid start code).
    pub keyframe: bool,
    /// Keyframe width and height (14 bits each, scaling bits dropped); `None` for interframes.
    pub size: Option<(u16, u16)>,
    /// Size of the first partition announced by the header.
    pub first_partition_size: u32,
    /// Bytes of payload header: 3, or 10 for a keyframe (start code and dimensions).
    pub header_len: usize,
}

/// What a VP8 RTP payload says about itself (RFC 7741 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Packet {
    /// S bit: the packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index.
    pub partition_id: u8,
    /// N bit: the frame is not used as a reference.
    pub non_reference: bool,
    /// PictureID (7 or 15 bits) if the I bit is set.
    pub picture_id: Option<u16>,
    /// Bytes of payload descriptor.
    pub descriptor_len: usize,
    /// Payload header when S=1 and PID=0 (the first packet of a frame); `None` otherwise.
    pub frame_header: Option<Vp8FrameHeader>,
}

/// Parses the VP8 payload descriptor and, on a frame's first packet, the VP8 payload header.
/// Never panics; `None` if the payload is truncated, has no data after the descriptor, or
/// claims a keyframe without the start code.
pub fn parse_vp8(payload: &[u8]) -> Option<Vp8Packet> {
    let b0 = *payload.first()?;
    let mut i = 1;
    let mut picture_id = None;
    if b0 & 0x80 != 0 {
        let x = *payload.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            let m = *payload.get(i)?;
            if m & 0x80 != 0 {
                let lo = *payload.get(i + 1)?;
                picture_id = Some((u16::from(m & 0x7f) << 8) | u16::from(lo));
                i += 2;
            } else {
                picture_id = Some(u16::from(m));
                i += 1;
            }
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    if payload.len() <= i {
        return None;
    }
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    let mut frame_header = None;
    if start_of_partition && partition_id == 0 {
        let h = payload.get(i..i + VP8_INTER_HEADER_LEN)?;
        let first_partition_size =
            (u32::from(h[0]) >> 5) | (u32::from(h[1]) << 3) | (u32::from(h[2]) << 11);
        if h[0] & 0x01 == 0 {
            let k = payload.get(i..i + VP8_KEY_HEADER_LEN)?;
            if k[3..6] != VP8_START_CODE {
                return None;
            }
            let width = u16::from_le_bytes([k[6], k[7]]) & 0x3fff;
            let height = u16::from_le_bytes([k[8], k[9]]) & 0x3fff;
            frame_header = Some(Vp8FrameHeader {
                keyframe: true,
                size: Some((width, height)),
                first_partition_size,
                header_len: VP8_KEY_HEADER_LEN,
            });
        } else {
            frame_header = Some(Vp8FrameHeader {
                keyframe: false,
                size: None,
                first_partition_size,
                header_len: VP8_INTER_HEADER_LEN,
            });
        }
    }
    Some(Vp8Packet {
        start_of_partition,
        partition_id,
        non_reference: b0 & 0x20 != 0,
        picture_id,
        descriptor_len: i,
        frame_header,
    })
}

/// The transport-wide-cc sequence counter shared by all sources of one transport. Sources with
/// a transport-cc extension id take the next number from it for each packet they write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportSeq {
    next: u16,
}

impl TransportSeq {
    /// A counter whose first number is `start`.
    pub fn new(start: u16) -> Self {
        Self { next: start }
    }

    /// The number the next packet will carry.
    pub fn peek(&self) -> u16 {
        self.next
    }

    /// Returns the next number and advances, wrapping at 65535.
    pub fn take(&mut self) -> u16 {
        let n = self.next;
        self.next = n.wrapping_add(1);
        n
    }
}

/// RFC 8285 one-byte header extensions a source writes, with their negotiated ids (1..=14).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderExtensions {
    /// `urn:ietf:params:rtp-hdrext:sdes:mid`: id and MID value (1..=16 bytes).
    pub mid: Option<(u8, String)>,
    /// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id`: id and RID value (1..=16 bytes), for
    /// a simulcast encoding.
    pub rid: Option<(u8, String)>,
    /// `http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01`: id.
    pub transport_cc: Option<u8>,
    /// `http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time`: id.
    pub abs_send_time: Option<u8>,
}

impl HeaderExtensions {
    fn validate(&self) -> Result<(), MediaError> {
        let ids = [
            self.mid.as_ref().map(|(id, _)| *id),
            self.rid.as_ref().map(|(id, _)| *id),
            self.transport_cc,
            self.abs_send_time,
        ];
        for (k, id) in ids.iter().enumerate() {
            let Some(id) = *id else { continue };
            if !(1..=14).contains(&id) {
                return Err(MediaError::InvalidExtensionId(id));
            }
            if ids[..k].contains(&Some(id)) {
                return Err(MediaError::DuplicateExtensionId(id));
            }
        }
        for (_, value) in self.mid.iter().chain(&self.rid) {
            if !(1..=16).contains(&value.len()) {
                return Err(MediaError::InvalidMid(value.len()));
            }
        }
        Ok(())
    }

    /// Bytes of the extension block: 4-byte profile/length header, elements, zero padding to a
    /// 32-bit boundary; 0 if no extension is configured.
    fn block_len(&self) -> usize {
        let body = self.mid.as_ref().map_or(0, |(_, m)| 1 + m.len())
            + self.rid.as_ref().map_or(0, |(_, r)| 1 + r.len())
            + self.transport_cc.map_or(0, |_| 3)
            + self.abs_send_time.map_or(0, |_| 4);
        if body == 0 {
            0
        } else {
            4 + body.div_ceil(4) * 4
        }
    }
}

/// RTP header state common to both sources.
#[derive(Debug, Clone)]
struct RtpWriter {
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    ext: HeaderExtensions,
    ext_len: usize,
}

impl RtpWriter {
    fn new(
        ssrc: u32,
        payload_type: u8,
        seq: u16,
        ext: HeaderExtensions,
    ) -> Result<Self, MediaError> {
        if payload_type > 127 {
            return Err(MediaError::InvalidPayloadType(payload_type));
        }
        ext.validate()?;
        let ext_len = ext.block_len();
        Ok(Self {
            ssrc,
            payload_type,
            seq,
            ext,
            ext_len,
        })
    }

    fn header_len(&self) -> usize {
        RTP_HEADER_LEN + self.ext_len
    }

    /// Fails without side effects if `buf` cannot hold header plus `payload_len`.
    fn check(&self, buf: &[u8], payload_len: usize) -> Result<usize, MediaError> {
        let needed = self.header_len() + payload_len;
        if buf.len() < needed {
            return Err(MediaError::BufferTooSmall {
                needed,
                available: buf.len(),
            });
        }
        Ok(needed)
    }

    /// Writes the header (after [`Self::check`]) and advances the sequence number. Returns the
    /// header length.
    fn write(
        &mut self,
        buf: &mut [u8],
        marker: bool,
        timestamp: u32,
        wall_us: u64,
        tcc: &mut TransportSeq,
    ) -> usize {
        let ext_flag = if self.ext_len > 0 { 0x10 } else { 0 };
        buf[0] = 0x80 | ext_flag;
        buf[1] = (u8::from(marker) << 7) | self.payload_type;
        buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
        buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        if self.ext_len == 0 {
            return RTP_HEADER_LEN;
        }
        let end = RTP_HEADER_LEN + self.ext_len;
        buf[12..14].copy_from_slice(&ONE_BYTE_PROFILE.to_be_bytes());
        // ext_len is at most 4 + 44 bytes, so the word count fits easily.
        let words = ((self.ext_len - 4) / 4) as u16;
        buf[14..16].copy_from_slice(&words.to_be_bytes());
        let mut i = 16;
        for (id, value) in self.ext.mid.iter().chain(&self.ext.rid) {
            buf[i] = (id << 4) | (value.len() as u8 - 1);
            buf[i + 1..i + 1 + value.len()].copy_from_slice(value.as_bytes());
            i += 1 + value.len();
        }
        if let Some(id) = self.ext.abs_send_time {
            // 6.18 fixed-point seconds. The NTP and UNIX epochs differ by a multiple of 64 s,
            // so the low 6 bits of the seconds are the same on either epoch.
            let abs = ((u128::from(wall_us) << 18) / 1_000_000) as u32 & 0x00ff_ffff;
            buf[i] = (id << 4) | 2;
            buf[i + 1..i + 4].copy_from_slice(&abs.to_be_bytes()[1..]);
            i += 4;
        }
        if let Some(id) = self.ext.transport_cc {
            buf[i] = (id << 4) | 1;
            buf[i + 1..i + 3].copy_from_slice(&tcc.take().to_be_bytes());
            i += 3;
        }
        buf[i..end].fill(0);
        end
    }
}

/// Fills synthetic codec bytes: a cheap non-constant pattern so payloads do not look like
/// padding.
fn fill_pattern(buf: &mut [u8], seed: u32) {
    let mut x = seed | 1;
    for b in buf {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
}

/// Configuration of an [`AudioSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// RTP SSRC.
    pub ssrc: u32,
    /// RTP payload type (default 111, the usual Opus type).
    pub payload_type: u8,
    /// Sets the stereo flag of the TOC byte; follow the negotiated `stereo=1` fmtp.
    pub stereo: bool,
    /// RTP payload bytes per packet, TOC and probe included (default 120, ~48 kbit/s).
    pub payload_size: usize,
    /// First sequence number; random if `None`.
    pub initial_seq: Option<u16>,
    /// First RTP timestamp; random if `None`.
    pub initial_timestamp: Option<u32>,
    /// Header extensions to write.
    pub extensions: HeaderExtensions,
}

impl AudioConfig {
    /// Defaults for `ssrc`: payload type 111, mono, 120-byte payloads, random seq/timestamp.
    pub fn new(ssrc: u32) -> Self {
        Self {
            ssrc,
            payload_type: 111,
            stereo: false,
            payload_size: 120,
            initial_seq: None,
            initial_timestamp: None,
            extensions: HeaderExtensions::default(),
        }
    }
}

/// Opus-shaped audio: one 20 ms CELT fullband packet every 20 ms of virtual time, marker set on
/// the first packet only (start of a talkspurt, RFC 3551 §4.1).
#[derive(Debug, Clone)]
pub struct AudioSource {
    rtp: RtpWriter,
    toc: u8,
    payload_size: usize,
    start: Instant,
    /// Index of the next 20 ms frame since `start`.
    index: u64,
    ts0: u32,
    frames: u32,
}

impl AudioSource {
    /// Creates a source whose first packet is due at `now`; missing initial seq/timestamp are
    /// drawn from `rng`.
    pub fn new<R: Rng + ?Sized>(
        config: AudioConfig,
        now: Instant,
        rng: &mut R,
    ) -> Result<Self, MediaError> {
        if !(1 + PROBE_LEN..=1200).contains(&config.payload_size) {
            return Err(MediaError::InvalidPayloadSize(config.payload_size));
        }
        let seq = config.initial_seq.unwrap_or_else(|| rng.random());
        let ts0 = config.initial_timestamp.unwrap_or_else(|| rng.random());
        let rtp = RtpWriter::new(config.ssrc, config.payload_type, seq, config.extensions)?;
        Ok(Self {
            rtp,
            toc: (OPUS_CONFIG_CELT_FB_20MS << 3) | (u8::from(config.stereo) << 2),
            payload_size: config.payload_size,
            start: now,
            index: 0,
            ts0,
            frames: 0,
        })
    }

    /// The SSRC this source sends.
    pub fn ssrc(&self) -> u32 {
        self.rtp.ssrc
    }

    /// Sequence number the next packet will carry.
    pub fn next_seq(&self) -> u16 {
        self.rtp.seq
    }

    /// When the next packet is due.
    pub fn next_packet_time(&self) -> Instant {
        self.start + frame_offset(self.index, 50)
    }

    /// Writes the next packet into `buf` if it is due at `now`, returning its length;
    /// `Ok(None)` if nothing is due. `wall_us` (microseconds since the UNIX epoch) goes into the
    /// probe and abs-send-time. On error nothing is consumed.
    pub fn poll(
        &mut self,
        now: Instant,
        wall_us: u64,
        tcc: &mut TransportSeq,
        buf: &mut [u8],
    ) -> Result<Option<usize>, MediaError> {
        if self.next_packet_time() > now {
            return Ok(None);
        }
        let len = self.rtp.check(buf, self.payload_size)?;
        self.index = skip_to(self.index, self.start, now, 50);
        let ts = self
            .ts0
            .wrapping_add((self.index as u32).wrapping_mul(OPUS_FRAME_TICKS));
        let marker = self.index == 0;
        let h = self.rtp.write(buf, marker, ts, wall_us, tcc);
        let payload = &mut buf[h..len];
        payload[0] = self.toc;
        let probe = Probe {
            wall_us,
            frame: self.frames,
        };
        payload[1..1 + PROBE_LEN].copy_from_slice(&probe.encode());
        fill_pattern(&mut payload[1 + PROBE_LEN..], self.frames);
        self.index += 1;
        self.frames = self.frames.wrapping_add(1);
        Ok(Some(len))
    }
}

/// Offset of frame `index` from the start at `fps` frames per second, without drift.
fn frame_offset(index: u64, fps: u32) -> Duration {
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(fps.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Moves `index` forward so that frame `index` is at most [`BOT_MAX_CATCH_UP`] behind `now`.
fn skip_to(index: u64, start: Instant, now: Instant, fps: u32) -> u64 {
    let elapsed = now.saturating_duration_since(start);
    let Some(oldest) = elapsed.checked_sub(BOT_MAX_CATCH_UP) else {
        return index;
    };
    let first_allowed = (oldest.as_nanos() * u128::from(fps)).div_ceil(1_000_000_000) as u64;
    index.max(first_allowed)
}

/// Configuration of a [`VideoSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    /// RTP SSRC.
    pub ssrc: u32,
    /// RTP payload type (default 96).
    pub payload_type: u8,
    /// Frames per second, 1..=240 (default 30).
    pub fps: u32,
    /// Average bitrate of interframes in bit/s (default 500 000); keyframes are larger.
    pub bitrate_bps: u32,
    /// Width written into keyframes (default 640).
    pub width: u16,
    /// Height written into keyframes (default 480).
    pub height: u16,
    /// Largest RTP payload, descriptor included (default 1100).
    pub max_payload: usize,
    /// Periodic keyframe interval (default 2 s); zero sends keyframes only first and on request.
    pub keyframe_interval: Duration,
    /// First sequence number; random if `None`.
    pub initial_seq: Option<u16>,
    /// First RTP timestamp; random if `None`.
    pub initial_timestamp: Option<u32>,
    /// First 15-bit PictureID; random if `None`.
    pub initial_picture_id: Option<u16>,
    /// Header extensions to write.
    pub extensions: HeaderExtensions,
}

impl VideoConfig {
    /// Defaults for `ssrc`: payload type 96, 30 fps, 500 kbit/s, 640x480, 1100-byte payloads,
    /// keyframe every 2 s, random seq/timestamp/PictureID.
    pub fn new(ssrc: u32) -> Self {
        Self {
            ssrc,
            payload_type: 96,
            fps: 30,
            bitrate_bps: 500_000,
            width: 640,
            height: 480,
            max_payload: 1100,
            keyframe_interval: Duration::from_secs(2),
            initial_seq: None,
            initial_timestamp: None,
            initial_picture_id: None,
            extensions: HeaderExtensions::default(),
        }
    }
}

/// The frame being packetised.
#[derive(Debug, Clone, Copy)]
struct Frame {
    timestamp: u32,
    keyframe: bool,
    /// Bytes of VP8 frame data (payload header, probes and filler) over all packets.
    len: usize,
    packets: usize,
    next_packet: usize,
}

impl Frame {
    /// Balanced split (as libwebrtc does): the first `len % packets` chunks get one extra byte.
    fn chunk_len(&self, k: usize) -> usize {
        self.len / self.packets + usize::from(k < self.len % self.packets)
    }
}

/// VP8-shaped video: frames at a fixed rate, each split into packets with an RFC 7741
/// descriptor (X=1, I=1, 15-bit PictureID, S=1 on the first packet, PID=0), a VP8 payload
/// header on the first packet, the marker on the last, one timestamp per frame.
#[derive(Debug, Clone)]
pub struct VideoSource {
    rtp: RtpWriter,
    fps: u32,
    frame_len: usize,
    width: u16,
    height: u16,
    max_payload: usize,
    keyframe_interval: Duration,
    start: Instant,
    /// Index of the next frame to start, counted from `start`.
    index: u64,
    ts0: u32,
    picture_id: u16,
    frames: u32,
    current: Option<Frame>,
    current_time: Instant,
    last_keyframe: Option<Instant>,
    keyframe_requested: bool,
    keyframes_sent: u64,
}

impl VideoSource {
    /// Creates a source whose first frame (a keyframe) is due at `now`; missing initial
    /// seq/timestamp/PictureID are drawn from `rng`.
    pub fn new<R: Rng + ?Sized>(
        config: VideoConfig,
        now: Instant,
        rng: &mut R,
    ) -> Result<Self, MediaError> {
        if !(1..=240).contains(&config.fps) {
            return Err(MediaError::InvalidFrameRate(config.fps));
        }
        if config.bitrate_bps == 0 {
            return Err(MediaError::InvalidBitrate);
        }
        if !(1..=0x3fff).contains(&config.width) || !(1..=0x3fff).contains(&config.height) {
            return Err(MediaError::InvalidDimensions {
                width: config.width,
                height: config.height,
            });
        }
        if config.max_payload < 64 {
            return Err(MediaError::MaxPayloadTooSmall(config.max_payload));
        }
        let seq = config.initial_seq.unwrap_or_else(|| rng.random());
        let ts0 = config.initial_timestamp.unwrap_or_else(|| rng.random());
        let picture_id = config.initial_picture_id.unwrap_or_else(|| rng.random()) & 0x7fff;
        let rtp = RtpWriter::new(config.ssrc, config.payload_type, seq, config.extensions)?;
        let frame_len = (config.bitrate_bps / 8 / config.fps) as usize;
        Ok(Self {
            rtp,
            fps: config.fps,
            frame_len: frame_len.max(VP8_KEY_HEADER_LEN + PROBE_LEN),
            width: config.width,
            height: config.height,
            max_payload: config.max_payload,
            keyframe_interval: config.keyframe_interval,
            start: now,
            index: 0,
            ts0,
            picture_id,
            frames: 0,
            current: None,
            current_time: now,
            last_keyframe: None,
            keyframes_sent: 0,
            keyframe_requested: false,
        })
    }

    /// The SSRC this source sends.
    pub fn ssrc(&self) -> u32 {
        self.rtp.ssrc
    }

    /// Sequence number the next packet will carry.
    pub fn next_seq(&self) -> u16 {
        self.rtp.seq
    }

    /// Keyframes started so far.
    pub fn keyframes_sent(&self) -> u64 {
        self.keyframes_sent
    }

    /// Asks for the next frame to be a keyframe (on PLI or FIR from the node). The frame being
    /// packetised, if any, is finished first.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// When the next packet is due: at once while a frame is being packetised, else at the
    /// next frame time.
    pub fn next_packet_time(&self) -> Instant {
        if self.current.is_some() {
            self.current_time
        } else {
            self.start + frame_offset(self.index, self.fps)
        }
    }

    fn start_frame(&mut self, now: Instant) {
        self.index = skip_to(self.index, self.start, now, self.fps);
        let time = self.start + frame_offset(self.index, self.fps);
        let periodic = match self.last_keyframe {
            None => true,
            Some(last) => {
                !self.keyframe_interval.is_zero()
                    && time.saturating_duration_since(last) >= self.keyframe_interval
            }
        };
        let keyframe = periodic || self.keyframe_requested;
        if keyframe {
            self.keyframe_requested = false;
            self.last_keyframe = Some(time);
            self.keyframes_sent += 1;
        }
        let len = if keyframe {
            self.frame_len * KEYFRAME_SIZE_FACTOR
        } else {
            self.frame_len
        };
        // max_payload >= 64, so every chunk of a multi-packet frame is at least 30 bytes and
        // holds the payload header and probe.
        let room = self.max_payload - VP8_DESCRIPTOR_LEN;
        let ticks = u128::from(self.index) * u128::from(VP8_CLOCK_RATE) / u128::from(self.fps);
        self.current = Some(Frame {
            timestamp: self.ts0.wrapping_add(ticks as u32),
            keyframe,
            len,
            packets: len.div_ceil(room),
            next_packet: 0,
        });
        self.current_time = time;
        self.index += 1;
    }

    /// Writes the next packet into `buf` if one is due at `now`, returning its length;
    /// `Ok(None)` once the due frame is fully sent. `wall_us` (microseconds since the UNIX epoch)
    /// goes into the probe and abs-send-time. On error the packet is not consumed.
    pub fn poll(
        &mut self,
        now: Instant,
        wall_us: u64,
        tcc: &mut TransportSeq,
        buf: &mut [u8],
    ) -> Result<Option<usize>, MediaError> {
        if self.current.is_none() {
            if self.next_packet_time() > now {
                return Ok(None);
            }
            self.start_frame(now);
        }
        let Some(mut frame) = self.current else {
            return Ok(None);
        };
        let k = frame.next_packet;
        let chunk = frame.chunk_len(k);
        let len = self.rtp.check(buf, VP8_DESCRIPTOR_LEN + chunk)?;
        let last = k + 1 == frame.packets;
        let h = self.rtp.write(buf, last, frame.timestamp, wall_us, tcc);
        let p = &mut buf[h..len];
        p[0] = 0x80 | if k == 0 { 0x10 } else { 0 };
        p[1] = 0x80;
        p[2..4].copy_from_slice(&(0x8000 | self.picture_id).to_be_bytes());
        let mut i = VP8_DESCRIPTOR_LEN;
        if k == 0 {
            let header_len = if frame.keyframe {
                VP8_KEY_HEADER_LEN
            } else {
                VP8_INTER_HEADER_LEN
            };
            // The rest of the frame is declared as the first partition (19-bit field).
            let size = ((frame.len - header_len) as u32).min(0x7ffff);
            let show_frame = 0x10;
            p[i] = ((size as u8 & 0x07) << 5) | show_frame | u8::from(!frame.keyframe);
            p[i + 1] = (size >> 3) as u8;
            p[i + 2] = (size >> 11) as u8;
            if frame.keyframe {
                p[i + 3..i + 6].copy_from_slice(&VP8_START_CODE);
                p[i + 6..i + 8].copy_from_slice(&self.width.to_le_bytes());
                p[i + 8..i + 10].copy_from_slice(&self.height.to_le_bytes());
            }
            i += header_len;
        }
        let probe = Probe {
            wall_us,
            frame: self.frames,
        };
        p[i..i + PROBE_LEN].copy_from_slice(&probe.encode());
        fill_pattern(&mut p[i + PROBE_LEN..], self.frames ^ ((k as u32) << 20));
        frame.next_packet += 1;
        if last {
            self.current = None;
            self.picture_id = (self.picture_id + 1) & 0x7fff;
            self.frames = self.frames.wrapping_add(1);
        } else {
            self.current = Some(frame);
        }
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};
    use webrtc_util::marshal::Unmarshal;

    fn parse(pkt: &[u8]) -> rtp::packet::Packet {
        let mut b = bytes::Bytes::copy_from_slice(pkt);
        rtp::packet::Packet::unmarshal(&mut b).expect("valid RTP")
    }

    fn exts() -> HeaderExtensions {
        HeaderExtensions {
            mid: Some((1, "video0".into())),
            rid: None,
            transport_cc: Some(3),
            abs_send_time: Some(2),
        }
    }

    /// A simulcast layer writes mid and rid (RFC 8852) and its own keyframe size.
    #[test]
    fn simulcast_layer_writes_rid_and_its_size() {
        let mut rng = StdRng::seed_from_u64(11);
        let t0 = Instant::now();
        let mut c = VideoConfig::new(0x51);
        c.extensions = exts();
        c.extensions.rid = Some((4, "r0".into()));
        (c.width, c.height) = (160, 120);
        let mut src = VideoSource::new(c.clone(), t0, &mut rng).unwrap();
        let pkts = drain_video(&mut src, t0, Duration::from_millis(100));
        let first = parse(&pkts[0]);
        assert_eq!(
            first.header.get_extension(1).as_deref(),
            Some(&b"video0"[..])
        );
        assert_eq!(first.header.get_extension(4).as_deref(), Some(&b"r0"[..]));
        let h = parse_vp8(&first.payload).unwrap().frame_header.unwrap();
        assert_eq!((h.keyframe, h.size), (true, Some((160, 120))));
        // Every packet still parses, and rid values follow the mid limits.
        assert!(pkts
            .iter()
            .all(|p| parse(p).header.get_extension(4).is_some()));
        c.extensions.rid = Some((1, "r0".into()));
        assert_eq!(
            VideoSource::new(c.clone(), t0, &mut rng).unwrap_err(),
            MediaError::DuplicateExtensionId(1)
        );
        c.extensions.rid = Some((4, String::new()));
        assert_eq!(
            VideoSource::new(c, t0, &mut rng).unwrap_err(),
            MediaError::InvalidMid(0)
        );
    }

    /// Runs `poll` at every due time until `end`, collecting packets.
    fn drain_video(src: &mut VideoSource, t0: Instant, end: Duration) -> Vec<Vec<u8>> {
        let mut tcc = TransportSeq::new(0);
        let mut buf = [0u8; 1500];
        let mut out = Vec::new();
        loop {
            let t = src.next_packet_time();
            if t > t0 + end {
                return out;
            }
            let wall = 1_700_000_000_000_000 + (t - t0).as_micros() as u64;
            while let Some(n) = src.poll(t, wall, &mut tcc, &mut buf).unwrap() {
                out.push(buf[..n].to_vec());
            }
        }
    }

    #[test]
    fn probe_round_trip_and_rejects_garbage() {
        let p = Probe {
            wall_us: 0x0102_0304_0506_0708,
            frame: 77,
        };
        assert_eq!(Probe::decode(&p.encode()), Some(p));
        assert_eq!(Probe::decode(&p.encode()[..15]), None);
        assert_eq!(Probe::decode(&[0u8; 16]), None);
        assert_eq!(read_probe(&[]), None);
        assert_eq!(read_probe(&[0x90]), None);
        assert_eq!(read_probe(&[0x90, 0xff, 0xff]), None);
        // VP8 keyframe claim without start code.
        assert_eq!(
            parse_vp8(&[0x10, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5, 6, 7]),
            None
        );
    }

    #[test]
    fn parse_vp8_never_panics_on_any_short_input() {
        let mut rng = StdRng::seed_from_u64(7);
        for len in 0..40 {
            for _ in 0..500 {
                let v: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                let _ = parse_vp8(&v);
                let _ = read_probe(&v);
            }
        }
    }

    #[test]
    fn config_validation() {
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut c = VideoConfig::new(1);
        c.extensions.transport_cc = Some(15);
        assert_eq!(
            VideoSource::new(c, now, &mut rng).unwrap_err(),
            MediaError::InvalidExtensionId(15)
        );
        let mut c = AudioConfig::new(1);
        c.extensions = exts();
        c.extensions.abs_send_time = Some(1);
        assert_eq!(
            AudioSource::new(c, now, &mut rng).unwrap_err(),
            MediaError::DuplicateExtensionId(1)
        );
        let mut c = AudioConfig::new(1);
        c.extensions.mid = Some((4, "x".repeat(17)));
        assert_eq!(
            AudioSource::new(c, now, &mut rng).unwrap_err(),
            MediaError::InvalidMid(17)
        );
        let mut c = VideoConfig::new(1);
        c.fps = 0;
        assert!(VideoSource::new(c, now, &mut rng).is_err());
        let mut c = VideoConfig::new(1);
        c.payload_type = 128;
        assert!(VideoSource::new(c, now, &mut rng).is_err());
    }

    #[test]
    fn audio_packets_are_opus_shaped_and_paced() {
        let mut rng = StdRng::seed_from_u64(2);
        let t0 = Instant::now();
        let mut c = AudioConfig::new(0xdead_beef);
        c.stereo = true;
        c.initial_seq = Some(65534);
        c.initial_timestamp = Some(u32::MAX - 100);
        c.extensions = exts();
        let mut src = AudioSource::new(c, t0, &mut rng).unwrap();
        let mut tcc = TransportSeq::new(65535);
        let mut buf = [0u8; 1500];
        let wall = 1_700_000_000_123_456;
        let n = src.poll(t0, wall, &mut tcc, &mut buf).unwrap().unwrap();
        assert_eq!(src.poll(t0, wall, &mut tcc, &mut buf).unwrap(), None);
        assert_eq!(src.next_packet_time(), t0 + OPUS_FRAME_DURATION);
        let p = parse(&buf[..n]);
        assert_eq!(p.header.ssrc, 0xdead_beef);
        assert_eq!(p.header.payload_type, 111);
        assert_eq!(p.header.sequence_number, 65534);
        assert_eq!(p.header.timestamp, u32::MAX - 100);
        assert!(p.header.marker);
        assert_eq!(p.payload.len(), 120);
        // TOC: config 31, stereo, one frame.
        assert_eq!(p.payload[0], (31 << 3) | 0b100);
        assert_eq!(p.header.get_extension(1).unwrap().as_ref(), b"video0");
        assert_eq!(p.header.get_extension(3).unwrap().as_ref(), &[0xff, 0xff]);
        let abs = p.header.get_extension(2).unwrap();
        let want = ((u128::from(wall) << 18) / 1_000_000) as u32 & 0xff_ffff;
        assert_eq!(abs.as_ref(), &want.to_be_bytes()[1..]);
        assert_eq!(
            read_probe(&p.payload),
            Some(Probe {
                wall_us: wall,
                frame: 0
            })
        );

        let t1 = t0 + OPUS_FRAME_DURATION;
        let n = src
            .poll(t1, wall + 20_000, &mut tcc, &mut buf)
            .unwrap()
            .unwrap();
        let p = parse(&buf[..n]);
        assert_eq!(p.header.sequence_number, 65535);
        assert_eq!(p.header.timestamp, (u32::MAX - 100).wrapping_add(960));
        assert!(!p.header.marker);
        assert_eq!(p.header.get_extension(3).unwrap().as_ref(), &[0, 0]);
        assert_eq!(read_probe(&p.payload).unwrap().frame, 1);
        assert_eq!(tcc.peek(), 1);
    }

    #[test]
    fn audio_buffer_too_small_consumes_nothing_and_stall_skips() {
        let mut rng = StdRng::seed_from_u64(3);
        let t0 = Instant::now();
        let mut src = AudioSource::new(AudioConfig::new(5), t0, &mut rng).unwrap();
        let mut tcc = TransportSeq::new(0);
        let seq = src.next_seq();
        let mut small = [0u8; 100];
        assert_eq!(
            src.poll(t0, 0, &mut tcc, &mut small),
            Err(MediaError::BufferTooSmall {
                needed: 132,
                available: 100
            })
        );
        assert_eq!(src.next_seq(), seq);
        let mut buf = [0u8; 1500];
        // A 10 s stall: only the last ~500 ms of frames are sent, timestamps jump.
        let late = t0 + Duration::from_secs(10);
        let mut count = 0u16;
        while src.poll(late, 0, &mut tcc, &mut buf).unwrap().is_some() {
            count += 1;
        }
        assert!((25..=26).contains(&count), "{count}");
        assert_eq!(src.next_seq(), seq.wrapping_add(count));
    }

    #[test]
    fn video_frames_are_vp8_shaped() {
        let mut rng = StdRng::seed_from_u64(4);
        let t0 = Instant::now();
        let mut c = VideoConfig::new(42);
        c.initial_picture_id = Some(0x7ffe);
        c.initial_seq = Some(65530);
        c.extensions = exts();
        let mut src = VideoSource::new(c, t0, &mut rng).unwrap();
        let pkts = drain_video(&mut src, t0, Duration::from_millis(4990));
        let mut frames = Vec::new(); // (timestamp, keyframe, packets, picture id)
        let mut prev_seq: Option<u16> = None;
        let mut in_frame = false;
        let mut twcc_prev: Option<u16> = None;
        for raw in &pkts {
            let p = parse(raw);
            assert_eq!(p.header.ssrc, 42);
            assert!(p.payload.len() <= 1100);
            if let Some(s) = prev_seq {
                assert_eq!(p.header.sequence_number, s.wrapping_add(1));
            }
            prev_seq = Some(p.header.sequence_number);
            let tw = p.header.get_extension(3).unwrap();
            let tw = u16::from_be_bytes([tw[0], tw[1]]);
            if let Some(t) = twcc_prev {
                assert_eq!(tw, t.wrapping_add(1));
            }
            twcc_prev = Some(tw);
            let v = parse_vp8(&p.payload).expect("valid descriptor");
            assert_eq!(v.partition_id, 0);
            assert_eq!(v.descriptor_len, 4);
            let pid = v.picture_id.expect("I bit");
            if v.start_of_partition {
                assert!(!in_frame, "new frame before marker");
                let h = v.frame_header.expect("payload header");
                if h.keyframe {
                    assert_eq!(h.size, Some((640, 480)));
                }
                frames.push((p.header.timestamp, h.keyframe, 0usize, pid));
            }
            let f = frames.last_mut().expect("first packet has S=1");
            assert_eq!(f.0, p.header.timestamp);
            assert_eq!(f.3, pid);
            f.2 += 1;
            in_frame = !p.header.marker;
            let probe = read_probe(&p.payload).expect("probe");
            assert_eq!(probe.frame as usize, frames.len() - 1);
        }
        assert!(!in_frame);
        assert_eq!(frames.len(), 150);
        let keys: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].1).collect();
        assert_eq!(keys, vec![0, 60, 120]);
        // PictureID wraps at 15 bits, timestamps step by 3000.
        assert_eq!(frames[0].3, 0x7ffe);
        assert_eq!(frames[2].3, 0);
        for w in frames.windows(2) {
            assert_eq!(w[1].0.wrapping_sub(w[0].0), 3000);
        }
        // 500 kbit/s at 30 fps: ~2083 B per interframe = 2 packets, keyframes 4x = 8 packets.
        assert_eq!(frames[1].2, 2);
        assert_eq!(frames[0].2, 8);
    }

    #[test]
    fn keyframe_on_request_after_current_frame() {
        let mut rng = StdRng::seed_from_u64(5);
        let t0 = Instant::now();
        let mut c = VideoConfig::new(1);
        c.keyframe_interval = Duration::ZERO;
        let mut src = VideoSource::new(c, t0, &mut rng).unwrap();
        let mut tcc = TransportSeq::new(0);
        let mut buf = [0u8; 1500];
        let mut is_key = |src: &mut VideoSource, t: Instant, req: bool| {
            let mut key = None;
            let mut first = true;
            while let Some(n) = src.poll(t, 0, &mut tcc, &mut buf).unwrap() {
                if first && req {
                    src.request_keyframe();
                }
                first = false;
                let p = parse(&buf[..n]);
                if let Some(h) = parse_vp8(&p.payload).unwrap().frame_header {
                    key = Some(h.keyframe);
                }
            }
            key.unwrap()
        };
        let dt = Duration::from_nanos(1_000_000_000 / 30 + 1);
        assert!(is_key(&mut src, t0, false));
        assert!(!is_key(&mut src, t0 + dt, true)); // requested mid-frame: this one finishes
        assert!(is_key(&mut src, t0 + dt * 2, false));
        assert!(!is_key(&mut src, t0 + dt * 3, false));
        assert_eq!(src.keyframes_sent(), 2);
    }
}
