//! RTCP feedback through the worker: NACKs answered with RTX from the consumer's buffer, keyframe
//! requests forwarded to the publisher with throttling, transport-wide-cc feedback to the
//! publisher. Sans-IO, as the parent module: hand-made SRTP(C) in, outputs decrypted and parsed.

use super::*;
use crate::router::rtcp_core::{self, parse_compound, RtcpItem};

/// A VP8 producer with one encoding, RTX, NACK/PLI feedback and the transport-wide-cc
/// extension, as mediasoup-client sends for a non-simulcast webcam.
const VP8_SSRC: u32 = 1_111_111;
const VP8_RTX_SSRC: u32 = 2_222_222;
const VP8_PT: u8 = 96;
const TWCC_EXT_ID: u8 = 3;

fn vp8_params() -> String {
    json!({
        "mid": "1",
        "codecs": [
            {"mimeType": "video/VP8", "payloadType": VP8_PT, "clockRate": 90000, "parameters": {},
             "rtcpFeedback": [{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"},
                              {"type": "ccm", "parameter": "fir"}, {"type": "transport-cc", "parameter": ""}]},
            {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": VP8_PT}, "rtcpFeedback": []}
        ],
        "headerExtensions": [
            {"uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "id": TWCC_EXT_ID, "encrypt": false, "parameters": {}}
        ],
        "encodings": [{"ssrc": VP8_SSRC, "rtx": {"ssrc": VP8_RTX_SSRC}}],
        "rtcp": {"cname": "alice-cname", "reducedSize": true}
    })
    .to_string()
}

/// A VP8 RTP packet carrying a transport-wide sequence number (one-byte extension form).
fn vp8_packet(seq: u16, twcc: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x90, VP8_PT];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(3000 * u32::from(seq)).to_be_bytes());
    p.extend_from_slice(&VP8_SSRC.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE, 0, 1]);
    p.extend_from_slice(&[(TWCC_EXT_ID << 4) | 1]);
    p.extend_from_slice(&twcc.to_be_bytes());
    p.push(0);
    p.extend_from_slice(payload);
    p
}

struct VideoRoom {
    h: Harness,
    alice: SessionId,
    bob: SessionId,
    send_tuple: Tuple,
    recv_tuple: Tuple,
    alice_out: Context,
    alice_in: Context,
    bob_out: Context,
    bob_in: Context,
    consumer: Value,
}

impl VideoRoom {
    fn new() -> Self {
        let mut h = Harness::new();
        let alice = h.open("alice");
        let bob = h.open("bob");
        let send = h.transport(alice, true, false);
        let recv = h.transport(bob, false, true);
        h.join(alice, "A", true);
        h.join(bob, "B", true);
        let (send_tuple, recv_tuple) = (udp(5100), udp(6100));
        let (send_keys, recv_keys) = (srtp_keys(20), srtp_keys(70));
        h.connect_media(alice, &send, send_tuple, &send_keys);
        h.connect_media(bob, &recv, recv_tuple, &recv_keys);
        let params = vp8_params();
        let v = h.ok(
            alice,
            "produce",
            json!({"transportId": tid(&send), "kind": "video", "rtpParameters": fixture(&params), "appData": {}}),
        );
        assert!(v["id"].is_string());
        let offers = new_consumers_for(&h.drain(), bob);
        assert_eq!(offers.len(), 1, "Bob is offered Alice's video");
        let (id, data) = offers[0].clone();
        h.w.handle_consumer_answer(h.now, bob, &id, true);
        h.drain();
        Self {
            h,
            alice,
            bob,
            send_tuple,
            recv_tuple,
            alice_out: client_out(&send_keys),
            alice_in: client_in(&send_keys),
            bob_out: client_out(&recv_keys),
            bob_in: client_in(&recv_keys),
            consumer: data,
        }
    }

    fn consumer_u32(&self, v: &Value) -> u32 {
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .expect("u32 field")
    }

    fn consumer_ssrc(&self) -> u32 {
        self.consumer_u32(&self.consumer["rtpParameters"]["encodings"][0]["ssrc"])
    }

    fn consumer_rtx(&self) -> (u32, u8) {
        let ssrc =
            self.consumer_u32(&self.consumer["rtpParameters"]["encodings"][0]["rtx"]["ssrc"]);
        let codecs = self.consumer["rtpParameters"]["codecs"]
            .as_array()
            .expect("codecs");
        let rtx = codecs
            .iter()
            .find(|c| {
                c["mimeType"]
                    .as_str()
                    .is_some_and(|m| m.eq_ignore_ascii_case("video/rtx"))
            })
            .expect("the consumer negotiated RTX");
        (
            ssrc,
            u8::try_from(rtx["payloadType"].as_u64().expect("pt")).expect("pt fits"),
        )
    }

