//! Arbitrary bytes as a compound RTCP packet: parse, walk every item and nested list, and
//! check that items we can re-serialise parse back to the same values. Nothing may panic.
//! The same bytes also drive the NACK generator and TWCC recorder as sequence numbers.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pipemesh::router::rtcp_core::{
    parse_compound, write_fir, write_nack, write_pli, write_receiver_reports, write_sender_report,
    NackGenerator, RtcpItem, TwccRecorder,
};

fn reparse_one(buf: &[u8]) -> RtcpItem<'_> {
    parse_compound(buf)
        .expect("our own output is well framed")
        .next()
        .expect("our own output has an item")
}

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = parse_compound(data) {
        let mut out = Vec::new();
        for item in items {
            out.clear();
            match item {
                RtcpItem::SenderReport { report, blocks } => {
                    let b: Vec<_> = blocks.collect();
                    write_sender_report(&mut out, &report, &b).expect("at most 31 blocks");
                    match reparse_one(&out) {
                        RtcpItem::SenderReport {
                            report: r2,
                            blocks: b2,
                        } => {
                            assert_eq!(report, r2);
                            assert_eq!(b, b2.collect::<Vec<_>>());
                        }
                        other => panic!("{other:?}"),
                    }
                }
                RtcpItem::ReceiverReport { ssrc, blocks } => {
                    let b: Vec<_> = blocks.collect();
                    write_receiver_reports(&mut out, ssrc, &b);
                    match reparse_one(&out) {
                        RtcpItem::ReceiverReport {
                            ssrc: s2,
                            blocks: b2,
                        } => {
                            assert_eq!(ssrc, s2);
                            assert_eq!(b, b2.collect::<Vec<_>>());
                        }
                        other => panic!("{other:?}"),
                    }
                }
                RtcpItem::Nack {
                    sender_ssrc,
                    media_ssrc,
                    items,
                } => {
                    let seqs: Vec<u16> = items.seqs().collect();
                    write_nack(&mut out, sender_ssrc, media_ssrc, &seqs);
                    match reparse_one(&out) {
                        RtcpItem::Nack { items: i2, .. } => {
                            let mut a = seqs.clone();
                            let mut b: Vec<u16> = i2.seqs().collect();
                            a.sort_unstable();
                            a.dedup();
                            b.sort_unstable();
                            b.dedup();
                            assert_eq!(a, b);
                        }
                        other => panic!("{other:?}"),
                    }
                }
                RtcpItem::Pli {
                    sender_ssrc,
                    media_ssrc,
                } => {
                    write_pli(&mut out, sender_ssrc, media_ssrc);
                    assert!(matches!(reparse_one(&out), RtcpItem::Pli { .. }));
                }
                RtcpItem::Fir {
                    sender_ssrc,
                    media_ssrc,
                    seq,
                } => {
                    write_fir(&mut out, sender_ssrc, media_ssrc, seq);
                    match reparse_one(&out) {
                        RtcpItem::Fir {
                            media_ssrc: m2,
                            seq: s2,
                            ..
                        } => {
                            assert_eq!((media_ssrc, seq), (m2, s2))
                        }
                        other => panic!("{other:?}"),
                    }
                }
                RtcpItem::Remb { ssrcs, .. } | RtcpItem::Bye { ssrcs } => {
                    let _ = ssrcs.count();
                }
                RtcpItem::Sdes { chunks } => {
                    for c in chunks {
                        let _ = c.cname.map(<[u8]>::len);
                    }
                }
                RtcpItem::TransportCc { .. }
                | RtcpItem::Other { .. }
                | RtcpItem::Malformed { .. } => {}
            }
        }
    }

    // The bytes as a sequence of 16-bit sequence numbers with arrival gaps.
    let t0 = Instant::now();
    let mut now = t0;
    let mut nack = NackGenerator::default();
    let mut twcc = TwccRecorder::default();
    let mut seqs = Vec::new();
    let mut fb = Vec::new();
    for pair in data.chunks_exact(3) {
        let seq = u16::from_be_bytes([pair[0], pair[1]]);
        now += Duration::from_micros(u64::from(pair[2]) * 997);
        let _ = nack.on_packet(now, seq);
        twcc.on_packet(now, seq);
        seqs.clear();
        nack.poll_nacks(now, None, &mut seqs);
        fb.clear();
        if twcc.poll_feedback(now, 1, 2, &mut fb) > 0 {
            for item in parse_compound(&fb).expect("our feedback is well framed") {
                assert!(matches!(item, RtcpItem::TransportCc { .. }));
            }
        }
    }
});
