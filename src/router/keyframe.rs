//! Codec payload inspection for forwarding decisions: keyframe detection, temporal/spatial
//! layer ids, and in-place VP8 PictureID/TL0PICIDX rewriting.
//!
//! This module owns the parsers of the VP8 payload descriptor (RFC 7741), the VP9 payload
//! descriptor (RFC 9628, formerly draft-ietf-payload-vp9) and the H.264 NAL unit header
//! (RFC 6184, single NAL, STAP-A, FU-A), plus [`Vp8Rewriter`], the per-consumer state that
//! keeps VP8 picture numbering continuous across simulcast switches. Every function takes
//! the RTP payload (padding excluded, see [`crate::router::seq::RtpView::payload`]); it
//! allocates nothing and never panics on truncated or hostile input.

use crate::router::seq::SeqManager;

/// Why a codec payload could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The payload ends inside the descriptor (or has no media byte after it).
    #[error("payload descriptor truncated")]
    Truncated,
}

/// Video codecs whose payloads we inspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// VP8, RFC 7741.
    Vp8,
    /// VP9, RFC 9628.
    Vp9,
    /// H.264, RFC 6184 (packetization modes 0 and 1).
    H264,
}

/// Layer facts of one packet, as the simulcast/SVC selector needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerInfo {
    /// The packet starts (or, for H.264, contains the start of) a keyframe.
    pub keyframe: bool,
    /// Temporal layer id (0 when the codec/stream does not say).
    pub temporal_id: u8,
    /// Spatial layer id inside the stream (VP9 SVC; 0 otherwise).
    pub spatial_id: u8,
    /// Switching up to `temporal_id` at this packet is safe (VP8 Y bit, VP9 U bit).
    pub layer_sync: bool,
}

/// Parses `payload` of `codec` into [`LayerInfo`]. Unparseable payloads give `None`.
pub fn layer_info(codec: VideoCodec, payload: &[u8]) -> Option<LayerInfo> {
    match codec {
        VideoCodec::Vp8 => Vp8Descriptor::parse(payload).ok().map(|d| LayerInfo {
            keyframe: d.is_keyframe,
            temporal_id: d.temporal_id.unwrap_or(0),
            spatial_id: 0,
            layer_sync: d.layer_sync,
        }),
        VideoCodec::Vp9 => Vp9Descriptor::parse(payload).ok().map(|d| LayerInfo {
            keyframe: d.is_keyframe,
            temporal_id: d.temporal_id.unwrap_or(0),
            spatial_id: d.spatial_id.unwrap_or(0),
            layer_sync: d.switching_up,
        }),
        VideoCodec::H264 => Some(LayerInfo {
            keyframe: h264_is_keyframe(payload),
            ..LayerInfo::default()
        }),
    }
}

/// Whether `payload` starts a keyframe; false for anything unparseable.
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    layer_info(codec, payload).is_some_and(|i| i.keyframe)
}

/// A parsed VP8 payload descriptor (RFC 7741 section 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// N: the frame can be discarded without affecting others.
    pub non_reference: bool,
    /// S: first packet of a partition.
    pub start_of_partition: bool,
    /// PID: partition index.
    pub partition_id: u8,
    /// PictureID (7 or 15 bits), if present.
    pub picture_id: Option<u16>,
    /// The PictureID field is 15 bits (M bit set).
    pub picture_id_15bit: bool,
    /// TL0PICIDX, if present.
    pub tl0_pic_idx: Option<u8>,
    /// TID, if present.
    pub temporal_id: Option<u8>,
    /// Y: layer sync (frame depends only on TL0 frames).
    pub layer_sync: bool,
    /// KEYIDX, if present.
    pub key_idx: Option<u8>,
    /// Descriptor length; the VP8 payload header follows.
    pub header_len: usize,
    /// Start of partition 0 of a key frame (S=1, PID=0, payload header P bit = 0).
    pub is_keyframe: bool,
    picture_id_offset: Option<usize>,
    tl0_offset: Option<usize>,
}