    /// Alice sends a packet; returns the plain RTP packets Bob receives.
    fn alice_sends(&mut self, seq: u16, payload: &[u8]) -> Vec<Vec<u8>> {
        let enc = self
            .alice_out
            .encrypt_rtp(&vp8_packet(seq, seq, payload))
            .expect("encrypt");
        self.h.w.handle_packet(self.h.now, self.send_tuple, &enc);
        let out = self.h.drain();
        transmits_to(&out, self.recv_tuple)
            .iter()
            .map(|p| self.bob_in.decrypt_rtp(p).expect("Bob decrypts").to_vec())
            .collect()
    }

    /// Bob sends an RTCP compound packet; returns what reaches each of Alice and Bob.
    fn bob_sends_rtcp(&mut self, plain: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let enc = self.bob_out.encrypt_rtcp(plain).expect("encrypt rtcp");
        self.h.w.handle_packet(self.h.now, self.recv_tuple, &enc);
        let out = self.h.drain();
        self.split(out)
    }

    /// Lets `span` pass in 5 ms steps (timers fire); what reached Alice and Bob meanwhile, as
    /// [`Self::split`].
    fn run_for(&mut self, span: Duration) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let until = self.h.now + span;
        let mut outputs = Vec::new();
        while self.h.now < until {
            let next = (self.h.now + Duration::from_millis(5)).min(until);
            self.h.advance_to(next);
            outputs.extend(self.h.drain());
        }
        self.split(outputs)
    }

    /// Outputs to Alice (RTCP, decrypted) and to Bob (RTP, decrypted).
    fn split(&mut self, out: Vec<Output>) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        use crate::edge::demux::{classify, PacketClass};
        let to_alice = transmits_to(&out, self.send_tuple)
            .iter()
            .filter(|p| classify(p) == PacketClass::Rtcp)
            .map(|p| {
                self.alice_in
                    .decrypt_rtcp(p)
                    .expect("Alice decrypts RTCP")
                    .to_vec()
            })
            .collect();
        // Bob also gets RTCP (sender reports); keep his RTP.
        let to_bob = transmits_to(&out, self.recv_tuple)
            .iter()
            .filter(|p| classify(p) == PacketClass::Rtp)
            .map(|p| self.bob_in.decrypt_rtp(p).expect("Bob decrypts").to_vec())
            .collect();
        (to_alice, to_bob)
    }
}

fn plis_in(packets: &[Vec<u8>]) -> Vec<u32> {
    let mut v = Vec::new();
    for p in packets {
        for item in parse_compound(p).expect("valid RTCP") {
            if let RtcpItem::Pli { media_ssrc, .. } = item {
                v.push(media_ssrc);
            }
        }
    }
    v
}

#[test]
fn nack_is_answered_with_rtx_from_the_consumer_buffer() {
    let mut r = VideoRoom::new();
    let mut sent = Vec::new();
    for seq in 100..105u16 {
        let got = r.alice_sends(seq, format!("frame {seq}").as_bytes());
        assert_eq!(got.len(), 1, "packet {seq} forwarded");
        sent.push(got[0].clone());
    }
    let lost = RtpView::parse(&sent[2][..]).expect("rtp");
    let (lost_seq, lost_payload) = (lost.sequence_number(), lost.payload().to_vec());
    assert_eq!(lost.ssrc(), r.consumer_ssrc());

    let mut nack = Vec::new();
    rtcp_core::write_nack(&mut nack, 0xB0B, r.consumer_ssrc(), &[lost_seq]);
    let (_, to_bob) = r.bob_sends_rtcp(&nack);
    assert_eq!(to_bob.len(), 1, "one retransmission");
    let rtx = RtpView::parse(&to_bob[0][..]).expect("RTX packet parses");
    let (rtx_ssrc, rtx_pt) = r.consumer_rtx();
    assert_eq!(rtx.ssrc(), rtx_ssrc);
    assert_eq!(rtx.payload_type(), rtx_pt);
    let p = rtx.payload();
    assert_eq!(
        u16::from_be_bytes([p[0], p[1]]),
        lost_seq,
        "RFC 4588 original sequence number"
    );
    assert_eq!(&p[2..], &lost_payload[..]);

    // The same NACK again at once is not answered twice (resend throttle).
    let (_, again) = r.bob_sends_rtcp(&nack);
    assert!(again.is_empty());
    // A NACK for a packet never sent is ignored.
    let mut unknown = Vec::new();
    rtcp_core::write_nack(
        &mut unknown,
        0xB0B,
        r.consumer_ssrc(),
        &[lost_seq.wrapping_add(1000)],
    );
    assert!(r.bob_sends_rtcp(&unknown).1.is_empty());
}

