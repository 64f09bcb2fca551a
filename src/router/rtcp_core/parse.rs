//! Parsing of compound RTCP packets (RFC 3550, RFC 4585, RFC 5104, REMB, transport-wide-cc)
//! into the items the router acts on. Zero-copy and allocation-free: list-valued fields are
//! views into the input. Never panics on any input.

use thiserror::Error;

/// RTCP packet types (RFC 3550, RFC 4585, RFC 3611).
pub mod packet_type {
    /// Sender Report.
    pub const SR: u8 = 200;
    /// Receiver Report.
    pub const RR: u8 = 201;
    /// Source Description.
    pub const SDES: u8 = 202;
    /// Goodbye.
    pub const BYE: u8 = 203;
    /// Application-defined.
    pub const APP: u8 = 204;
    /// Transport-layer feedback (NACK, transport-wide-cc).
    pub const RTPFB: u8 = 205;
    /// Payload-specific feedback (PLI, FIR, REMB).
    pub const PSFB: u8 = 206;
    /// Extended report.
    pub const XR: u8 = 207;
}

/// Feedback message types (the FMT field) we understand.
pub mod feedback_format {
    /// RTPFB: Generic NACK (RFC 4585).
    pub const NACK: u8 = 1;
    /// RTPFB: transport-wide congestion control feedback.
    pub const TWCC: u8 = 15;
    /// PSFB: Picture Loss Indication (RFC 4585).
    pub const PLI: u8 = 1;
    /// PSFB: Full Intra Request (RFC 5104).
    pub const FIR: u8 = 4;
    /// PSFB: application layer feedback (REMB).
    pub const AFB: u8 = 15;
}

/// Why a buffer was rejected as a compound RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// The buffer is empty.
    #[error("empty RTCP buffer")]
    Empty,
    /// Fewer than 4 header bytes remain at this offset.
    #[error("truncated RTCP header at offset {offset}")]
    TruncatedHeader {
        /// Byte offset of the packet in the compound.
        offset: usize,
    },
    /// The version field is not 2.
    #[error("RTCP version {version} at offset {offset}, expected 2")]
    BadVersion {
        /// Byte offset of the packet in the compound.
        offset: usize,
        /// The version found.
        version: u8,
    },
    /// The packet type is outside the RTCP range 192..=223 (RFC 5761).
    #[error("packet type {packet_type} at offset {offset} is not RTCP")]
    NotRtcp {
        /// Byte offset of the packet in the compound.
        offset: usize,
        /// The packet type found.
        packet_type: u8,
    },
    /// The length field points past the end of the buffer.
    #[error("RTCP packet at offset {offset} claims {claimed} bytes, {available} available")]
    LengthOverflow {
        /// Byte offset of the packet in the compound.
        offset: usize,
        /// Bytes the length field claims (header included).
        claimed: usize,
        /// Bytes left in the buffer from `offset`.
        available: usize,
    },
    /// A builder was asked to write more items than the packet format can carry.
    #[error("too many items for one RTCP packet: {count} (max {max})")]
    TooManyItems {
        /// Items requested.
        count: usize,
        /// The format's limit.
        max: usize,
    },
}

/// One reception report block (RFC 3550 6.4.1). `total_lost` is the signed 24-bit field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// SSRC of the source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, out of 256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (signed 24-bit range).
    pub total_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (LSR), 0 if none.
    pub last_sender_report: u32,
    /// Delay since the last SR in 1/65536 s (DLSR), 0 if none.
    pub delay: u32,
}

/// Sender information of a Sender Report (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderReport {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// 64-bit NTP timestamp.
    pub ntp_time: u64,
    /// RTP timestamp corresponding to `ntp_time`.
    pub rtp_time: u32,
    /// Packets sent (wrapping 32-bit).
    pub packet_count: u32,
    /// Payload octets sent (wrapping 32-bit).
    pub octet_count: u32,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]])) // `get` returned exactly 2 bytes
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]])) // exactly 4 bytes
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some((u64::from(be32(b, at)?) << 32) | u64::from(be32(b, at.checked_add(4)?)?))
}