impl Vp8Descriptor {
    /// Parses the descriptor at the start of a VP8 RTP payload.
    pub fn parse(p: &[u8]) -> Result<Self, PayloadError> {
        let at = |i: usize| p.get(i).copied().ok_or(PayloadError::Truncated);
        let b0 = at(0)?;
        let mut d = Self {
            non_reference: b0 & 0x20 != 0,
            start_of_partition: b0 & 0x10 != 0,
            partition_id: b0 & 0x07,
            ..Self::default()
        };
        let mut pos = 1;
        if b0 & 0x80 != 0 {
            let x = at(pos)?;
            pos += 1;
            if x & 0x80 != 0 {
                let b = at(pos)?;
                d.picture_id_offset = Some(pos);
                if b & 0x80 != 0 {
                    d.picture_id = Some(u16::from_be_bytes([b & 0x7F, at(pos + 1)?]));
                    d.picture_id_15bit = true;
                    pos += 2;
                } else {
                    d.picture_id = Some((b & 0x7F) as u16);
                    pos += 1;
                }
            }
            if x & 0x40 != 0 {
                d.tl0_pic_idx = Some(at(pos)?);
                d.tl0_offset = Some(pos);
                pos += 1;
            }
            if x & 0x30 != 0 {
                let b = at(pos)?;
                if x & 0x20 != 0 {
                    d.temporal_id = Some(b >> 6);
                    d.layer_sync = b & 0x20 != 0;
                }
                if x & 0x10 != 0 {
                    d.key_idx = Some(b & 0x1F);
                }
                pos += 1;
            }
        }
        d.header_len = pos;
        // The VP8 payload header (its first byte) exists only at the start of partition 0.
        if d.start_of_partition && d.partition_id == 0 {
            d.is_keyframe = at(pos)? & 0x01 == 0;
        }
        Ok(d)
    }
}

/// Per-consumer VP8 state: rewrites PictureID and TL0PICIDX in place so that the receiver
/// sees continuous numbering across simulcast switches and dropped temporal layers (what
/// mediasoup's VP8 `EncodingContext` does).
#[derive(Debug, Clone)]
pub struct Vp8Rewriter {
    picture_id: SeqManager,
    picture_id_bits: u32,
    tl0: SeqManager,
    sync_pending: bool,
}

impl Default for Vp8Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Vp8Rewriter {
    /// Fresh state; the first packet re-bases (as after [`sync`](Self::sync)).
    pub fn new() -> Self {
        Self {
            picture_id: SeqManager::with_bits(15),
            picture_id_bits: 15,
            tl0: SeqManager::with_bits(8),
            sync_pending: true,
        }
    }

    /// The next packet comes from a new source stream (layer switch, resume): its picture
    /// continues from the last output PictureID + 1 and TL0PICIDX + 1.
    pub fn sync(&mut self) {
        self.sync_pending = true;
    }

    /// A packet of the current source is not forwarded (e.g. temporal layer above target):
    /// its picture leaves no gap in the output PictureIDs.
    pub fn drop_packet(&mut self, payload: &[u8]) {
        if self.sync_pending {
            return;
        }
        if let Ok(Vp8Descriptor {
            picture_id: Some(pid),
            picture_id_15bit,
            ..
        }) = Vp8Descriptor::parse(payload)
        {
            if self.bits_for(picture_id_15bit) == self.picture_id_bits {
                self.picture_id.drop(pid);
            }
        }
    }

    fn bits_for(&self, wide: bool) -> u32 {
        if wide {
            15
        } else {
            7
        }
    }