#[test]
fn keyframe_requests_reach_the_publisher_throttled() {
    let mut r = VideoRoom::new();
    // Media must have flowed for the producer's SSRC to be known to feedback.
    assert_eq!(r.alice_sends(1, b"key").len(), 1);
    // Accepting the consumer already asked for a keyframe; let its throttle window pass.
    let later = r.h.now + crate::timing::KEYFRAME_REQUEST_THROTTLE;
    r.h.advance_to(later);
    r.h.drain();
    let mut pli = Vec::new();
    rtcp_core::write_pli(&mut pli, 0xB0B, r.consumer_ssrc());
    let (to_alice, _) = r.bob_sends_rtcp(&pli);
    assert_eq!(
        plis_in(&to_alice),
        vec![VP8_SSRC],
        "PLI rewritten to Alice's SSRC"
    );

    // A second request inside the throttle window is held...
    let (to_alice, _) = r.bob_sends_rtcp(&pli);
    assert!(plis_in(&to_alice).is_empty());
    // ...and sent when the window ends.
    let (to_alice, _) =
        r.run_for(crate::timing::KEYFRAME_REQUEST_THROTTLE + Duration::from_millis(20));
    assert_eq!(plis_in(&to_alice), vec![VP8_SSRC]);

    // requestConsumerKeyFrame from signaling takes the same path.
    r.h.now += crate::timing::KEYFRAME_REQUEST_THROTTLE;
    let consumer_id = r.consumer["id"].as_str().expect("id").to_owned();
    r.h.ok(
        r.bob,
        "requestConsumerKeyFrame",
        json!({"consumerId": consumer_id}),
    );
    let out = r.h.drain();
    let (to_alice, _) = r.split(out);
    assert_eq!(plis_in(&to_alice), vec![VP8_SSRC]);
    let _ = r.alice;
}

#[test]
fn publisher_gets_transport_wide_cc_feedback() {
    let mut r = VideoRoom::new();
    for seq in 0..10u16 {
        r.alice_sends(seq, b"x");
        r.h.now += Duration::from_millis(5);
    }
    let mut outputs = Vec::new();
    let until = r.h.now + crate::timing::TWCC_FEEDBACK_INTERVAL + Duration::from_millis(20);
    while r.h.now < until {
        let next = (r.h.now + Duration::from_millis(5)).min(until);
        r.h.advance_to(next);
        outputs.extend(r.h.drain());
    }
    let (to_alice, _) = r.split(outputs);
    let reported: u16 = to_alice
        .iter()
        .flat_map(|p| parse_compound(p).expect("valid RTCP").collect::<Vec<_>>())
        .filter_map(|i| match i {
            RtcpItem::TransportCc {
                base_seq,
                status_count,
                ..
            } => {
                assert_eq!(base_seq, 0, "feedback starts at the first packet");
                Some(status_count)
            }
            _ => None,
        })
        .sum();
    assert_eq!(reported, 10, "every packet Alice sent is reported");
}