/// Report blocks of an SR or RR, decoded lazily.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a> {
    raw: &'a [u8],
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;
    fn next(&mut self) -> Option<ReportBlock> {
        let b = self.raw.get(..24)?;
        self.raw = self.raw.get(24..).unwrap_or(&[]);
        let lost_raw = be32(b, 4)?;
        // Sign-extend the 24-bit cumulative loss.
        let total_lost = ((lost_raw << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: be32(b, 0)?,
            fraction_lost: (lost_raw >> 24) as u8,
            total_lost,
            extended_highest_seq: be32(b, 8)?,
            jitter: be32(b, 12)?,
            last_sender_report: be32(b, 16)?,
            delay: be32(b, 20)?,
        })
    }
}

/// A list of SSRCs (BYE sources, REMB SSRCs).
#[derive(Debug, Clone)]
pub struct SsrcList<'a> {
    raw: &'a [u8],
}

impl Iterator for SsrcList<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let v = be32(self.raw, 0)?;
        self.raw = self.raw.get(4..).unwrap_or(&[]);
        Some(v)
    }
}

/// The FCI entries of a Generic NACK: `(pid, blp)` pairs, or expanded with [`Self::seqs`].
#[derive(Debug, Clone)]
pub struct NackItems<'a> {
    raw: &'a [u8],
}

impl<'a> NackItems<'a> {
    /// The `(pid, blp)` pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.raw.chunks_exact(4).map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u16::from_be_bytes([c[2], c[3]]),
            )
        })
    }

    /// Every sequence number requested, in packet order (pid, then the set bits of blp).
    pub fn seqs(&self) -> impl Iterator<Item = u16> + 'a {
        self.pairs().flat_map(|(pid, blp)| {
            std::iter::once(pid).chain(
                (0u16..16)
                    .filter(move |i| blp & (1 << i) != 0)
                    .map(move |i| pid.wrapping_add(i + 1)),
            )
        })
    }
}

/// One SDES chunk: the source and its CNAME if present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// SSRC or CSRC the chunk describes.
    pub ssrc: u32,
    /// The CNAME item's text, if the chunk has one.
    pub cname: Option<&'a [u8]>,
}

/// SDES chunks, decoded lazily; iteration stops at the first malformed chunk.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    raw: &'a [u8],
    remaining: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;
    fn next(&mut self) -> Option<SdesChunk<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let ssrc = be32(self.raw, 0)?;
        let mut pos = 4usize;
        let mut cname = None;
        loop {
            let Some(&item_type) = self.raw.get(pos) else {
                self.remaining = 0;
                return None;
            };
            if item_type == 0 {
                // End of items; the chunk is padded to a 32-bit boundary.
                pos = (pos + 4) & !3;
                break;
            }
            let Some(&len) = self.raw.get(pos + 1) else {
                self.remaining = 0;
                return None;
            };
            let Some(text) = self.raw.get(pos + 2..pos + 2 + usize::from(len)) else {
                self.remaining = 0;
                return None;
            };
            if item_type == 1 {
                cname = Some(text);
            }
            pos += 2 + usize::from(len);
        }
        self.raw = self.raw.get(pos..).unwrap_or(&[]);
        Some(SdesChunk { ssrc, cname })
    }
}