    /// Rewrites the descriptor of `payload` in place. `Ok(false)` means the packet belongs to
    /// a picture announced as dropped (or too old to map) and must not be forwarded. Fields
    /// absent from the descriptor are left alone.
    pub fn rewrite(&mut self, payload: &mut [u8]) -> Result<bool, PayloadError> {
        let d = Vp8Descriptor::parse(payload)?;
        let bits = self.bits_for(d.picture_id_15bit);
        if d.picture_id.is_some() && bits != self.picture_id_bits {
            // The sender changed the field width: restart numbering in the new width.
            self.picture_id = SeqManager::with_bits(bits);
            self.picture_id_bits = bits;
            self.sync_pending = true;
        }
        if self.sync_pending {
            self.sync_pending = false;
            if let Some(pid) = d.picture_id {
                self.picture_id.sync(pid.wrapping_sub(1));
            }
            if let Some(t) = d.tl0_pic_idx {
                self.tl0.sync(u16::from(t).wrapping_sub(1));
            }
        }
        let new_pid = match d.picture_id {
            Some(pid) => match self.picture_id.input(pid) {
                Some(out) => Some(out),
                None => return Ok(false),
            },
            None => None,
        };
        let new_tl0 = match d.tl0_pic_idx {
            Some(t) => match self.tl0.input(u16::from(t)) {
                Some(out) => Some(out as u8),
                None => return Ok(false),
            },
            None => None,
        };
        // Offsets come from the parse above, which checked they are in bounds.
        if let (Some(out), Some(off)) = (new_pid, d.picture_id_offset) {
            if d.picture_id_15bit {
                if let Some(f) = payload.get_mut(off..off + 2) {
                    f.copy_from_slice(&(out | 0x8000).to_be_bytes());
                }
            } else if let Some(f) = payload.get_mut(off) {
                *f = (out & 0x7F) as u8;
            }
        }
        if let (Some(out), Some(off)) = (new_tl0, d.tl0_offset) {
            if let Some(f) = payload.get_mut(off) {
                *f = out;
            }
        }
        Ok(true)
    }
}

/// A parsed VP9 payload descriptor (RFC 9628 section 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp9Descriptor {
    /// P: inter-picture predicted (depends on earlier pictures).
    pub inter_picture: bool,
    /// F: flexible mode.
    pub flexible: bool,
    /// B: first packet of a layer frame.
    pub start_of_frame: bool,
    /// E: last packet of a layer frame.
    pub end_of_frame: bool,
    /// V: a scalability structure is present.
    pub has_scalability_structure: bool,
    /// PictureID (7 or 15 bits), if present.
    pub picture_id: Option<u16>,
    /// TID, if layer indices are present.
    pub temporal_id: Option<u8>,
    /// U: switching up point.
    pub switching_up: bool,
    /// SID, if layer indices are present.
    pub spatial_id: Option<u8>,
    /// D: inter-layer dependency.
    pub inter_layer_dependency: bool,
    /// TL0PICIDX (non-flexible mode with layer indices).
    pub tl0_pic_idx: Option<u8>,
    /// Descriptor length; the VP9 frame data follows.
    pub header_len: usize,
    /// First packet of an intra-only base-layer frame: B=1, P=0 and spatial id 0.
    pub is_keyframe: bool,
}

