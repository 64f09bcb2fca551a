//! Packet demultiplexing on the edge's shared ports.
//!
//! This module owns two pure pieces of wire logic and nothing else: RFC 7983 first-byte
//! classification of a datagram (or TCP frame) into STUN / DTLS / RTP / RTCP, and RFC 4571
//! framing (2-byte big-endian length prefix) of the TCP port. Which transport a packet belongs
//! to, and what happens to it, is the glue's business.
//!
//! [`FrameDecoder`] owns one fixed buffer per TCP connection, allocated once; frames are handed
//! out as slices of it, so the per-packet path does not allocate. Read straight into it with
//! [`FrameDecoder::read_buf`] + [`FrameDecoder::commit`], or copy chunks in with
//! [`FrameDecoder::push`].

use super::stun;

/// What a packet is, by its first bytes (RFC 7983, RFC 5761).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketClass {
    /// A STUN message (first byte 0..=3 and the magic cookie).
    Stun,
    /// A DTLS record (first byte 20..=63).
    Dtls,
    /// An RTP packet (first byte 128..=191, payload type outside 64..=95).
    Rtp,
    /// An RTCP packet (first byte 128..=191, second byte 192..=223).
    Rtcp,
    /// Anything else, or too short to be any of the above: drop it.
    Unknown,
}

/// Smallest DTLS record: the 13-byte record header.
const DTLS_MIN_LEN: usize = 13;
/// Smallest RTP packet: the 12-byte fixed header.
const RTP_MIN_LEN: usize = 12;
/// Smallest RTCP packet: 4-byte header plus sender SSRC.
const RTCP_MIN_LEN: usize = 8;

/// Classifies a packet by its first bytes. Never panics.
pub fn classify(bytes: &[u8]) -> PacketClass {
    let Some(&first) = bytes.first() else {
        return PacketClass::Unknown;
    };
    match first {
        0..=3 if stun::looks_like_stun(bytes) => PacketClass::Stun,
        20..=63 if bytes.len() >= DTLS_MIN_LEN => PacketClass::Dtls,
        128..=191 => match bytes.get(1) {
            // RFC 5761 §4: with the marker bit, RTCP packet types 192..=223 (SR, RR, SDES,
            // BYE, APP, RTPFB, PSFB, XR...) look like RTP payload types 64..=95, which
            // multiplexing forbids for RTP.
            Some(192..=223) if bytes.len() >= RTCP_MIN_LEN => PacketClass::Rtcp,
            Some(192..=223) => PacketClass::Unknown,
            Some(_) if bytes.len() >= RTP_MIN_LEN => PacketClass::Rtp,
            _ => PacketClass::Unknown,
        },
        _ => PacketClass::Unknown,
    }
}

/// Errors of RFC 4571 framing. Each means the TCP connection is broken and must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// A frame header announced zero bytes; no STUN/DTLS/RTP packet is empty.
    #[error("zero-length frame")]
    EmptyFrame,
    /// A frame header announced more than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLong {
        /// The announced length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A payload to encode is empty or longer than 65535 bytes.
    #[error("payload of {0} bytes cannot be framed")]
    BadPayloadLength(usize),
}

/// The largest frame RFC 4571 can express.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

/// The 2-byte RFC 4571 header for a payload of `len` bytes (which must not be zero).
pub fn encode_frame_header(len: u16) -> [u8; 2] {
    len.to_be_bytes()
}

/// Appends an RFC 4571 frame (header and payload) to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FramingError> {
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|&l| l > 0)
        .ok_or(FramingError::BadPayloadLength(payload.len()))?;
    out.extend_from_slice(&encode_frame_header(len));
    out.extend_from_slice(payload);
    Ok(())
}

/// Splits one TCP byte stream into RFC 4571 frames, with a bounded buffer.
///
/// The buffer holds `max_frame_len + 2` bytes: always room for one whole frame. After an
/// error the decoder stays failed (the connection must be closed).
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Box<[u8]>,
    /// Start of unconsumed bytes.
    start: usize,
    /// End of received bytes.
    end: usize,
    max_frame_len: usize,
    failed: Option<FramingError>,
}

impl FrameDecoder {
    /// A decoder accepting frames of 1..=`max_frame_len` bytes (capped at [`MAX_FRAME_LEN`]).
    pub fn new(max_frame_len: usize) -> Self {
        let max_frame_len = max_frame_len.clamp(1, MAX_FRAME_LEN);
        FrameDecoder {
            buf: vec![0u8; max_frame_len + 2].into_boxed_slice(),
            start: 0,
            end: 0,
            max_frame_len,
            failed: None,
        }
    }