/// One item of a compound RTCP packet.
#[derive(Debug, Clone)]
pub enum RtcpItem<'a> {
    /// A Sender Report with its reception report blocks.
    SenderReport {
        /// Sender information.
        report: SenderReport,
        /// Reception report blocks.
        blocks: ReportBlocks<'a>,
    },
    /// A Receiver Report.
    ReceiverReport {
        /// SSRC of the packet sender.
        ssrc: u32,
        /// Reception report blocks.
        blocks: ReportBlocks<'a>,
    },
    /// Generic NACK (RFC 4585 6.2.1).
    Nack {
        /// SSRC of the packet sender.
        sender_ssrc: u32,
        /// SSRC of the media source the NACK is about.
        media_ssrc: u32,
        /// Requested sequence numbers.
        items: NackItems<'a>,
    },
    /// Picture Loss Indication (RFC 4585 6.3.1).
    Pli {
        /// SSRC of the packet sender.
        sender_ssrc: u32,
        /// SSRC of the media source that should send a keyframe.
        media_ssrc: u32,
    },
    /// One FCI entry of a Full Intra Request (RFC 5104 4.3.1); a FIR packet with several
    /// entries yields one item each.
    Fir {
        /// SSRC of the packet sender.
        sender_ssrc: u32,
        /// SSRC of the media source that should send a keyframe.
        media_ssrc: u32,
        /// Command sequence number (repeats of one request share it).
        seq: u8,
    },
    /// Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb).
    Remb {
        /// SSRC of the packet sender.
        sender_ssrc: u32,
        /// Estimated bitrate in bits per second (saturated at `u64::MAX`).
        bitrate: u64,
        /// SSRCs the estimate applies to.
        ssrcs: SsrcList<'a>,
    },
    /// Transport-wide-cc feedback; only the header fields are decoded.
    TransportCc {
        /// SSRC of the packet sender.
        sender_ssrc: u32,
        /// Media SSRC field.
        media_ssrc: u32,
        /// First transport-wide sequence number reported.
        base_seq: u16,
        /// Number of packets reported.
        status_count: u16,
        /// Feedback packet counter.
        fb_pkt_count: u8,
    },
    /// Goodbye (RFC 3550 6.6).
    Bye {
        /// Sources leaving.
        ssrcs: SsrcList<'a>,
    },
    /// Source Description (RFC 3550 6.5).
    Sdes {
        /// The chunks.
        chunks: SdesChunks<'a>,
    },
    /// A well-framed packet of a type or format we do not act on (APP, XR, RRR, ...).
    Other {
        /// Packet type.
        packet_type: u8,
        /// Count / format field.
        format: u8,
    },
    /// A well-framed packet whose body is inconsistent with its type (too short for its
    /// counts, bad padding).
    Malformed {
        /// Packet type.
        packet_type: u8,
        /// Count / format field.
        format: u8,
    },
}

/// Iterator over the items of a compound RTCP packet, see [`parse_compound`].
#[derive(Debug, Clone)]
pub struct RtcpItems<'a> {
    rest: &'a [u8],
    /// Remaining FCI entries of the FIR packet being expanded, with its sender SSRC.
    fir: Option<(u32, &'a [u8])>,
}

/// Checks that `buf` is a well-framed compound RTCP packet (every header has version 2, an
/// RTCP packet type and a length inside the buffer, and the lengths add up to the buffer) and
/// returns an iterator over its items. Bodies are checked lazily: a packet whose body does
/// not fit its type yields [`RtcpItem::Malformed`]. Reduced-size RTCP (RFC 5506) is accepted.
pub fn parse_compound(buf: &[u8]) -> Result<RtcpItems<'_>, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut offset = 0usize;
    while offset < buf.len() {
        let rest = buf.get(offset..).unwrap_or(&[]);
        let (Some(&b0), Some(&pt), Some(len_words)) = (rest.first(), rest.get(1), be16(rest, 2))
        else {
            return Err(RtcpError::TruncatedHeader { offset });
        };
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtcpError::BadVersion { offset, version });
        }
        if !(192..=223).contains(&pt) {
            return Err(RtcpError::NotRtcp {
                offset,
                packet_type: pt,
            });
        }
        let claimed = (usize::from(len_words) + 1) * 4;
        if claimed > rest.len() {
            return Err(RtcpError::LengthOverflow {
                offset,
                claimed,
                available: rest.len(),
            });
        }
        offset += claimed;
    }
    Ok(RtcpItems {
        rest: buf,
        fir: None,
    })
}

impl<'a> Iterator for RtcpItems<'a> {
    type Item = RtcpItem<'a>;