impl Vp9Descriptor {
    /// Parses the descriptor at the start of a VP9 RTP payload, including (and skipping over)
    /// reference indices and the scalability structure, whose lengths are validated.
    pub fn parse(p: &[u8]) -> Result<Self, PayloadError> {
        let at = |i: usize| p.get(i).copied().ok_or(PayloadError::Truncated);
        let b0 = at(0)?;
        let mut d = Self {
            inter_picture: b0 & 0x40 != 0,
            flexible: b0 & 0x10 != 0,
            start_of_frame: b0 & 0x08 != 0,
            end_of_frame: b0 & 0x04 != 0,
            has_scalability_structure: b0 & 0x02 != 0,
            ..Self::default()
        };
        let mut pos = 1;
        if b0 & 0x80 != 0 {
            let b = at(pos)?;
            if b & 0x80 != 0 {
                d.picture_id = Some(u16::from_be_bytes([b & 0x7F, at(pos + 1)?]));
                pos += 2;
            } else {
                d.picture_id = Some((b & 0x7F) as u16);
                pos += 1;
            }
        }
        if b0 & 0x20 != 0 {
            let b = at(pos)?;
            d.temporal_id = Some(b >> 5);
            d.switching_up = b & 0x10 != 0;
            d.spatial_id = Some((b >> 1) & 0x07);
            d.inter_layer_dependency = b & 0x01 != 0;
            pos += 1;
            if !d.flexible {
                d.tl0_pic_idx = Some(at(pos)?);
                pos += 1;
            }
        }
        if d.flexible && d.inter_picture {
            // Up to 3 P_DIFF bytes, each with an N ("more follow") bit.
            for i in 0..3 {
                let b = at(pos)?;
                pos += 1;
                if b & 0x01 == 0 {
                    break;
                }
                if i == 2 {
                    return Err(PayloadError::Truncated);
                }
            }
        }
        if d.has_scalability_structure {
            let b = at(pos)?;
            pos += 1;
            let n_s = (b >> 5) as usize + 1;
            if b & 0x10 != 0 {
                pos += 4 * n_s; // WIDTH and HEIGHT per spatial layer.
            }
            if b & 0x08 != 0 {
                let n_g = at(pos)? as usize;
                pos += 1;
                for _ in 0..n_g {
                    let r = (at(pos)? >> 2) & 0x03;
                    pos += 1 + r as usize;
                }
            }
            if pos > p.len() {
                return Err(PayloadError::Truncated);
            }
        }
        d.header_len = pos;
        d.is_keyframe = d.start_of_frame && !d.inter_picture && d.spatial_id.unwrap_or(0) == 0;
        Ok(d)
    }
}

/// H.264 NAL unit types that make a packet a keyframe: IDR slice (5) and SPS (7).
fn h264_key_nal(nal_type: u8) -> bool {
    matches!(nal_type, 5 | 7)
}