    /// The configured maximum frame length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Moves unconsumed bytes to the front so the tail is free.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Copies as much of `data` as fits and returns how many bytes were taken. Take frames out
    /// with [`Self::next_frame`] until it returns `None`, then push the rest: there is then
    /// always room for at least one more byte.
    #[must_use = "bytes not taken must be pushed again after draining frames"]
    pub fn push(&mut self, data: &[u8]) -> usize {
        let free = self.read_buf();
        let n = free.len().min(data.len());
        free[..n].copy_from_slice(&data[..n]); // n <= both lengths
        self.commit(n);
        n
    }

    /// The free space to read socket bytes into (zero-copy path); follow with [`Self::commit`].
    /// Non-empty whenever the last [`Self::next_frame`] returned `Ok(None)`.
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.compact();
        &mut self.buf[self.end..] // end <= buf.len() is an invariant
    }

    /// Records that `n` bytes were written into [`Self::read_buf`] (clamped to its size).
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next complete frame's payload, `Ok(None)` when more bytes are needed, or an error
    /// (zero-length or too long frame) after which the connection must be closed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let pending = self.buf.get(self.start..self.end).unwrap_or_default();
        let [hi, lo, ..] = *pending else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            return Err(*self.failed.insert(FramingError::EmptyFrame));
        }
        if len > self.max_frame_len {
            let e = FramingError::FrameTooLong {
                len,
                max: self.max_frame_len,
            };
            return Err(*self.failed.insert(e));
        }
        if pending.len() < 2 + len {
            return Ok(None);
        }
        let from = self.start + 2;
        self.start = from + len;
        if self.start == self.end {
            // Nothing left: reset so the next read needs no compaction.
            self.start = 0;
            self.end = 0;
        }
        Ok(self.buf.get(from..from + len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_request() -> Vec<u8> {
        let mut out = Vec::new();
        let req = stun::BindingRequest {
            transaction_id: [1; 12],
            username: "a:b",
            priority: 1,
            tie_breaker: 2,
            use_candidate: true,
        };
        stun::write_binding_request(&mut out, &req, &stun::IntegrityKey::new(b"k")).unwrap();
        out
    }

    fn with_prefix(prefix: &[u8], len: usize) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.resize(len, 0);
        v
    }

    #[test]
    fn classifies_by_first_bytes() {
        assert_eq!(classify(&stun_request()), PacketClass::Stun);
        assert_eq!(
            classify(&with_prefix(&[22, 0xfe, 0xfd], 13)),
            PacketClass::Dtls
        );
        assert_eq!(classify(&with_prefix(&[63], 13)), PacketClass::Dtls);
        assert_eq!(classify(&with_prefix(&[0x80, 96], 12)), PacketClass::Rtp);
        assert_eq!(
            classify(&with_prefix(&[0x90, 96 | 0x80], 12)),
            PacketClass::Rtp
        ); // marker
        assert_eq!(classify(&with_prefix(&[0x80, 0x7f], 12)), PacketClass::Rtp);
        assert_eq!(classify(&with_prefix(&[0xbf, 224], 12)), PacketClass::Rtp);
        assert_eq!(classify(&with_prefix(&[0x80, 200], 8)), PacketClass::Rtcp); // SR
        assert_eq!(classify(&with_prefix(&[0x81, 205], 8)), PacketClass::Rtcp); // RTPFB
        assert_eq!(classify(&with_prefix(&[0x80, 192], 8)), PacketClass::Rtcp);
        assert_eq!(classify(&with_prefix(&[0x80, 223], 8)), PacketClass::Rtcp);
    }

    #[test]
    fn unknown_and_short_packets() {
        assert_eq!(classify(&[]), PacketClass::Unknown);
        // STUN range without the magic cookie, or too short.
        assert_eq!(classify(&with_prefix(&[0, 1], 40)), PacketClass::Unknown);
        assert_eq!(classify(&stun_request()[..19]), PacketClass::Unknown);
        // Between ranges / above RTP: ZRTP (16..19), TURN channels (64..79), 192..255.
        for first in [4u8, 16, 19, 64, 79, 127, 192, 255] {
            assert_eq!(
                classify(&with_prefix(&[first, 200], 64)),
                PacketClass::Unknown,
                "{first}"
            );
        }
        assert_eq!(classify(&with_prefix(&[22], 12)), PacketClass::Unknown);
        assert_eq!(
            classify(&with_prefix(&[0x80, 96], 11)),
            PacketClass::Unknown
        );
        assert_eq!(
            classify(&with_prefix(&[0x80, 200], 7)),
            PacketClass::Unknown
        );
        assert_eq!(classify(&[0x80]), PacketClass::Unknown);
    }

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(p, &mut out).unwrap();
        }
        out
    }

    fn drain(dec: &mut FrameDecoder) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut frames = Vec::new();
        while let Some(f) = dec.next_frame()? {
            frames.push(f.to_vec());
        }
        Ok(frames)
    }

    /// Feeds `stream` in chunks of `chunk` bytes, the way the glue would.
    fn feed(
        dec: &mut FrameDecoder,
        stream: &[u8],
        chunk: usize,
    ) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                let n = dec.push(rest);
                rest = &rest[n..];
                frames.extend(drain(dec)?);
                assert!(n > 0 || !rest.is_empty());
            }
        }
        Ok(frames)
    }

    #[test]
    fn many_frames_in_one_push() {
        let payloads: Vec<Vec<u8>> = (1..=50u8).map(|i| vec![i; usize::from(i) * 3]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let stream = framed(&refs);
        let mut dec = FrameDecoder::new(4096);
        assert_eq!(feed(&mut dec, &stream, stream.len()).unwrap(), payloads);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn byte_by_byte_and_odd_chunks() {
        let payloads = vec![vec![0xAB; 300], vec![1], vec![7; 1500], vec![9; 2]];
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let stream = framed(&refs);
        for chunk in [1, 2, 3, 7, 301, 1000] {
            let mut dec = FrameDecoder::new(1500);
            assert_eq!(
                feed(&mut dec, &stream, chunk).unwrap(),
                payloads,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn push_larger_than_buffer_takes_what_fits() {
        // A small buffer (max 10 => 12 bytes) with a stream of many frames.
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 10]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let stream = framed(&refs);
        let mut dec = FrameDecoder::new(10);
        assert_eq!(dec.push(&stream), 12);
        assert_eq!(
            feed(&mut dec, &stream[12..], stream.len()).map(|f| f.len()),
            Ok(20)
        );
    }

    #[test]
    fn partial_frame_waits() {
        let mut dec = FrameDecoder::new(100);
        assert_eq!(dec.push(&[0]), 1);
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(dec.push(&[5, 1, 2, 3]), 4);
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(dec.buffered(), 5);
        assert_eq!(dec.push(&[4, 5, 0]), 3);
        assert_eq!(dec.next_frame(), Ok(Some(&[1u8, 2, 3, 4, 5][..])));
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(dec.buffered(), 1);
    }

    #[test]
    fn zero_length_frame_is_a_sticky_error() {
        let mut dec = FrameDecoder::new(100);
        let _ = dec.push(&[0, 1, 9, 0, 0, 0, 1, 9]);
        assert_eq!(dec.next_frame(), Ok(Some(&[9u8][..])));
        assert_eq!(dec.next_frame(), Err(FramingError::EmptyFrame));
        assert_eq!(dec.next_frame(), Err(FramingError::EmptyFrame));
    }

    #[test]
    fn too_long_frame_fails_at_the_header() {
        let mut dec = FrameDecoder::new(100);
        assert_eq!(dec.push(&[0, 101]), 2);
        assert_eq!(
            dec.next_frame(),
            Err(FramingError::FrameTooLong { len: 101, max: 100 })
        );
        // Exactly the maximum is fine.
        let mut dec = FrameDecoder::new(100);
        let stream = framed(&[&[3u8; 100][..]]);
        assert_eq!(feed(&mut dec, &stream, 17).unwrap(), vec![vec![3u8; 100]]);
    }

    #[test]
    fn garbage_is_rejected_or_waits_never_panics() {
        let mut x: u32 = 0x1234_5678;
        for max in [1usize, 2, 100, 1500, MAX_FRAME_LEN, usize::MAX] {
            let mut dec = FrameDecoder::new(max);
            for _ in 0..2000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let chunk = x.to_le_bytes();
                let n = dec.push(&chunk[..(x as usize % 4) + 1]);
                match drain(&mut dec) {
                    Ok(_) => assert!(n > 0),
                    Err(e) => {
                        assert_eq!(dec.next_frame(), Err(e));
                        break;
                    }
                }
                assert!(dec.buffered() <= dec.max_frame_len() + 2);
            }
        }
    }

    #[test]
    fn read_buf_commit_path() {
        let mut dec = FrameDecoder::new(10);
        let stream = framed(&[b"abc", b"defgh"]);
        let buf = dec.read_buf();
        assert_eq!(buf.len(), 12);
        buf[..stream.len()].copy_from_slice(&stream);
        dec.commit(stream.len());
        assert_eq!(
            drain(&mut dec).unwrap(),
            vec![b"abc".to_vec(), b"defgh".to_vec()]
        );
        dec.commit(1000); // clamped, never out of bounds
        assert!(dec.buffered() <= 12);
    }

    #[test]
    fn encoding() {
        assert_eq!(encode_frame_header(0x0102), [1, 2]);
        let mut out = vec![0xEE];
        encode_frame(b"hi", &mut out).unwrap();
        assert_eq!(out, vec![0xEE, 0, 2, b'h', b'i']);
        assert_eq!(
            encode_frame(&[], &mut out),
            Err(FramingError::BadPayloadLength(0))
        );
        let big = vec![0u8; MAX_FRAME_LEN + 1];
        assert_eq!(
            encode_frame(&big, &mut out),
            Err(FramingError::BadPayloadLength(MAX_FRAME_LEN + 1))
        );
        assert_eq!(out.len(), 5);
    }
}