    fn next(&mut self) -> Option<RtcpItem<'a>> {
        if let Some(item) = self.next_fir() {
            return Some(item);
        }
        loop {
            let b0 = *self.rest.first()?;
            let pt = *self.rest.get(1)?;
            let total = (usize::from(be16(self.rest, 2)?) + 1) * 4;
            let packet = self.rest.get(..total)?; // framing was checked by parse_compound
            self.rest = self.rest.get(total..).unwrap_or(&[]);
            let format = b0 & 0x1f;
            let mut body = packet.get(4..).unwrap_or(&[]);
            if b0 & 0x20 != 0 {
                // Padding: the last byte says how many bytes to drop, itself included.
                let pad = usize::from(*body.last().unwrap_or(&0));
                if pad == 0 || pad > body.len() {
                    return Some(RtcpItem::Malformed {
                        packet_type: pt,
                        format,
                    });
                }
                body = body.get(..body.len() - pad).unwrap_or(&[]);
            }
            if pt == packet_type::PSFB && format == feedback_format::FIR {
                // FCI entries are yielded one by one; an empty FIR yields nothing.
                let (Some(sender_ssrc), Some(fci)) = (be32(body, 0), body.get(8..)) else {
                    return Some(RtcpItem::Malformed {
                        packet_type: pt,
                        format,
                    });
                };
                self.fir = Some((sender_ssrc, fci));
                if let Some(item) = self.next_fir() {
                    return Some(item);
                }
                continue;
            }
            return Some(parse_body(pt, format, body).unwrap_or(RtcpItem::Malformed {
                packet_type: pt,
                format,
            }));
        }
    }
}

impl<'a> RtcpItems<'a> {
    fn next_fir(&mut self) -> Option<RtcpItem<'a>> {
        let (sender_ssrc, fci) = self.fir.take()?;
        let media_ssrc = be32(fci, 0)?;
        let seq = *fci.get(4)?;
        self.fir = Some((sender_ssrc, fci.get(8..).unwrap_or(&[])));
        Some(RtcpItem::Fir {
            sender_ssrc,
            media_ssrc,
            seq,
        })
    }
}