/// Whether an H.264 RTP payload (RFC 6184) carries the start of a keyframe: a single NAL unit
/// of type 5 (IDR) or 7 (SPS), a STAP-A aggregating one, or the first FU-A fragment of one.
/// Truncated or malformed payloads are not keyframes.
pub fn h264_is_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1F {
        24 => {
            // STAP-A: [16-bit size][NAL]...
            let mut pos = 1;
            while let (Some(&hi), Some(&lo)) = (p.get(pos), p.get(pos + 1)) {
                let size = u16::from_be_bytes([hi, lo]) as usize;
                pos += 2;
                if size == 0 || pos + size > p.len() {
                    return false;
                }
                if h264_key_nal(p[pos] & 0x1F) {
                    return true;
                }
                pos += size;
            }
            false
        }
        28 => p
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && h264_key_nal(fu & 0x1F)),
        t => h264_key_nal(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // VP8: X=1, S=1, PID=0; I,L,T set; 15-bit picture id 0x1234; tl0 7; TID 2, Y=1.
    fn vp8_full(pid: u16, tl0: u8, tid: u8, key: bool) -> Vec<u8> {
        let pid = pid | 0x8000;
        vec![
            0x90,
            0xE0,
            (pid >> 8) as u8,
            pid as u8,
            tl0,
            (tid << 6) | 0x20,
            if key { 0x00 } else { 0x01 },
            0xAA,
        ]
    }

    #[test]
    fn vp8_parses_all_fields() {
        let d = Vp8Descriptor::parse(&vp8_full(0x1234, 7, 2, true)).unwrap();
        assert_eq!(d.picture_id, Some(0x1234));
        assert!(d.picture_id_15bit);
        assert_eq!(d.tl0_pic_idx, Some(7));
        assert_eq!(d.temporal_id, Some(2));
        assert!(d.layer_sync);
        assert_eq!(d.key_idx, None);
        assert_eq!(d.header_len, 6);
        assert!(d.is_keyframe);
        assert!(is_keyframe(VideoCodec::Vp8, &vp8_full(1, 1, 0, true)));
        assert!(!is_keyframe(VideoCodec::Vp8, &vp8_full(1, 1, 0, false)));
    }

    #[test]
    fn vp8_minimal_and_7bit_and_keyidx() {
        // No X: payload header right after.
        let d = Vp8Descriptor::parse(&[0x10, 0x00]).unwrap();
        assert!(d.is_keyframe);
        assert_eq!(d.header_len, 1);
        // Not start of partition 0: never keyframe.
        assert!(!Vp8Descriptor::parse(&[0x11, 0x00]).unwrap().is_keyframe);
        assert!(!Vp8Descriptor::parse(&[0x00, 0x00]).unwrap().is_keyframe);
        // 7-bit picture id, K only.
        let d = Vp8Descriptor::parse(&[0x80, 0x90, 0x05, 0x1F, 0x01]).unwrap();
        assert_eq!(d.picture_id, Some(5));
        assert!(!d.picture_id_15bit);
        assert_eq!(d.key_idx, Some(0x1F));
        assert_eq!(d.temporal_id, None);
        assert!(!d.is_keyframe);
    }

    #[test]
    fn vp8_truncated_never_keyframe() {
        let full = vp8_full(0x1234, 7, 2, true);
        for n in 0..full.len() - 1 {
            assert!(Vp8Descriptor::parse(&full[..n]).is_err(), "len {n}");
            assert!(!is_keyframe(VideoCodec::Vp8, &full[..n]));
        }
        // Start of partition 0 with nothing after the descriptor.
        assert_eq!(Vp8Descriptor::parse(&[0x10]), Err(PayloadError::Truncated));
    }

    #[test]
    fn vp8_rewriter_continuity_across_switch_and_drops() {
        let mut r = Vp8Rewriter::new();
        let read = |p: &[u8]| {
            let d = Vp8Descriptor::parse(p).unwrap();
            (d.picture_id.unwrap(), d.tl0_pic_idx.unwrap())
        };
        // Stream A: pictures 100..=102 (tl0 50, 50, 51).
        let mut p = vp8_full(100, 50, 0, true);
        assert!(r.rewrite(&mut p).unwrap());
        let (pid0, tl00) = read(&p);
        assert_eq!(p[6..], [0x00, 0xAA], "payload untouched");
        let mut p = vp8_full(101, 50, 1, false);
        r.drop_packet(&p); // temporal layer filtered
        assert!(
            !r.rewrite(&mut p.clone()).unwrap(),
            "dropped picture refused"
        );
        let mut p2 = vp8_full(102, 51, 0, false);
        assert!(r.rewrite(&mut p2).unwrap());
        assert_eq!(read(&p2), (pid0 + 1, tl00.wrapping_add(1)));
        // Switch to stream B with unrelated numbering, near wrap.
        r.sync();
        p = vp8_full(0x7FFF, 255, 0, true);
        assert!(r.rewrite(&mut p).unwrap());
        assert_eq!(read(&p), (pid0 + 2, tl00.wrapping_add(2)));
        p = vp8_full(0, 0, 0, false);
        assert!(r.rewrite(&mut p).unwrap());
        assert_eq!(read(&p), (pid0 + 3, tl00.wrapping_add(3)));
        assert!(Vp8Descriptor::parse(&p).unwrap().picture_id_15bit);
    }

    #[test]
    fn vp8_rewriter_7bit_and_errors() {
        let mut r = Vp8Rewriter::new();
        let mut p = [0x90, 0x80, 0x7F, 0x00];
        assert!(r.rewrite(&mut p).unwrap());
        let first = p[2];
        let mut p = [0x90, 0x80, 0x00, 0x01];
        assert!(r.rewrite(&mut p).unwrap());
        assert_eq!(p[2], (first + 1) & 0x7F);
        assert!(p[2] & 0x80 == 0);
        assert_eq!(r.rewrite(&mut [0x90, 0x80]), Err(PayloadError::Truncated));
        // No picture id at all: left untouched, forwarded.
        let mut p = [0x10, 0x00, 0x42];
        assert!(r.rewrite(&mut p).unwrap());
        assert_eq!(p, [0x10, 0x00, 0x42]);
    }

    #[test]
    fn vp9_keyframe_and_layers() {
        // I=1 L=1 B=1 E=1, non-flexible; pid 15-bit 0x0102; TID 1 U=1 SID 0; tl0 9.
        let p = [0xAC, 0x81, 0x02, (1 << 5) | 0x10, 9, 0xFF];
        let d = Vp9Descriptor::parse(&p).unwrap();
        assert_eq!(d.picture_id, Some(0x0102));
        assert_eq!(d.temporal_id, Some(1));
        assert_eq!(d.spatial_id, Some(0));
        assert!(d.switching_up);
        assert_eq!(d.tl0_pic_idx, Some(9));
        assert_eq!(d.header_len, 5);
        assert!(d.is_keyframe);
        // Spatial layer 1 of the same picture: not a keyframe start.
        let p1 = [0xAC, 0x81, 0x02, (1 << 5) | 0x02, 9];
        assert!(!is_keyframe(VideoCodec::Vp9, &p1));
        // P bit set: not a keyframe.
        assert!(!is_keyframe(VideoCodec::Vp9, &[0x48]));
        // Minimal B-only descriptor: keyframe.
        assert!(is_keyframe(VideoCodec::Vp9, &[0x08]));
        let info = layer_info(VideoCodec::Vp9, &p).unwrap();
        assert_eq!(
            (info.temporal_id, info.spatial_id, info.layer_sync),
            (1, 0, true)
        );
    }

    #[test]
    fn vp9_flexible_and_scalability_structure() {
        // F=1 P=1 L=1: layer byte (no tl0), 2 P_DIFF bytes (first with N).
        let p = [0x78, 0x00, 0x03, 0x04];
        assert_eq!(Vp9Descriptor::parse(&p).unwrap().header_len, 4);
        // Four P_DIFF bytes all with N set: malformed.
        assert!(Vp9Descriptor::parse(&[0x50, 0x03, 0x03, 0x03, 0x03]).is_err());
        // V=1: N_S=1 (2 layers), Y=1, G=1; 2x4 size bytes; N_G=1 with R=2.
        let mut p = vec![0x0A, 0x38];
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[1, 0x08, 5, 6]);
        let d = Vp9Descriptor::parse(&p).unwrap();
        assert!(d.has_scalability_structure && d.is_keyframe);
        assert_eq!(d.header_len, p.len());
        for n in 0..p.len() {
            assert!(Vp9Descriptor::parse(&p[..n]).is_err(), "len {n}");
        }
    }

    #[test]
    fn h264_keyframes() {
        assert!(h264_is_keyframe(&[0x65, 0x88])); // IDR
        assert!(h264_is_keyframe(&[0x67, 0x42])); // SPS
        assert!(!h264_is_keyframe(&[0x41, 0x9A])); // non-IDR slice
        assert!(!h264_is_keyframe(&[0x68])); // PPS alone
        assert!(!h264_is_keyframe(&[]));
        // STAP-A: PPS then SPS.
        assert!(h264_is_keyframe(&[
            0x78, 0, 2, 0x68, 0xCE, 0, 2, 0x67, 0x42
        ]));
        assert!(!h264_is_keyframe(&[
            0x78, 0, 2, 0x68, 0xCE, 0, 2, 0x41, 0x00
        ]));
        // STAP-A whose second size runs past the end.
        assert!(!h264_is_keyframe(&[0x78, 0, 2, 0x68, 0xCE, 0, 9, 0x67]));
        assert!(!h264_is_keyframe(&[0x78, 0, 0, 0x67]));
        assert!(!h264_is_keyframe(&[0x78, 0]));
        // FU-A: start of IDR yes, middle no, start of non-IDR no, truncated no.
        assert!(h264_is_keyframe(&[0x7C, 0x85, 0x00]));
        assert!(!h264_is_keyframe(&[0x7C, 0x05, 0x00]));
        assert!(!h264_is_keyframe(&[0x7C, 0x81, 0x00]));
        assert!(!h264_is_keyframe(&[0x7C]));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 0x1234_5678;
        let mut buf = [0u8; 24];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 25) as usize;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (x.rotate_left(i as u32 * 3) >> 7) as u8;
            }
            for c in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264] {
                let _ = layer_info(c, &buf[..len]);
            }
            let _ = Vp8Rewriter::new().rewrite(&mut buf[..len]);
        }
    }
}