#[test]
fn metrics_count_packets_feedback_and_retransmissions() {
    use crate::metrics::{Direction, Feedback, Kind};
    use std::sync::atomic::Ordering;
    let mut r = VideoRoom::new();
    let m = r.h.w.counters();
    let udp = |d| {
        let h = m.media.traffic.sizes(Kind::Udp, d);
        (h.count(), h.sum_raw())
    };
    let fb = |f, d| m.media.rtcp_feedback_total(f, d);
    let (in0, out0) = (udp(Direction::In), udp(Direction::Out));
    let sent = r.alice_sends(7, b"counted");
    assert_eq!(sent.len(), 1);
    let enc_len = r
        .alice_out
        .encrypt_rtp(&vp8_packet(8, 8, b"counted"))
        .expect("encrypt")
        .len() as u64;
    let (in1, out1) = (udp(Direction::In), udp(Direction::Out));
    assert_eq!(in1.0 - in0.0, 1, "one packet in");
    assert_eq!(in1.1 - in0.1, enc_len, "its SRTP bytes");
    assert!(out1.0 > out0.0, "the forwarded copy is counted out");
    assert_eq!(m.media.traffic.sizes(Kind::Tcp, Direction::In).count(), 0);

    // A NACK in is counted, and so is the retransmission it causes.
    let seq = RtpView::parse(&sent[0][..]).expect("rtp").sequence_number();
    let mut nack = Vec::new();
    rtcp_core::write_nack(&mut nack, 0xB0B, r.consumer_ssrc(), &[seq]);
    let (_, to_bob) = r.bob_sends_rtcp(&nack);
    assert_eq!(to_bob.len(), 1);
    assert_eq!(fb(Feedback::Nack, Direction::In), 1);
    assert_eq!(m.media.retransmissions.load(Ordering::Relaxed), 1);

    // A PLI in is counted; the PLI sent to Alice for it is counted out.
    r.h.advance_to(r.h.now + crate::timing::KEYFRAME_REQUEST_THROTTLE);
    r.h.drain();
    let pli_out = fb(Feedback::Pli, Direction::Out);
    let mut pli = Vec::new();
    rtcp_core::write_pli(&mut pli, 0xB0B, r.consumer_ssrc());
    let (to_alice, _) = r.bob_sends_rtcp(&pli);
    assert_eq!(plis_in(&to_alice).len(), 1);
    assert_eq!(fb(Feedback::Pli, Direction::In), 1);
    assert_eq!(fb(Feedback::Pli, Direction::Out), pli_out + 1);
    assert_eq!(fb(Feedback::Fir, Direction::In), 0);

    // Alice's lost packets make the worker NACK her, counted out.
    let nack_out = fb(Feedback::Nack, Direction::Out);
    r.alice_sends(20, b"after a gap");
    let (to_alice, _) = r.run_for(Duration::from_millis(200));
    let nacks = to_alice
        .iter()
        .flat_map(|p| parse_compound(p).expect("valid RTCP").collect::<Vec<_>>())
        .filter(|i| matches!(i, RtcpItem::Nack { .. }))
        .count() as u64;
    assert!(nacks > 0, "the gap 8..20 is NACKed");
    assert_eq!(fb(Feedback::Nack, Direction::Out), nack_out + nacks);

    // State gauges follow the worker's maps.
    let g = &m.media.gauges;
    let gauges = [
        &g.rooms,
        &g.peers,
        &g.sessions,
        &g.transports,
        &g.producers,
        &g.consumers,
    ]
    .map(|a| a.load(Ordering::Relaxed));
    assert_eq!(gauges, [1, 2, 2, 2, 1, 1]);
    r.h.w.handle_session_closed(r.h.now, r.bob);
    assert_eq!(g.peers.load(Ordering::Relaxed), 1);
    assert_eq!(g.consumers.load(Ordering::Relaxed), 0);
}

/// NACKs the worker sends Alice while time advances by `span` in 5 ms steps.
fn nacks_to_alice(r: &mut VideoRoom, span: Duration) -> Vec<u16> {
    let (to_alice, _) = r.run_for(span);
    let mut seqs = Vec::new();
    for p in &to_alice {
        for item in parse_compound(p).expect("valid RTCP") {
            if let RtcpItem::Nack { items, .. } = item {
                seqs.extend(items.pairs().flat_map(|(pid, blp)| {
                    (0..17u16)
                        .filter(move |&i| i == 0 || blp & (1 << (i - 1)) != 0)
                        .map(move |i| pid.wrapping_add(i))
                }));
            }
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    seqs
}

#[test]
fn a_gap_is_nacked_but_not_after_a_long_outage() {
    let mut r = VideoRoom::new();
    for seq in 100..103u16 {
        r.alice_sends(seq, b"x");
    }
    // 103 and 104 lost in a short gap: NACKed.
    r.h.advance_to(r.h.now + Duration::from_millis(40));
    r.alice_sends(105, b"x");
    assert_eq!(
        nacks_to_alice(&mut r, Duration::from_millis(150)),
        [103, 104]
    );
    r.alice_sends(103, b"x");
    r.alice_sends(104, b"x");
    // Silence beyond NACK_MAX_OUTAGE: the packets of the outage are not asked for again...
    r.h.advance_to(r.h.now + crate::timing::NACK_MAX_OUTAGE + Duration::from_millis(200));
    r.h.drain();
    r.alice_sends(300, b"x");
    assert_eq!(
        nacks_to_alice(&mut r, Duration::from_millis(300)),
        [] as [u16; 0]
    );
    // ...and the next short gap is NACKed as before.
    r.alice_sends(303, b"x");
    assert_eq!(
        nacks_to_alice(&mut r, Duration::from_millis(150)),
        [301, 302]
    );
}