/// Decodes one packet body (FIR excluded); `None` means malformed.
fn parse_body(pt: u8, format: u8, body: &[u8]) -> Option<RtcpItem<'_>> {
    let count = usize::from(format);
    match pt {
        packet_type::SR => {
            let blocks = body.get(24..24 + count * 24)?;
            Some(RtcpItem::SenderReport {
                report: SenderReport {
                    ssrc: be32(body, 0)?,
                    ntp_time: be64(body, 4)?,
                    rtp_time: be32(body, 12)?,
                    packet_count: be32(body, 16)?,
                    octet_count: be32(body, 20)?,
                },
                blocks: ReportBlocks { raw: blocks },
            })
        }
        packet_type::RR => {
            let blocks = body.get(4..4 + count * 24)?;
            Some(RtcpItem::ReceiverReport {
                ssrc: be32(body, 0)?,
                blocks: ReportBlocks { raw: blocks },
            })
        }
        packet_type::SDES => Some(RtcpItem::Sdes {
            chunks: SdesChunks {
                raw: body,
                remaining: format,
            },
        }),
        packet_type::BYE => Some(RtcpItem::Bye {
            ssrcs: SsrcList {
                raw: body.get(..count * 4)?,
            },
        }),
        packet_type::RTPFB => {
            let sender_ssrc = be32(body, 0)?;
            let media_ssrc = be32(body, 4)?;
            match format {
                feedback_format::NACK => {
                    let fci = body.get(8..)?;
                    if fci.is_empty() {
                        return None;
                    }
                    Some(RtcpItem::Nack {
                        sender_ssrc,
                        media_ssrc,
                        items: NackItems { raw: fci },
                    })
                }
                feedback_format::TWCC => Some(RtcpItem::TransportCc {
                    sender_ssrc,
                    media_ssrc,
                    base_seq: be16(body, 8)?,
                    status_count: be16(body, 10)?,
                    fb_pkt_count: *body.get(15)?,
                }),
                _ => Some(RtcpItem::Other {
                    packet_type: pt,
                    format,
                }),
            }
        }
        packet_type::PSFB => {
            let sender_ssrc = be32(body, 0)?;
            let media_ssrc = be32(body, 4)?;
            match format {
                feedback_format::PLI => Some(RtcpItem::Pli {
                    sender_ssrc,
                    media_ssrc,
                }),
                feedback_format::AFB if body.get(8..12) == Some(b"REMB") => {
                    let num = usize::from(*body.get(12)?);
                    let exp = u32::from(*body.get(13)? >> 2);
                    let mantissa = (u64::from(*body.get(13)? & 0x03) << 16)
                        | (u64::from(*body.get(14)?) << 8)
                        | u64::from(*body.get(15)?);
                    let bitrate = if mantissa == 0 {
                        0
                    } else if exp >= mantissa.leading_zeros() {
                        u64::MAX
                    } else {
                        mantissa << exp
                    };
                    Some(RtcpItem::Remb {
                        sender_ssrc,
                        bitrate,
                        ssrcs: SsrcList {
                            raw: body.get(16..16 + num * 4)?,
                        },
                    })
                }
                _ => Some(RtcpItem::Other {
                    packet_type: pt,
                    format,
                }),
            }
        }
        _ => Some(RtcpItem::Other {
            packet_type: pt,
            format,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(buf: &[u8]) -> Result<usize, RtcpError> {
        let mut n = 0;
        for item in parse_compound(buf)? {
            n += 1;
            match item {
                RtcpItem::SenderReport { blocks, .. } | RtcpItem::ReceiverReport { blocks, .. } => {
                    n += blocks.count()
                }
                RtcpItem::Nack { items, .. } => n += items.seqs().count(),
                RtcpItem::Remb { ssrcs, .. } | RtcpItem::Bye { ssrcs } => n += ssrcs.count(),
                RtcpItem::Sdes { chunks } => n += chunks.count(),
                _ => {}
            }
        }
        Ok(n)
    }

    #[test]
    fn rejects_bad_framing() {
        assert_eq!(parse_compound(&[]).unwrap_err(), RtcpError::Empty);
        assert!(matches!(
            parse_compound(&[0x80, 201, 0]),
            Err(RtcpError::TruncatedHeader { offset: 0 })
        ));
        assert!(matches!(
            parse_compound(&[0x40, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::BadVersion { version: 1, .. })
        ));
        // An RTP packet (PT 96) is not RTCP.
        assert!(matches!(
            parse_compound(&[0x80, 96, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::NotRtcp {
                packet_type: 96,
                ..
            })
        ));
        // Length beyond the buffer, and a trailing partial header.
        assert!(matches!(
            parse_compound(&[0x80, 201, 0, 2, 0, 0, 0, 0]),
            Err(RtcpError::LengthOverflow {
                claimed: 12,
                available: 8,
                ..
            })
        ));
        assert!(matches!(
            parse_compound(&[0x80, 201, 0, 1, 0, 0, 0, 0, 0x80]),
            Err(RtcpError::TruncatedHeader { offset: 8 })
        ));
        assert!(matches!(
            parse_compound(&[0x80, 201, 0xff, 0xff]),
            Err(RtcpError::LengthOverflow { .. })
        ));
    }

    #[test]
    fn inconsistent_bodies_are_malformed_items() {
        // RR claiming 2 blocks in an 8-byte packet.
        let rr = [0x82, 201, 0, 1, 0, 0, 0, 1];
        let items: Vec<_> = parse_compound(&rr).unwrap().collect();
        assert!(matches!(
            items[..],
            [RtcpItem::Malformed {
                packet_type: 201,
                format: 2
            }]
        ));
        // Padding count larger than the body, and zero padding count.
        let pad = [0xa0, 201, 0, 1, 0, 0, 0, 9];
        assert!(matches!(
            parse_compound(&pad).unwrap().next(),
            Some(RtcpItem::Malformed { .. })
        ));
        let pad0 = [0xa0, 201, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            parse_compound(&pad0).unwrap().next(),
            Some(RtcpItem::Malformed { .. })
        ));
        // NACK without any FCI entry.
        let nack = [0x81, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        assert!(matches!(
            parse_compound(&nack).unwrap().next(),
            Some(RtcpItem::Malformed {
                packet_type: 205,
                format: 1
            })
        ));
        // Header-only packets of every type must not panic.
        for pt in 192..=223u8 {
            for fmt in 0..32u8 {
                let buf = [0x80 | fmt, pt, 0, 0];
                assert!(drain(&buf).is_ok());
            }
        }
    }

    #[test]
    fn valid_padding_is_stripped() {
        // RR with one 4-byte padding word: ssrc, then 00 00 00 04.
        let buf = [0xa0, 201, 0, 2, 0, 0, 0, 7, 0, 0, 0, 4];
        match parse_compound(&buf).unwrap().next() {
            Some(RtcpItem::ReceiverReport { ssrc: 7, blocks }) => assert_eq!(blocks.count(), 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fir_with_several_entries_and_trailing_garbage() {
        let mut buf = vec![0x84, 206, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0];
        buf.extend_from_slice(&[0, 0, 0, 5, 3, 0, 0, 0, 0, 0, 0, 6, 4, 0, 0, 0]);
        buf.extend_from_slice(&[0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 9]); // PLI after
        let items: Vec<_> = parse_compound(&buf).unwrap().collect();
        assert_eq!(items.len(), 3);
        assert!(matches!(
            items[0],
            RtcpItem::Fir {
                media_ssrc: 5,
                seq: 3,
                ..
            }
        ));
        assert!(matches!(
            items[1],
            RtcpItem::Fir {
                media_ssrc: 6,
                seq: 4,
                ..
            }
        ));
        assert!(matches!(items[2], RtcpItem::Pli { media_ssrc: 9, .. }));
        // An empty FIR yields nothing and parsing continues.
        let empty = [
            0x84, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0x80, 201, 0, 1, 0, 0, 0, 1,
        ];
        let items: Vec<_> = parse_compound(&empty).unwrap().collect();
        assert!(matches!(
            items[..],
            [RtcpItem::ReceiverReport { ssrc: 1, .. }]
        ));
    }

    #[test]
    fn remb_exponent_saturates_and_wrong_id_is_other() {
        let mut buf = vec![0x8f, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0];
        buf.extend_from_slice(b"REMB");
        buf.extend_from_slice(&[0, 0xff, 0xff, 0xff]); // exp 63, mantissa 2^18-1
        assert!(matches!(
            parse_compound(&buf).unwrap().next(),
            Some(RtcpItem::Remb {
                bitrate: u64::MAX,
                ..
            })
        ));
        // REMB claiming more SSRCs than present.
        buf[12 + 4] = 3;
        assert!(matches!(
            parse_compound(&buf).unwrap().next(),
            Some(RtcpItem::Malformed { .. })
        ));
        buf[12..16].copy_from_slice(b"XXXX");
        assert!(matches!(
            parse_compound(&buf).unwrap().next(),
            Some(RtcpItem::Other {
                packet_type: 206,
                format: 15
            })
        ));
    }

    #[test]
    fn sdes_truncated_item_stops_iteration() {
        // One chunk claiming an item of 200 bytes in a 12-byte body.
        let buf = [0x81, 202, 0, 2, 0, 0, 0, 1, 1, 200, b'a', b'b'];
        match parse_compound(&buf).unwrap().next() {
            Some(RtcpItem::Sdes { chunks }) => assert_eq!(chunks.count(), 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        // xorshift, fixed seed: deterministic pseudo-fuzzing on top of the cargo-fuzz target.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut seed = Vec::new();
        super::super::write_sdes_cname(&mut seed, 1, b"cname");
        super::super::write_nack(&mut seed, 1, 2, &[1, 2, 40]);
        super::super::write_fir(&mut seed, 1, 2, 3);
        super::super::write_remb(&mut seed, 1, 5000, &[1]).unwrap();
        for _ in 0..20_000 {
            let mut buf = seed.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % buf.len();
                buf[i] = next() as u8;
            }
            buf.truncate((next() as usize) % (buf.len() + 1));
            let _ = drain(&buf);
            let len = (next() % 64) as usize;
            let rnd: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = drain(&rnd);
        }
    }
}
