//! Serialisation of the RTCP packets the router sends: SR, RR, SDES (CNAME), BYE, Generic
//! NACK, PLI, FIR and REMB, appended to a caller-owned buffer so that several packets form one
//! compound packet. Transport-wide-cc feedback is written by [`super::TwccRecorder`].

use super::{feedback_format, packet_type, ReportBlock, RtcpError, SenderReport};

/// Most report blocks one SR/RR can carry (5-bit count).
pub const MAX_REPORT_BLOCKS: usize = 31;

/// Starts a packet: writes the header with a zero length and returns its offset.
pub(crate) fn begin_packet(out: &mut Vec<u8>, count_or_format: u8, pt: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0x80 | (count_or_format & 0x1f), pt, 0, 0]);
    start
}

/// Ends a packet started at `start`: pads with zeros to 32 bits (without the P bit; only
/// SDES, BYE and TWCC bodies may need it, and zero bytes are valid there) and sets the length.
pub(crate) fn finish_packet(out: &mut Vec<u8>, start: usize) {
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    let words = ((out.len() - start) / 4 - 1).min(usize::from(u16::MAX)) as u16;
    if let Some(len) = out.get_mut(start + 2..start + 4) {
        len.copy_from_slice(&words.to_be_bytes());
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_block(out: &mut Vec<u8>, b: &ReportBlock) {
    put_u32(out, b.ssrc);
    let lost24 = (b.total_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0x00ff_ffff;
    put_u32(out, (u32::from(b.fraction_lost) << 24) | lost24);
    put_u32(out, b.extended_highest_seq);
    put_u32(out, b.jitter);
    put_u32(out, b.last_sender_report);
    put_u32(out, b.delay);
}

/// Appends a Sender Report carrying up to 31 report blocks.
pub fn write_sender_report(
    out: &mut Vec<u8>,
    sr: &SenderReport,
    blocks: &[ReportBlock],
) -> Result<(), RtcpError> {
    if blocks.len() > MAX_REPORT_BLOCKS {
        return Err(RtcpError::TooManyItems {
            count: blocks.len(),
            max: MAX_REPORT_BLOCKS,
        });
    }
    let start = begin_packet(out, blocks.len() as u8, packet_type::SR);
    put_u32(out, sr.ssrc);
    out.extend_from_slice(&sr.ntp_time.to_be_bytes());
    put_u32(out, sr.rtp_time);
    put_u32(out, sr.packet_count);
    put_u32(out, sr.octet_count);
    for b in blocks {
        put_block(out, b);
    }
    finish_packet(out, start);
    Ok(())
}

/// Appends Receiver Reports for any number of blocks (several RR packets when more than 31;
/// one empty RR when `blocks` is empty, as a compound packet must start with SR or RR).
pub fn write_receiver_reports(out: &mut Vec<u8>, sender_ssrc: u32, blocks: &[ReportBlock]) {
    let mut chunks = blocks.chunks(MAX_REPORT_BLOCKS);
    let first = chunks.next().unwrap_or(&[]);
    for chunk in std::iter::once(first).chain(chunks) {
        let start = begin_packet(out, chunk.len() as u8, packet_type::RR);
        put_u32(out, sender_ssrc);
        for b in chunk {
            put_block(out, b);
        }
        finish_packet(out, start);
    }
}

/// Appends an SDES packet with one chunk carrying a CNAME (truncated to 255 bytes).
pub fn write_sdes_cname(out: &mut Vec<u8>, ssrc: u32, cname: &[u8]) {
    let start = begin_packet(out, 1, packet_type::SDES);
    put_u32(out, ssrc);
    let text = cname.get(..cname.len().min(255)).unwrap_or(&[]);
    out.push(1);
    out.push(text.len() as u8);
    out.extend_from_slice(text);
    // The item list ends with at least one zero byte, then zero padding to 32 bits.
    out.push(0);
    finish_packet(out, start);
}

/// Appends a BYE for up to 31 sources.
pub fn write_bye(out: &mut Vec<u8>, ssrcs: &[u32]) -> Result<(), RtcpError> {
    if ssrcs.len() > MAX_REPORT_BLOCKS {
        return Err(RtcpError::TooManyItems {
            count: ssrcs.len(),
            max: MAX_REPORT_BLOCKS,
        });
    }
    let start = begin_packet(out, ssrcs.len() as u8, packet_type::BYE);
    for s in ssrcs {
        put_u32(out, *s);
    }
    finish_packet(out, start);
    Ok(())
}

/// Packs sequence numbers into RFC 4585 `(pid, blp)` pairs. Optimal when `seqs` is in
/// ascending (wrapping) order; any order is still encoded correctly. Does not allocate.
pub fn pack_nack_pairs(seqs: &[u16]) -> impl Iterator<Item = (u16, u16)> + '_ {
    let mut rest = seqs;
    std::iter::from_fn(move || {
        let (&pid, tail) = rest.split_first()?;
        let mut blp = 0u16;
        let mut used = 0;
        for &s in tail {
            let d = s.wrapping_sub(pid);
            if (1..=16).contains(&d) {
                blp |= 1 << (d - 1);
                used += 1;
            } else if d == 0 {
                used += 1; // duplicate of pid
            } else {
                break;
            }
        }
        rest = tail.get(used..).unwrap_or(&[]);
        Some((pid, blp))
    })
}

/// Most `(pid, blp)` pairs one NACK packet can carry (16-bit length field).
pub const MAX_NACK_PAIRS: usize = u16::MAX as usize - 2;

/// Appends one Generic NACK packet requesting `seqs`. Writes nothing for an empty list.
/// Pairs beyond [`MAX_NACK_PAIRS`] are dropped; callers keep packets below the MTU by
/// splitting long lists (e.g. `seqs.chunks(200)`) anyway.
pub fn write_nack(out: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32, seqs: &[u16]) {
    if seqs.is_empty() {
        return;
    }
    let start = begin_packet(out, feedback_format::NACK, packet_type::RTPFB);
    put_u32(out, sender_ssrc);
    put_u32(out, media_ssrc);
    for (pid, blp) in pack_nack_pairs(seqs).take(MAX_NACK_PAIRS) {
        out.extend_from_slice(&pid.to_be_bytes());
        out.extend_from_slice(&blp.to_be_bytes());
    }
    finish_packet(out, start);
}

/// Appends a Picture Loss Indication.
pub fn write_pli(out: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32) {
    let start = begin_packet(out, feedback_format::PLI, packet_type::PSFB);
    put_u32(out, sender_ssrc);
    put_u32(out, media_ssrc);
    finish_packet(out, start);
}

/// Appends a Full Intra Request with one FCI entry (RFC 5104 4.3.1). The common header's
/// media SSRC is 0 as the RFC requires; the target is in the FCI.
pub fn write_fir(out: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32, seq: u8) {
    let start = begin_packet(out, feedback_format::FIR, packet_type::PSFB);
    put_u32(out, sender_ssrc);
    put_u32(out, 0);
    put_u32(out, media_ssrc);
    out.extend_from_slice(&[seq, 0, 0, 0]);
    finish_packet(out, start);
}

/// Appends a REMB (bitrate in bits per second, encoded with an 18-bit mantissa and 6-bit
/// exponent, rounded down) for up to 255 SSRCs.
pub fn write_remb(
    out: &mut Vec<u8>,
    sender_ssrc: u32,
    bitrate: u64,
    ssrcs: &[u32],
) -> Result<(), RtcpError> {
    if ssrcs.len() > 255 {
        return Err(RtcpError::TooManyItems {
            count: ssrcs.len(),
            max: 255,
        });
    }
    let mut exp = 0u32;
    while (bitrate >> exp) >= (1 << 18) {
        exp += 1;
    }
    let mantissa = (bitrate >> exp) as u32;
    let start = begin_packet(out, feedback_format::AFB, packet_type::PSFB);
    put_u32(out, sender_ssrc);
    put_u32(out, 0);
    out.extend_from_slice(b"REMB");
    out.push(ssrcs.len() as u8);
    out.push(((exp as u8) << 2) | ((mantissa >> 16) as u8 & 0x03));
    out.extend_from_slice(&(mantissa as u16).to_be_bytes());
    for s in ssrcs {
        put_u32(out, *s);
    }
    finish_packet(out, start);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{parse_compound, RtcpItem};
    use super::*;
    use bytes::Bytes;
    use rtcp::packet::unmarshal;

    fn block(ssrc: u32, total_lost: i32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 25,
            total_lost,
            extended_highest_seq: 0x0001_0005,
            jitter: 77,
            last_sender_report: 0xdead_beef,
            delay: 65536,
        }
    }

    #[test]
    fn sr_rr_sdes_roundtrip_through_both_parsers() {
        let mut out = Vec::new();
        let sr = SenderReport {
            ssrc: 1,
            ntp_time: 0x1122_3344_5566_7788,
            rtp_time: 9000,
            packet_count: 10,
            octet_count: 1000,
        };
        write_sender_report(&mut out, &sr, &[block(2, -3), block(3, 0x7f_ffff)]).unwrap();
        write_receiver_reports(&mut out, 1, &[block(4, 5)]);
        write_sdes_cname(&mut out, 1, b"abc");
        write_bye(&mut out, &[1, 2]).unwrap();
        assert_eq!(out.len() % 4, 0);

        let pkts = unmarshal(&mut Bytes::from(out.clone())).unwrap();
        assert_eq!(pkts.len(), 4);
        let csr = pkts[0]
            .as_any()
            .downcast_ref::<rtcp::sender_report::SenderReport>()
            .unwrap();
        assert_eq!(csr.ntp_time, sr.ntp_time);
        assert_eq!(csr.reports[0].total_lost, 0x00ff_fffd); // -3 as 24-bit
        assert_eq!(csr.reports[1].last_sender_report, 0xdead_beef);

        let items: Vec<_> = parse_compound(&out).unwrap().collect();
        assert_eq!(items.len(), 4);
        match &items[0] {
            RtcpItem::SenderReport { report, blocks } => {
                assert_eq!(*report, sr);
                let b: Vec<_> = blocks.clone().collect();
                assert_eq!(b, vec![block(2, -3), block(3, 0x7f_ffff)]);
            }
            other => panic!("{other:?}"),
        }
        match &items[1] {
            RtcpItem::ReceiverReport { ssrc, blocks } => {
                assert_eq!(*ssrc, 1);
                assert_eq!(blocks.clone().collect::<Vec<_>>(), vec![block(4, 5)]);
            }
            other => panic!("{other:?}"),
        }
        match &items[2] {
            RtcpItem::Sdes { chunks } => {
                let c: Vec<_> = chunks.clone().collect();
                assert_eq!(c.len(), 1);
                assert_eq!(c[0].ssrc, 1);
                assert_eq!(c[0].cname, Some(&b"abc"[..]));
            }
            other => panic!("{other:?}"),
        }
        match &items[3] {
            RtcpItem::Bye { ssrcs } => assert_eq!(ssrcs.clone().collect::<Vec<_>>(), vec![1, 2]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sdes_with_aligned_cname_gets_full_null_word() {
        let mut out = Vec::new();
        write_sdes_cname(&mut out, 7, b"ab"); // 4 + 2 + 2 = aligned before the null
        write_sdes_cname(&mut out, 8, b"0123456789");
        let pkts = unmarshal(&mut Bytes::from(out.clone())).unwrap();
        assert_eq!(pkts.len(), 2);
        let names: Vec<_> = parse_compound(&out)
            .unwrap()
            .flat_map(|i| match i {
                RtcpItem::Sdes { chunks } => chunks.map(|c| (c.ssrc, c.cname)).collect(),
                _ => vec![],
            })
            .collect();
        assert_eq!(
            names,
            vec![(7, Some(&b"ab"[..])), (8, Some(&b"0123456789"[..]))]
        );
    }

    #[test]
    fn many_receiver_blocks_split_into_packets() {
        let blocks: Vec<_> = (0..40).map(|i| block(i, 0)).collect();
        let mut out = Vec::new();
        write_receiver_reports(&mut out, 9, &blocks);
        let got: Vec<_> = parse_compound(&out)
            .unwrap()
            .flat_map(|i| match i {
                RtcpItem::ReceiverReport { blocks, .. } => blocks.collect(),
                _ => vec![],
            })
            .collect();
        assert_eq!(got, blocks);
        let mut empty = Vec::new();
        write_receiver_reports(&mut empty, 9, &[]);
        assert_eq!(empty.len(), 8);
        assert!(write_sender_report(&mut out, &SenderReport::default(), &blocks).is_err());
    }

    #[test]
    fn nack_pairs_pack_and_expand() {
        let seqs = [65534u16, 65535, 0, 3, 14, 15, 100];
        let pairs: Vec<_> = pack_nack_pairs(&seqs).collect();
        // 65535..=14 are within 16 of 65534; 15 is 17 away.
        assert_eq!(pairs[0].0, 65534);
        assert_eq!(pairs[0].1, (1 << 0) | (1 << 1) | (1 << 4) | (1 << 15));
        assert_eq!(pairs[1], (15, 0));
        assert_eq!(pairs[2], (100, 0));
        let mut out = Vec::new();
        write_nack(&mut out, 1, 2, &seqs);
        let pkts = unmarshal(&mut Bytes::from(out.clone())).unwrap();
        let n = pkts[0]
            .as_any()
            .downcast_ref::<rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack>()
            .unwrap();
        assert_eq!(n.nacks.len(), 3);
        match parse_compound(&out).unwrap().next().unwrap() {
            RtcpItem::Nack {
                sender_ssrc,
                media_ssrc,
                items,
            } => {
                assert_eq!((sender_ssrc, media_ssrc), (1, 2));
                assert_eq!(items.seqs().collect::<Vec<_>>(), seqs.to_vec());
            }
            other => panic!("{other:?}"),
        }
        // Unsorted input and duplicates still request every sequence number.
        let odd = [10u16, 5, 10, 6, 5];
        let mut expanded: Vec<u16> = pack_nack_pairs(&odd)
            .flat_map(|(p, b)| {
                std::iter::once(p).chain(
                    (0..16)
                        .filter(move |i| b & (1 << i) != 0)
                        .map(move |i| p + i + 1),
                )
            })
            .collect();
        expanded.sort();
        expanded.dedup();
        assert_eq!(expanded, vec![5, 6, 10]);
        let mut none = Vec::new();
        write_nack(&mut none, 1, 2, &[]);
        assert!(none.is_empty());
    }

    #[test]
    fn pli_fir_remb_roundtrip() {
        let mut out = Vec::new();
        write_pli(&mut out, 1, 2);
        write_fir(&mut out, 1, 3, 7);
        write_remb(&mut out, 1, 1_234_567, &[2, 3]).unwrap();
        write_remb(&mut out, 1, 100, &[]).unwrap();
        let pkts = unmarshal(&mut Bytes::from(out.clone())).unwrap();
        assert_eq!(pkts.len(), 4);
        let fir = pkts[1]
            .as_any()
            .downcast_ref::<rtcp::payload_feedbacks::full_intra_request::FullIntraRequest>()
            .unwrap();
        assert_eq!((fir.fir[0].ssrc, fir.fir[0].sequence_number), (3, 7));
        let remb = pkts[2]
            .as_any()
            .downcast_ref::<rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate>()
            .unwrap();
        assert!((remb.bitrate - 1_234_567.0).abs() / 1_234_567.0 < 0.001);
        assert_eq!(remb.ssrcs, vec![2, 3]);

        let items: Vec<_> = parse_compound(&out).unwrap().collect();
        assert!(matches!(
            items[0],
            RtcpItem::Pli {
                sender_ssrc: 1,
                media_ssrc: 2
            }
        ));
        assert!(matches!(
            items[1],
            RtcpItem::Fir {
                sender_ssrc: 1,
                media_ssrc: 3,
                seq: 7
            }
        ));
        match &items[2] {
            RtcpItem::Remb { bitrate, ssrcs, .. } => {
                // 18-bit mantissa: at most 1/2^17 relative truncation.
                assert!(*bitrate <= 1_234_567 && *bitrate > 1_234_567 - 10);
                assert_eq!(ssrcs.clone().collect::<Vec<_>>(), vec![2, 3]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(items[3], RtcpItem::Remb { bitrate: 100, .. }));
        assert!(write_remb(&mut out, 1, 1, &[0; 256]).is_err());
    }
}
